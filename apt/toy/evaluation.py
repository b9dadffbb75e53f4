"""Evaluate models on the toy world: generate clips for held-out-combination prompts with each model
(teacher at N steps with CFG, a training run's generator in 1 or 2 steps, or real clips as the
reference line), time the generation, and score the clips: attributes and features read by the
shipped evaluator (apt/toy/evaluator.py), sharpness and Frechet distance (apt/core/video_metrics.py) against
real held-out clips.

Every model sees the same prompts and the same initial noise (sample i: seed + i), so rows differ
only by the model.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from apt.core.config import ConfigError
from apt.core.sampling import SamplingParams
from apt.core.video_metrics import (
    check_videos,
    edge_sharpness,
    edge_steepness,
    frechet_distance,
    gaussian_stats,
    sharpness,
)
from apt.inference.decoders import make_decoder
from apt.inference.sampler import Sampler
from apt.models.loading import Components
from apt.toy.attributes import digit_by_frame, frame_digits, paired_same_digit_difference, same_digit_rate
from apt.toy.evaluator import EVALUATOR_DIR, HEADS, score_clips
from apt.toy.world import (
    COLOUR_NAMES,
    DIRECTION_NAMES,
    MovingDigits,
    ToyWorldConfig,
    caption,
    combo_id,
    glyph_indices,
    held_out_combos,
    render,
    spec_with_random_position,
)

REAL_SEED_OFFSET = 7  # real clips for the reference row: their own rng stream per request
REFERENCE_CLIPS = 1000
REFERENCE_SEED = 0


def check_prompts(n: int, seed: int = 0, held_out: bool = False) -> list[dict]:
    """n (digit, colour, direction) requests: training combos, or only held-out ones."""
    rng, held, out = np.random.default_rng(seed), held_out_combos(), []
    while len(out) < n:
        d, c, m = int(rng.integers(10)), int(rng.integers(len(COLOUR_NAMES))), int(rng.integers(len(DIRECTION_NAMES)))
        if (combo_id(d, c, m) in held) == held_out:
            out.append({"digit": d, "colour": c, "direction": m, "caption": caption(d, c, m)})
    return out


@dataclass(frozen=True)
class Reference:
    """Real clips and what the metrics need from them, computed once."""

    videos: torch.Tensor
    mu: torch.Tensor
    cov: torch.Tensor
    sharpness: float
    edge_sharpness: float
    edge_steepness: float


@functools.lru_cache(maxsize=2)
def real_reference(n: int = REFERENCE_CLIPS, seed: int = REFERENCE_SEED) -> Reference:
    """n real held-out clips (toy 'eval' split: held-out glyphs and combinations) at a fixed seed."""
    data = MovingDigits("eval", length=n, seed=seed)
    videos = torch.stack([data[i]["video"] for i in range(n)])
    mu, cov = gaussian_stats(score_clips(videos)[1])
    return Reference(videos, mu, cov, sharpness(videos), edge_sharpness(videos), edge_steepness(videos))


def evaluate_videos(videos: torch.Tensor, requests: list[dict], reference: Reference | None = None,
                    digits: np.ndarray | None = None) -> dict:
    """Metrics of clips (B, 3, F, H, W) in [-1, 1] generated for requests [{digit, colour, direction}, ...].

    Returns digit/colour/direction/all accuracy (evaluator), frechet_distance (evaluator features,
    against `reference`, by default REFERENCE_CLIPS real held-out clips), sharpness_ratio,
    edge_sharpness_ratio, edge_steepness_ratio (apt/core/video_metrics.py, all against the reference),
    same_digit_all_frames (the fraction of clips whose every frame shows one digit, read frame by
    frame by the hand-made reader of apt/toy/attributes.py), digit_by_frame (per frame index, how
    often that reader sees the asked digit) and n. digits: the clips' frame_digits, if already read.
    """
    check_videos(videos)
    if len(videos) != len(requests):
        raise ValueError(f"{len(videos)} clips but {len(requests)} requests")
    reference = reference or real_reference()
    preds, feats = score_clips(videos)
    hits = {k: preds[k] == torch.tensor([int(r[k]) for r in requests]) for k in HEADS}
    out = {k: h.float().mean().item() for k, h in hits.items()}
    out["all"] = torch.stack(list(hits.values())).all(0).float().mean().item()
    out["frechet_distance"] = frechet_distance(*gaussian_stats(feats), reference.mu, reference.cov)
    out["sharpness_ratio"] = sharpness(videos) / reference.sharpness
    out["edge_sharpness_ratio"] = edge_sharpness(videos) / reference.edge_sharpness
    out["edge_steepness_ratio"] = edge_steepness(videos) / reference.edge_steepness
    digits = frame_digits(videos) if digits is None else digits
    out["same_digit_all_frames"] = same_digit_rate(digits)
    out["digit_by_frame"] = digit_by_frame(digits, [int(r["digit"]) for r in requests])
    out["n"] = len(videos)
    return out




@dataclass(frozen=True)
class ModelSpec:
    """kind: 'teacher' (steps Euler steps, CFG), 'generator' (run_dir's EMA, 1 or 2 steps), 'real' (real
    held-out clips of the same prompts) or 'vae' (those clips encoded and decoded by the model's VAE: the
    reference for any latent generator, e.g. for its sharpness ratio)."""

    name: str
    kind: str
    steps: int = 1
    run_dir: Path | None = None
    guidance_scale: float = 5.0
    weights: str = "ema"  # a generator's: its EMA, or 'raw' (the trained weights behind it)
    refine_steps: int = 0  # 'vae': the clips' latents refined through the decoder (VideoVAE.refine) first

    def __post_init__(self):
        if self.kind not in ("teacher", "generator", "real", "vae"):
            raise ValueError(f"model kind must be teacher, generator, real or vae, got {self.kind!r}")
        if self.kind == "generator" and (self.run_dir is None or self.steps not in (1, 2)):
            raise ValueError(f"{self.name}: a generator needs a run folder and 1 or 2 steps")
        if self.weights not in ("ema", "raw"):
            raise ValueError(f"{self.name}: weights must be ema or raw, got {self.weights!r}")


def model_specs(teacher_steps: int | None, runs: list[str], two_step: list[str] = (), real: bool = True,
                guidance_scale: float = 5.0, raw: list[str] = (), refine_steps: int = 0) -> list[ModelSpec]:
    """Rows in table order from CLI-style arguments: runs are 'name=run_dir', two_step and raw name some
    of them (raw: that run's trained weights without the EMA, in one step); refine_steps > 0 adds a
    reference row after the VAE round trip: the real clips through latents refined in that many steps."""
    specs = [ModelSpec("real data", "real"), ModelSpec("real data, VAE round trip", "vae")] if real else []
    if real and refine_steps:
        specs.append(ModelSpec(f"real data, refined latents ({refine_steps} steps)", "vae",
                               refine_steps=refine_steps))
    if teacher_steps:
        specs.append(ModelSpec(f"teacher {teacher_steps}-step", "teacher", teacher_steps, guidance_scale=guidance_scale))
    named = {}
    for arg in runs:
        name, sep, run_dir = arg.partition("=")
        if not sep or not name or not run_dir:
            raise ConfigError(f"--run takes name=run_dir, got {arg!r}")
        if name in named:
            raise ConfigError(f"--run {name!r} is given twice (each row needs its own name)")
        named[name] = Path(run_dir).expanduser()
        specs.append(ModelSpec(f"{name} 1-step", "generator", 1, named[name]))
    for name in two_step:
        if name not in named:
            raise ConfigError(f"--two-step {name!r} names no --run (have: {', '.join(named) or 'none'})")
        specs.append(ModelSpec(f"{name} 2-step", "generator", 2, named[name]))
    for name in raw:
        if name not in named:
            raise ConfigError(f"--raw {name!r} names no --run (have: {', '.join(named) or 'none'})")
        specs.append(ModelSpec(f"{name} 1-step, no EMA", "generator", 1, named[name], weights="raw"))
    return specs


def real_clips(requests: list[dict], seed: int) -> torch.Tensor:
    """Real clips showing exactly the requested attributes, with held-out glyphs at random positions."""
    world, clips = ToyWorldConfig(), []
    for i, r in enumerate(requests):
        rng = np.random.default_rng([seed, REAL_SEED_OFFSET, i])
        glyphs = glyph_indices("eval", r["digit"])
        glyph = int(glyphs[rng.integers(len(glyphs))])
        clips.append(render(spec_with_random_position(rng, r["digit"], r["colour"], r["direction"], glyph, world), world))
    return torch.stack(clips)


@torch.no_grad()
def generate(spec: ModelSpec, requests: list[dict], components, model_dir: Path, seed: int = 0,
             batch_size: int = 16, progress: bool = True, decoder: str = "vae") -> tuple[torch.Tensor, float | None]:
    """Clips (B, 3, F, H, W) for the requests and measured seconds per clip (text encoding, DiT and
    decode; loading excluded). Sample i uses seed + i for its noise (and its 2-step re-noise), whatever
    the batching. Reference rows (real, vae) are not generated: no time. decoder: 'vae' or 'fast' (the
    components' fast decoder decodes every latent, the round-trip row's too)."""
    if spec.kind == "real":
        return real_clips(requests, seed), None
    decoding = make_decoder(components, decoder)
    if spec.kind == "vae":
        real = real_clips(requests, seed)
        return torch.cat([decoding.decode(components.vae.refine(c, spec.refine_steps))
                          for c in real.split(batch_size)]), None
    cfg = SamplingParams(steps=spec.steps, guidance_scale=spec.guidance_scale, seed=seed)
    if spec.kind == "teacher":
        sampler = Sampler(components, decoder=decoding)
    else:
        from apt.training.run_folder import load_generator

        gen = load_generator(spec.run_dir, model_dir, spec.weights)
        # the serving path: the generator's backbone in place of the teacher, guidance already distilled in
        sampler = Sampler(Components(gen.backbone, components.vae, components.text, components.fast_decoder),
                          one_step=True, decoder=decoding)
        cfg = replace(cfg, guidance_scale=1.0)
    prompts = [r["caption"] for r in requests]
    out, seconds = [], 0.0
    for start in tqdm(range(0, len(prompts), batch_size), desc=spec.name, disable=not progress, dynamic_ncols=True):
        tick = time.perf_counter()
        out.append(sampler.generate(prompts[start : start + batch_size], replace(cfg, seed=seed + start)))
        seconds += time.perf_counter() - tick
    return torch.cat(out), seconds / len(prompts)


def evaluate_models(specs: list[ModelSpec], model_dir: Path, n: int = 96, seed: int = 0, batch_size: int = 16,
                    progress: bool = True, decoder: str = "vae", fast_decoder: str | Path = ""
                    ) -> tuple[dict[str, dict], dict[str, torch.Tensor], list[dict]]:
    """Per model: metrics (evaluate_videos plus seconds_per_clip), its clips, and the requests
    (n held-out-combination prompts drawn with `seed`; real reference: REFERENCE_CLIPS 'eval' clips).
    decoder='fast' decodes with the model folder's fast decoder (or the folder `fast_decoder`)."""
    from apt.models.fast_decoder import FastDecoder, find_fast_decoder
    from apt.models.loading import load_components

    requests = check_prompts(n, seed, held_out=True)
    components = load_components(model_dir) if any(s.kind != "real" for s in specs) else None
    if components is not None and decoder == "fast":
        components.fast_decoder = FastDecoder.load(find_fast_decoder(model_dir, fast_decoder))
    results, videos, digits = {}, {}, {}
    for spec in specs:
        clips, seconds = generate(spec, requests, components, model_dir, seed, batch_size, progress, decoder)
        digits[spec.name] = frame_digits(clips)
        results[spec.name] = dict(evaluate_videos(clips, requests, digits=digits[spec.name]), seconds_per_clip=seconds)
        videos[spec.name] = clips
    add_paired_same_digit(results, digits, next((s.name for s in specs if s.kind == "teacher"), None))
    return results, videos, requests


def add_paired_same_digit(results: dict[str, dict], digits: dict[str, np.ndarray], teacher: str | None) -> None:
    """Every other model's "same digit in all frames" minus the teacher's, paired clip by clip (the same
    prompts and noise), with its standard error: a difference of a few points is only real when it is
    several standard errors (at n = 1536 one standard error is about 0.014)."""
    if teacher is None or len(digits[teacher]) < 2:
        return
    for name, model_digits in digits.items():
        if name != teacher:
            diff, se = paired_same_digit_difference(model_digits, digits[teacher])
            results[name]["same_digit_minus_teacher"] = round(diff, 4)
            results[name]["same_digit_minus_teacher_se"] = round(se, 4)


def _library_versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("diffusers", "transformers")}  # both are dependencies


def settings(n: int, seed: int, batch_size: int, model_dir: Path) -> dict:
    """What the numbers depend on, for metrics.json."""
    import json

    report = EVALUATOR_DIR / "report.json"
    return {
        "prompts": f"{n} held-out (digit, colour, direction) combinations, apt.toy.evaluation.check_prompts(seed={seed})",
        "seed": seed, "batch_size": batch_size, "model_dir": str(model_dir),
        "reference": {"split": "eval (held-out glyphs and combinations)", "clips": REFERENCE_CLIPS, "seed": REFERENCE_SEED},
        "evaluator_heldout_accuracy": json.loads(report.read_text())["heldout"]["accuracy"] if report.exists() else None,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        # what else moves the last digits: the CPU's kernels and the libraries
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), **_library_versions(),
    }


def markdown_table(results: dict[str, dict]) -> str:
    head = ("| model | digit | colour | direction | all three | same digit in all frames | Frechet distance "
            "| sharpness ratio | edge sharpness ratio | edge steepness ratio | seconds / clip |")
    lines = [head, "|" + "---|" * 11]
    for name, m in results.items():
        secs = "-" if m["seconds_per_clip"] is None else f"{m['seconds_per_clip']:.4f}"
        lines.append(f"| {name} | {m['digit']:.3f} | {m['colour']:.3f} | {m['direction']:.3f} | {m['all']:.3f} | "
                     f"{m['same_digit_all_frames']:.3f} | {m['frechet_distance']:.2f} | {m['sharpness_ratio']:.3f} | "
                     f"{m['edge_sharpness_ratio']:.3f} | {m['edge_steepness_ratio']:.3f} | {secs} |")
    return "\n".join(lines) + "\n"


def comparison_grid(videos: dict[str, torch.Tensor], requests: list[dict], rows: int = 4):
    """Side-by-side frames: for each of the first `rows` prompts, one row per model."""
    from apt.core.video import frame_grid

    clips, labels = [], []
    for i in range(min(rows, len(requests))):
        for name, vids in videos.items():
            clips.append(vids[i])
            labels.append(f"{name}: {requests[i]['caption']}")
    return frame_grid(clips, labels, upscale=3)
