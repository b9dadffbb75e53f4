"""Generate videos from prompts: a teacher folder (multi-step, CFG), a training checkpoint or an export
(one step, or `--steps 2`). Writes one H.264 mp4 per prompt and reports seconds per phase.

    python scripts/generate.py --prompt "a red seven moving up and to the left" --out out/red7.mp4
    python scripts/generate.py --checkpoint runs/toy-apt --prompts-file prompts.txt --out out/ --grid out/grid.png
    python scripts/generate.py --config configs/wan2.1-14b/generate.yaml --checkpoint runs/wan14b-apt --prompt "..."
    python scripts/generate.py --model exports/wan14b-apt --prompt "..."        # an exported folder: one step

Defaults follow the model: the toy teacher (and its runs) samples its native 32x32x9 at 8 fps, any
other model 1280x720x49 at 24 fps (2 s). One-step models use no CFG: it was distilled into them.
--config YAML takes the long option names as keys; flags on the command line override it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from apt.export import read_manifest
from apt.generator import load_generator_from_checkpoint, resolve_checkpoint, run_model_dir
from apt.loading import DTYPES, check_layout, load_components, parse_dtype, resolve_model_dir
from apt.pipeline import REAL_SIZE, PhaseTimer, SampleConfig, Sampler, default_size
from apt.toy.components import TOY_MODEL_DIR
from apt.video import frame_grid, write_mp4

TEACHER_SAMPLING = dict(steps=25, guidance_scale=5.0)
ONE_STEP_SAMPLING = dict(steps=1, guidance_scale=1.0)
GENERATION_PHASES = ("text_encoder", "dit", "vae_decode")
WEIGHTS = ("ema", "generator", "student")


@dataclass
class Result:
    report: dict
    videos: torch.Tensor  # (B, 3, F, H, W) in [-1, 1], on CPU
    latents: torch.Tensor  # (B, C, T, h, w) normalised, on CPU


def build_parser() -> argparse.ArgumentParser:
    d = SampleConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="YAML of option values (keys: the long option names)")
    p.add_argument("--model", help="diffusers-layout folder or 'toy' (default: the checkpoint's teacher, else toy)")
    p.add_argument("--checkpoint", type=Path, help="training run or step directory: sample its one-step generator")
    p.add_argument("--weights", choices=WEIGHTS, default="ema", help="which model of the checkpoint (default: ema)")
    p.add_argument("--prompt", action="append", help="a prompt; repeat for several")
    p.add_argument("--prompts-file", type=Path, help="text file, one prompt per line (# comments)")
    p.add_argument("--negative-prompt", default=d.negative_prompt)
    p.add_argument("--steps", type=int, help="sampling steps (teacher: 25; one-step models: 1, or 2)")
    p.add_argument("--guidance-scale", "--cfg", type=float, dest="guidance_scale",
                   help="teacher CFG scale (default 5); one-step models take only 1")
    p.add_argument("--shift", type=float, default=d.shift, help="timestep shift of the teacher's schedule")
    p.add_argument("--renoise-t", type=float, default=d.renoise_t, help="--steps 2: time the first output is re-noised to")
    p.add_argument("--seed", type=int, default=d.seed, help="sample i uses seed + i, whatever the batching")
    p.add_argument("--height", type=int, help="default: the model's native size (toy 32, else 720)")
    p.add_argument("--width", type=int, help="default: toy 32, else 1280")
    p.add_argument("--frames", type=int, help="default: toy 9, else 49")
    p.add_argument("--fps", type=int, help="default: toy 8, else 24")
    p.add_argument("--upscale", type=int, help="nearest-neighbour upscale of written videos/grids (toy 4, else 1)")
    p.add_argument("--out", type=Path, default=Path("outputs/generate"),
                   help="an .mp4 path (one prompt) or a folder (one mp4 per prompt)")
    p.add_argument("--grid", type=Path, help="also write a frame-grid PNG of all clips here")
    p.add_argument("--report", type=Path, help="also write the JSON report here")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="DiT and text encoder (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--vae-dtype", choices=tuple(DTYPES), default="fp32")
    p.add_argument("--attention-backend", default="native",
                   help="diffusers attention backend: native (torch SDPA), flash, xformers, sage, ...")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    config_path = pre.parse_known_args(argv)[0].config
    parser = build_parser()
    config_prompts = {}
    if config_path is not None:
        config_prompts = apply_config(parser, config_path)
    args = parser.parse_args(argv)
    if not args.prompt and not args.prompts_file:  # prompts on the command line replace the config's
        args.prompt, args.prompts_file = config_prompts.get("prompt"), config_prompts.get("prompts_file")
    return args


def apply_config(parser: argparse.ArgumentParser, path: Path) -> dict:
    """Make the YAML's values the parser's defaults (so flags override them); returns its prompts."""
    from omegaconf import OmegaConf

    if not path.is_file():
        parser.error(f"--config {path} does not exist")
    values = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(values, dict):
        parser.error(f"--config {path} must be a mapping of option names to values")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    defaults, prompts = {}, {}
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            parser.error(f"--config {path}: unknown key {key!r}; keys are the long option names: "
                         f"{', '.join(sorted(a.replace('_', '-') for a in actions))}")
        action = actions[dest]
        if dest == "prompt":
            value = [value] if isinstance(value, str) else list(value or [])
        elif action.choices is not None and value not in action.choices:
            parser.error(f"--config {path}: {key}: {value!r} is not one of {', '.join(map(str, action.choices))}")
        elif action.type is not None and value is not None:
            value = action.type(value) if not isinstance(value, str) else value  # strings: argparse converts
        (prompts if dest in ("prompt", "prompts_file") else defaults)[dest] = value
    parser.set_defaults(**defaults)
    if "prompts_file" in prompts and isinstance(prompts["prompts_file"], str):
        prompts["prompts_file"] = Path(prompts["prompts_file"])
    return prompts


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        if not Path(args.prompts_file).is_file():
            raise SystemExit(f"error: --prompts-file {args.prompts_file} does not exist")
        lines = Path(args.prompts_file).read_text().splitlines()
        prompts += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise SystemExit("error: give at least one --prompt or a --prompts-file with one prompt per line")
    return prompts


def native_size(model_dir: Path) -> dict:
    """An export records its teacher's size; otherwise the toy teacher's or a real model's (explicit flags win)."""
    manifest = read_manifest(model_dir)
    if manifest is not None:
        return {**REAL_SIZE, **manifest.get("sample", {})}
    return default_size(model_dir)


def load_sampler(args, device: torch.device, dtype: torch.dtype) -> tuple[Sampler, Path, str]:
    """(sampler, the folder its VAE/text encoder come from, mode) for a teacher, a checkpoint or an export."""
    step_dir = resolve_checkpoint(args.checkpoint) if args.checkpoint else None
    if args.model is not None:
        model_dir = resolve_model_dir(args.model)
    elif step_dir is not None:
        model_dir = run_model_dir(step_dir)
        if model_dir is None:
            raise SystemExit(f"error: {step_dir} records no teacher folder (no run config.yaml): give --model")
    else:
        model_dir = TOY_MODEL_DIR
    try:
        check_layout(model_dir)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err} (set --model, or `model:` in the --config YAML)") from err
    vae_dtype = parse_dtype(args.vae_dtype)
    if step_dir is not None:
        comps = load_components(model_dir, parts=("vae", "text_encoder", "tokenizer"), dtype=dtype,
                                vae_dtype=vae_dtype)
        # float32 first (DCP loads into tensors of the shards' dtype), then cast as an export reload is
        comps.transformer = load_generator_from_checkpoint(step_dir, model_dir, args.weights).backbone.cast(dtype)
        mode = f"one-step ({args.weights} of {step_dir})"
    else:
        comps = load_components(model_dir, dtype=dtype, vae_dtype=vae_dtype)
        mode = "one-step (export)" if read_manifest(model_dir) is not None else "teacher"
    if args.attention_backend != "native":  # native SDPA is diffusers' default already
        comps.transformer.set_attention_backend(args.attention_backend)
    comps.to(device)
    return Sampler(comps, device, dtype, one_step=mode != "teacher"), model_dir, mode


def sample_config(args, model_dir: Path, one_step: bool) -> tuple[SampleConfig, dict]:
    size = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in native_size(model_dir).items()}
    sampling = {k: v if getattr(args, k) is None else getattr(args, k)
                for k, v in (ONE_STEP_SAMPLING if one_step else TEACHER_SAMPLING).items()}
    if one_step and sampling["steps"] not in (1, 2):
        raise SystemExit(f"error: a one-step generator samples in 1 or 2 steps, got --steps {sampling['steps']}")
    if one_step and sampling["guidance_scale"] != 1.0:
        raise SystemExit("error: classifier-free guidance is distilled into a one-step generator: "
                         "leave --guidance-scale at 1")
    cfg = SampleConfig(height=size["height"], width=size["width"], frames=size["frames"], steps=sampling["steps"],
                       guidance_scale=sampling["guidance_scale"], negative_prompt=args.negative_prompt,
                       shift=args.shift, seed=args.seed, renoise_t=args.renoise_t)
    return cfg, size


def timing_table(seconds: dict[str, float], clips: int) -> str:
    rows = [(k, seconds.get(k, 0.0)) for k in GENERATION_PHASES]
    rows.append(("total", sum(s for _, s in rows)))
    rows += [(k, seconds[k]) for k in ("load", "write") if k in seconds]
    lines = [f"{'phase':<14}{'seconds':>10}{'per clip':>10}"]
    lines += [f"{name:<14}{s:>10.3f}{s / clips:>10.3f}" for name, s in rows]
    return "\n".join(lines)


def peak_memory(device: torch.device) -> dict:
    out = {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}  # KiB on Linux
    if device.type == "cuda":
        out["peak_cuda_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


def generate(argv=None) -> Result:
    """The whole command, returning the videos too (for tests and callers that keep tensors)."""
    args = parse_args(argv)
    prompts = read_prompts(args)
    if args.out.suffix == ".mp4" and len(prompts) > 1:
        raise SystemExit(f"error: --out {args.out} is one file but there are {len(prompts)} prompts; give a folder")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = parse_dtype(args.dtype or ("bf16" if device.type == "cuda" else "fp32"))
    timer = PhaseTimer(synchronize=device.type == "cuda")
    with timer.phase("load"):
        sampler, model_dir, mode = load_sampler(args, device, dtype)
    cfg, size = sample_config(args, model_dir, one_step=mode != "teacher")
    latents = sampler.generate(prompts, cfg, timer, decode=False, batch_size=args.batch_size)
    videos = []
    for i in range(0, len(prompts), args.batch_size):  # decode in the same batches: bounded memory
        with timer.phase("vae_decode"):
            videos.append(sampler.c.vae.decode(latents[i : i + args.batch_size]).cpu())
    videos = torch.cat(videos)
    paths = []
    with timer.phase("write"):
        for i, (prompt, video) in enumerate(zip(prompts, videos)):
            if args.out.suffix == ".mp4":
                path = args.out
            else:
                slug = "".join(ch if ch.isalnum() else "_" for ch in prompt)[:60].strip("_")
                path = args.out / f"{i:03d}_{slug}.mp4"
            paths.append(str(write_mp4(video, path, fps=size["fps"], upscale=size["upscale"])))
        if args.grid:
            args.grid.parent.mkdir(parents=True, exist_ok=True)
            frame_grid(list(videos), prompts, upscale=size["upscale"]).save(args.grid)
    seconds = {k: round(v, 3) for k, v in timer.seconds.items()}
    report = {
        "mode": mode, "model": str(model_dir), "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "attention_backend": args.attention_backend, "steps": cfg.steps, "guidance_scale": cfg.guidance_scale,
        "height": cfg.height, "width": cfg.width, "frames": cfg.frames, "fps": size["fps"], "seed": cfg.seed,
        "latent_shape": list(latents.shape[1:]), "video_shape": list(videos.shape[1:]), "videos": paths,
        "seconds": seconds,
        "seconds_per_clip_generation": round(sum(timer.seconds.get(k, 0.0) for k in GENERATION_PHASES)
                                             / len(prompts), 3),
        **peak_memory(device),
    }
    print(timing_table(timer.seconds, len(prompts)), file=sys.stderr)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2))
    return Result(report, videos, latents.cpu())


def main(argv=None) -> dict:
    result = generate(argv)
    print(json.dumps(result.report, indent=2))
    return result.report


if __name__ == "__main__":
    main()
