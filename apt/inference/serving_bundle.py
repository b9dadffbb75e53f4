"""An export's serving bundle: the one-step path as TorchScript programs, so that serving a clip needs
torch and the `tokenizers` library only (no diffusers, no transformers: their imports cost several
seconds of CPU per process, more than the toy's whole one-step generation).

    <export>/serving/bundle.json         what was traced: size, text length, dtype, device
                    text_encoder.pt      (token ids, mask) -> text states with the padding zeroed
                    generator.pt         (noise, text states) -> latent, one step (G(z) = z - v(z, 1))
                    fast_decoder.pt      latent -> video in [-1, 1]
                    tokenizer.json       the model's tokenizer as a `tokenizers` file

`apt-export --serving-bundle` writes it (traced on the CPU in float32 at the model's native size);
`apt-generate --model <export> --decoder fast` uses it when the request is the traced one (one step,
that size, the CPU, one process) and otherwise takes the ordinary path.

Loading TorchScript runs the code it holds, so a bundle is loaded only when it was built on this
machine (its content hash is in this machine's trust list, `$APT_CACHE_DIR/trusted-serving-bundles.json`,
which apt-export adds it to) or when the user vouches for it (`apt-generate --serving-bundle trust`). Both give the same clips
(tests/test_serving.py). TorchScript is in maintenance mode in PyTorch but loads in a fraction of a
second with nothing else imported, which torch.export's loader does not (measured here: 5 s).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from apt.core.files import cache_dir, sha256_file, write_atomically

FOLDER = "serving"
MANIFEST = "bundle.json"
FORMAT = "seaweed-apt-serving-bundle/1"
PROGRAMS = ("text_encoder.pt", "generator.pt", "fast_decoder.pt")
TOKENIZER = "tokenizer.json"
TRUST_LIST = "trusted-serving-bundles.json"


class UntrustedBundle(PermissionError):
    """A serving bundle not built on this machine (nor vouched for): loading it would run its code."""


def bundle_digest(model_dir: str | Path) -> str:
    """One SHA-256 over every file of the bundle (programs, tokenizer, manifest)."""
    folder = Path(model_dir) / FOLDER
    digest = hashlib.sha256()
    for name in (*PROGRAMS, TOKENIZER, MANIFEST):
        digest.update(f"{name}:{sha256_file(folder / name)}\n".encode())
    return digest.hexdigest()


def _trusted() -> set[str]:
    path = cache_dir() / TRUST_LIST
    try:
        return set(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return set()


def trust_bundle(model_dir: str | Path) -> None:
    """Add a bundle this machine built to its trust list."""
    path = cache_dir() / TRUST_LIST
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(sorted(_trusted() | {bundle_digest(model_dir)}), indent=1))


def is_trusted(model_dir: str | Path) -> bool:
    return bundle_digest(model_dir) in _trusted()


# -- the tokenizer ------------------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character map of byte-level BPE (GPT-2's), which `tokenizers`' ByteLevel
    pre-tokenizer applies: each byte becomes one character."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def byt5_as_tokenizers(hf_tokenizer):
    """transformers' ByT5Tokenizer (the toy's; it has no fast version) as a `tokenizers` Tokenizer: each
    UTF-8 byte b is token b + offset, the added tokens keep their ids and strip flags, '</s>' ends the
    sequence. Token for token equal to the original on the prompts tested."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

    offset = hf_tokenizer.offset if hasattr(hf_tokenizer, "offset") else 3
    b2u = _bytes_to_unicode()
    added = sorted(hf_tokenizer.added_tokens_decoder.items())
    vocab = {b2u[b]: b + offset for b in range(256)}
    vocab.update({tok.content: i for i, tok in added})
    fast = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=hf_tokenizer.unk_token))
    fast.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    eos = hf_tokenizer.eos_token
    fast.post_processor = processors.TemplateProcessing(single=f"$A {eos}",
                                                        special_tokens=[(eos, hf_tokenizer.eos_token_id)])
    fast.add_special_tokens([AddedToken(t.content, single_word=t.single_word, lstrip=t.lstrip, rstrip=t.rstrip,
                                        normalized=t.normalized, special=True) for _, t in added])
    return fast


def fast_tokenizer(hf_tokenizer, max_tokens: int):
    """The model's tokenizer as a `tokenizers` Tokenizer padding and truncating to max_tokens, as
    apt.models.text.TextEncoder.tokenize calls it. A fast (Rust-backed) tokenizer, like Wan's umT5, is used
    as it is; ByT5 is rebuilt; anything else cannot be bundled."""
    if getattr(hf_tokenizer, "backend_tokenizer", None) is not None:
        fast = hf_tokenizer.backend_tokenizer.__class__.from_str(hf_tokenizer.backend_tokenizer.to_str())
    elif type(hf_tokenizer).__name__ == "ByT5Tokenizer":
        fast = byt5_as_tokenizers(hf_tokenizer)
    else:
        raise ValueError(f"{type(hf_tokenizer).__name__} has no tokenizers equivalent: the serving bundle "
                         "needs a fast tokenizer (tokenizer.json) or ByT5")
    fast.enable_truncation(max_tokens)
    fast.enable_padding(length=max_tokens, pad_id=hf_tokenizer.pad_token_id, pad_token=hf_tokenizer.pad_token)
    return fast


# -- writing ------------------------------------------------------------------------------------------
class _TextStates(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.encoder = text_encoder.encoder

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return (states * mask[..., None].to(states.dtype)).float()


class _Decode(torch.nn.Module):
    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent).float().clamp(-1, 1)


@torch.no_grad()
def write_bundle(export_dir: str | Path) -> Path:
    """Trace the export's text encoder, one-step generator and fast decoder on the CPU in float32 at its
    native size (batch 2; the batch size stays free) and write <export>/serving/. Checks the traces
    against the modules at batch 3 before writing."""
    import warnings

    from apt.models.fast_decoder import FastDecoder, find_fast_decoder
    from apt.models.generator import OneStepGenerator
    from apt.models.loading import load_components
    from apt.models.model_folder import native_sample

    export_dir = Path(export_dir)
    comps = load_components(export_dir, parts=("transformer", "text_encoder", "tokenizer"))
    fast_dec = FastDecoder.load(find_fast_decoder(export_dir))
    size = native_sample(export_dir)
    shape = fast_dec.latent_shape(size["frames"], size["height"], size["width"])
    tokenizer = fast_tokenizer(comps.text.tokenizer, comps.text.max_tokens)
    text_module, dec = _TextStates(comps.text).eval(), _Decode(fast_dec)
    gen = OneStepGenerator(comps.transformer).eval()

    def example(batch: int):
        ids, mask = comps.text.tokenize([f"a bundled prompt {i}" for i in range(batch)])
        return ids, mask, torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))

    ids, mask, z = example(2)
    with warnings.catch_warnings():  # tracing warns about every Python-level shape use, by design
        warnings.simplefilter("ignore")
        programs = {"text_encoder.pt": torch.jit.trace(text_module, (ids, mask), check_trace=False),
                    "generator.pt": torch.jit.trace(gen, (z, text_module(ids, mask)), check_trace=False),
                    "fast_decoder.pt": torch.jit.trace(dec, (z,), check_trace=False)}
    ids, mask, z = example(3)
    text = text_module(ids, mask)
    checks = {"text_encoder.pt": (programs["text_encoder.pt"](ids, mask), text),
              "generator.pt": (programs["generator.pt"](z, text), gen(z, text)),
              "fast_decoder.pt": (programs["fast_decoder.pt"](z), dec(z))}
    for name, (traced, eager) in checks.items():
        if not torch.allclose(traced, eager, atol=1e-5, rtol=1e-5):
            raise RuntimeError(f"the traced {name} differs from the module at batch 3 "
                               f"(max {(traced - eager).abs().max().item():.2e}): not bundled")
    ids_check = torch.tensor([e.ids for e in tokenizer.encode_batch(["a bundled prompt 0", "a bundled prompt 1",
                                                                      "a bundled prompt 2"])])
    if not torch.equal(ids_check, ids):
        raise RuntimeError("the bundled tokenizer does not reproduce the model's tokens: not bundled")
    out = export_dir / FOLDER
    tmp = export_dir / f".{FOLDER}.partial"
    tmp.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, program in programs.items():
            program.save(str(tmp / name))
    tokenizer.save(str(tmp / TOKENIZER))
    (tmp / MANIFEST).write_text(json.dumps({
        "format": FORMAT, "sample": size, "latent_shape": list(shape), "max_tokens": comps.text.max_tokens,
        "dtype": "float32", "device": "cpu", "steps": 1, "torch": torch.__version__}, indent=2) + "\n")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.replace(out)
    trust_bundle(export_dir)  # built here: this machine may load it
    return out


# -- serving ------------------------------------------------------------------------------------------
def read_bundle_manifest(model_dir: str | Path) -> dict | None:
    path = Path(model_dir) / FOLDER / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    return manifest if manifest.get("format") == FORMAT else None


def serves(manifest: dict, params, device: torch.device) -> bool:
    """Whether a request is the one a bundle traced (one step, its size, the CPU)."""
    s = manifest["sample"]
    return (device.type == "cpu" and params.steps == 1 and params.guidance_scale == 1.0
            and (params.height, params.width, params.frames) == (s["height"], s["width"], s["frames"]))


class BundleSampler:
    """The Sampler interface apt-generate uses (latent_shape, generate, decode), over the bundle's
    programs: one step, the traced size, float32 on the CPU. trusted=True loads a bundle that is not in
    this machine's trust list (the caller vouches for it); otherwise such a bundle raises UntrustedBundle."""

    def __init__(self, model_dir: str | Path, trusted: bool = False):
        from tokenizers import Tokenizer

        from apt.models.model_folder import verify_files

        folder = Path(model_dir) / FOLDER
        self.manifest = read_bundle_manifest(model_dir)
        if self.manifest is None:
            raise FileNotFoundError(f"{folder} holds no serving bundle (apt-export --serving-bundle writes one)")
        verify_files(model_dir, (FOLDER,))
        if not trusted and not is_trusted(model_dir):
            raise UntrustedBundle(f"{folder} was not built on this machine: not loaded, as loading TorchScript runs "
                                  "the code it holds (--serving-bundle trust loads it if you trust its source)")
        import warnings

        with warnings.catch_warnings():  # "deprecated, switch to torch.export": see the module docstring
            warnings.simplefilter("ignore", DeprecationWarning)
            self.text_encoder, self.generator, self.decoder = (torch.jit.load(str(folder / p), map_location="cpu")
                                                               for p in PROGRAMS)
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))

    def latent_shape(self, params) -> tuple[int, ...]:
        return tuple(self.manifest["latent_shape"])

    @torch.no_grad()
    def generate(self, prompts: list[str], params, timer, decode: bool = False, batch_size: int | None = None):
        from apt.core.sampling import initial_noise
        from apt.models.text import clean_prompt

        latents, batch_size = [], batch_size or len(prompts)
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            with timer.phase("text_encoder"):
                enc = self.tokenizer.encode_batch([clean_prompt(p) for p in chunk])
                ids = torch.tensor([e.ids for e in enc])
                mask = torch.tensor([e.attention_mask for e in enc])
                text = self.text_encoder(ids, mask)
            noise = initial_noise(self.latent_shape(params), [params.seed + start + i for i in range(len(chunk))])
            with timer.phase("dit"):
                latents.append(self.generator(noise, text).float())
        latents = torch.cat(latents)
        return self.decode(latents) if decode else latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)
