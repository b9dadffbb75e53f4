"""Training checkpoint (DCP) -> diffusers-format folder that WanPipeline serves in one step.

    <out>/transformer/     config.json + diffusion_pytorch_model*.safetensors (EMA by default, bf16 or fp32)
         vae/ text_encoder/ tokenizer/    copied from the teacher folder the run started from
         fast_decoder/     copied too where the teacher folder has one (apt-generate --decoder fast)
         serving/          with --serving-bundle: the one-step path traced (apt/inference/serving_bundle.py)
         scheduler/        FlowMatchEulerDiscreteScheduler, shift 1: with num_inference_steps=1 WanPipeline
                           calls the transformer at timestep 1000 and steps sigma 1 -> 0, i.e. x0 = z - v(z, 1)
         model_index.json  WanPipeline
         seaweed_apt.json  kind "one-step", native sample size, where it came from and how to call it
The folder is written under a temporary name and renamed, so a crash never leaves half an export.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

# Heavy imports (torch, diffusers) stay inside the functions: the export command parses its
# arguments, and rejects bad ones, before loading them.
from apt.core.files import hash_files, make_readable
from apt.models.model_folder import MANIFEST, native_sample, read_manifest, verify_files  # light: no torch

COPIED_PARTS = ("vae", "text_encoder", "tokenizer")
OPTIONAL_PARTS = ("fast_decoder",)  # copied when the teacher folder has it
# Everything an export writes at its top level: what --overwrite may delete.
EXPORT_ENTRIES = {"transformer", "scheduler", "model_index.json", MANIFEST, *COPIED_PARTS, *OPTIONAL_PARTS,
                  "serving"}
LORA_EXPORT_ENTRIES = {"pytorch_lora_weights.safetensors", "scheduler", MANIFEST}  # apt/inference/lora_export.py
# Largest |latent| difference the bf16 export may show against the float32 checkpoint on the verify
# probe (normalised latents, |x| ~ 1-4); bf16 keeps 8 bits of mantissa, so ~1e-2 relative per layer.
BF16_TOLERANCE = 0.25


def one_step_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # shift 1 and no dynamic shifting: set_timesteps(1) gives timesteps [1000], sigmas [1, 0]
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)


def _model_index(teacher_dir: Path) -> dict:
    """The teacher's model_index.json (keeps e.g. its tokenizer class) with our scheduler; one transformer."""
    import diffusers

    src = teacher_dir / "model_index.json"
    index = json.loads(src.read_text()) if src.is_file() else {
        "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "AutoTokenizer"],
        "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}
    index.update({"_class_name": "WanPipeline", "_diffusers_version": diffusers.__version__,
                  "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                  # one generator serves every timestep, conditioned with one timestep per sample
                  "transformer_2": [None, None], "boundary_ratio": None, "expand_timesteps": False})
    return index


def export_checkpoint(checkpoint: str | Path, out: str | Path, model_dir: str | Path | None = None,
                      weights: str = "ema", dtype: str = "bf16", overwrite: bool = False,
                      serving_bundle: bool = False) -> Path:
    """Write the export folder `out`; returns it. `model_dir` defaults to the run's teacher folder.
    serving_bundle: also trace the one-step path into <out>/serving/ (apt/inference/serving_bundle.py; needs the
    teacher folder's fast decoder)."""
    from apt.models.model_folder import check_layout, resolve_model_dir
    from apt.training.run_folder import load_generator, model_dir_of, resolve_checkpoint, run_of

    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    step_dir = resolve_checkpoint(checkpoint, verify=True)
    teacher = resolve_model_dir(model_dir) if model_dir is not None else model_dir_of(step_dir)
    if teacher is None:
        raise ValueError(f"no teacher folder recorded for {step_dir} (no run config.yaml): give --model")
    teacher = check_layout(teacher)
    check_export_target(out, protected={"the checkpoint's run": run_of(step_dir), "the model folder": teacher})
    if serving_bundle and not (teacher / "fast_decoder").is_dir():
        raise FileNotFoundError(f"the serving bundle serves with the fast decoder, and {teacher} has no "
                                "fast_decoder/: train one with apt-train-decoder (--out <teacher>/fast_decoder)")
    from apt.models.loading import parse_dtype  # torch and diffusers: only once the paths are known to be right

    torch_dtype = parse_dtype(dtype)
    generator = load_generator(step_dir, teacher, weights)
    text_tokens = _text_tokens(teacher)
    meta = json.loads((step_dir / "meta.json").read_text())

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        generator.backbone.save_pretrained(tmp / "transformer", dtype=torch_dtype)
        for part in COPIED_PARTS + tuple(p for p in OPTIONAL_PARTS if (teacher / p).is_dir()):
            shutil.copytree(teacher / part, tmp / part)
        one_step_scheduler().save_pretrained(tmp / "scheduler")
        (tmp / "model_index.json").write_text(json.dumps(_model_index(teacher), indent=2))
        size = native_sample(teacher)
        manifest = {
            "kind": "one-step",
            "format": "seaweed-apt one-step generator (diffusers WanPipeline layout)",
            "source_checkpoint": str(step_dir.resolve()), "step": meta.get("step"), "weights": weights,
            "dtype": dtype, "teacher": str(teacher.resolve()),
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sample": size,
            "recommended_call": {"num_inference_steps": 1, "guidance_scale": 1.0,
                                 "max_sequence_length": text_tokens, "height": size["height"],
                                 "width": size["width"], "num_frames": size["frames"]},
            "notes": "CFG is distilled in: guidance_scale 1.0 (no negative prompt). Sample i of "
                     "scripts/generate.py --seed s equals WanPipeline with generator="
                     "torch.Generator().manual_seed(s + i).",
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if serving_bundle:
            from apt.inference.serving_bundle import write_bundle

            write_bundle(tmp)
        publish(tmp, out, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def publish(tmp: Path, out: Path, manifest: dict) -> None:
    """Record every file's SHA-256 in the manifest (checked whenever the export is loaded:
    apt.models.model_folder.verify_files), make the folder readable and rename it into place."""
    files = [str(f.relative_to(tmp)) for f in sorted(tmp.rglob("*")) if f.is_file() and f.name != MANIFEST]
    manifest["sha256"] = hash_files(tmp, files)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    make_readable(tmp)  # safetensors writes owner-only files
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def _overlaps(a: Path, b: Path) -> bool:
    """a is b, or one lies inside the other."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def check_export_target(out: Path, protected: dict[str, Path], kind: str = "one-step") -> None:
    """Refuse an --out that would destroy what the export reads or anything that is not an earlier
    export of this kind ("one-step" or "lora"): the replaced folder is deleted whole."""
    for what, folder in protected.items():
        if _overlaps(out, folder):
            raise FileExistsError(f"--out {out} is, contains or lies inside {what} ({folder}); "
                             f"choose a folder of its own")
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not an earlier export; --overwrite replaces only exports")
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return  # an empty folder holds nothing to lose
    if (read_manifest(out) or {}).get("kind") != kind:
        raise FileExistsError(f"--out {out} is not an earlier export (no {MANIFEST} of kind {kind}); "
                              f"--overwrite replaces only exports: choose another folder")
    foreign = sorted(entries - (EXPORT_ENTRIES if kind == "one-step" else LORA_EXPORT_ENTRIES))
    if foreign:
        raise FileExistsError(f"--out {out} holds files an export does not write ({', '.join(foreign[:5])}); "
                              f"move them or choose another folder")


def _text_tokens(teacher: Path) -> int:
    """The text context our TextEncoder pads to; WanPipeline must be called with the same
    max_sequence_length, since Wan cross-attends to the zero padding too."""
    from transformers import AutoTokenizer

    from apt.models.loading import text_context_length

    return text_context_length(AutoTokenizer.from_pretrained(teacher / "tokenizer"))


def verify_export(folder: str | Path, checkpoint: str | Path | None = None, model_dir: str | Path | None = None,
                  seed: int = 0, device: str = "cpu", bf16_tolerance: float = BF16_TOLERANCE) -> dict:
    """Check every file against the SHA-256 the export recorded, reload it with apt.models.loading and compare
    its one-step latents with the checkpoint's generator for fixed seeds. Returns the differences and `ok`.

    same_dtype: export vs the checkpoint's weights cast to the export dtype; must be 0 (bit-identical
    weights, same computation). vs_fp32 (bf16 exports only): export vs the float32 checkpoint; must be
    at most bf16_tolerance. Runs on a small latent probe (2 latent frames, 4x4 tokens) so that it is
    cheap for a 14B model too.
    """
    import torch

    from apt.core.sampling import initial_noise
    from apt.models.generator import OneStepGenerator
    from apt.models.loading import load_components, parse_dtype
    from apt.training.run_folder import load_generator

    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"{folder} has no {MANIFEST}: not a seaweed-apt export")
    verify_files(folder)
    dtype = parse_dtype(manifest["dtype"])
    exported = load_components(folder, parts=("transformer",), dtype=dtype, verified=True).transformer
    text = load_components(folder, parts=("text_encoder", "tokenizer"), verified=True).text.encode(
        ["a red seven moving up and to the left", "a blue two moving right"])
    reference = load_generator(checkpoint or manifest["source_checkpoint"],
                               model_dir or manifest["teacher"], manifest["weights"])
    p_t, p_h, p_w = exported.patch_size
    shape = (exported.config.in_channels, 2 * p_t, 4 * p_h, 4 * p_w)
    z = initial_noise(shape, [seed, seed + 1], device)
    text = text.to(device)

    def one_step(backbone) -> torch.Tensor:
        return OneStepGenerator(backbone.to(device)).sample(z, text).float().cpu()

    ours = one_step(exported)
    full = one_step(reference.backbone)
    same = full if dtype == torch.float32 else one_step(reference.backbone.cast(dtype))
    result = {"dtype": manifest["dtype"], "probe_latent_shape": list(shape),
              "max_abs_diff_same_dtype": (ours - same).abs().max().item()}
    result["ok"] = result["max_abs_diff_same_dtype"] == 0.0
    if dtype != torch.float32:
        result["max_abs_diff_vs_fp32"] = (ours - full).abs().max().item()
        result["bf16_tolerance"] = bf16_tolerance
        result["ok"] = result["ok"] and result["max_abs_diff_vs_fp32"] <= bf16_tolerance
    return result
