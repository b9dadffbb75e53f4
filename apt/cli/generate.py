"""Generate videos from prompts with a diffusers-layout model folder (the toy teacher by default).

    python scripts/generate.py --prompt "a red seven moving up and to the left" --out out/red7.mp4
    python scripts/generate.py --prompts-file prompts.txt --out out/ --grid out/grid.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from apt.loading import load_components
from apt.pipeline import PhaseTimer, SampleConfig, Sampler
from apt.toy.components import TOY_MODEL_DIR
from apt.video import frame_grid, write_mp4


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        lines = Path(args.prompts_file).read_text().splitlines()
        prompts += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise SystemExit("error: give at least one --prompt or a --prompts-file with one prompt per line")
    return prompts


def build_parser() -> argparse.ArgumentParser:
    d = SampleConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=TOY_MODEL_DIR, help="diffusers-layout folder (default: toy teacher)")
    p.add_argument("--prompt", action="append", help="a prompt; repeat for several")
    p.add_argument("--prompts-file", type=Path, help="text file, one prompt per line")
    p.add_argument("--negative-prompt", default=d.negative_prompt)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--guidance-scale", "--cfg", type=float, default=d.guidance_scale, dest="guidance_scale")
    p.add_argument("--shift", type=float, default=d.shift, help="timestep shift of the sampling schedule")
    p.add_argument("--seed", type=int, default=d.seed, help="sample i uses seed + i")
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--frames", type=int, default=d.frames)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--upscale", type=int, default=4, help="nearest-neighbour upscale of written videos/grids")
    p.add_argument("--out", type=Path, default=Path("outputs/generate"),
                   help="an .mp4 path (one prompt) or a folder (one mp4 per prompt)")
    p.add_argument("--grid", type=Path, help="also write a frame-grid PNG of all clips here")
    p.add_argument("--batch-size", type=int, default=8)
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    prompts = read_prompts(args)
    if args.out.suffix == ".mp4" and len(prompts) > 1:
        raise SystemExit(f"error: --out {args.out} is one file but there are {len(prompts)} prompts; give a folder")
    cfg = SampleConfig(height=args.height, width=args.width, frames=args.frames, steps=args.steps,
                       guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt, shift=args.shift,
                       seed=args.seed)
    timer = PhaseTimer()
    with timer.phase("load"):
        sampler = Sampler(load_components(args.model))
    videos = sampler.generate(prompts, cfg, timer, batch_size=args.batch_size)
    paths = []
    with timer.phase("write"):
        for i, (prompt, video) in enumerate(zip(prompts, videos)):
            if args.out.suffix == ".mp4":
                path = args.out
            else:
                slug = "".join(ch if ch.isalnum() else "_" for ch in prompt)[:60].strip("_")
                path = args.out / f"{i:03d}_{slug}.mp4"
            paths.append(str(write_mp4(video, path, fps=args.fps, upscale=args.upscale)))
        if args.grid:
            args.grid.parent.mkdir(parents=True, exist_ok=True)
            frame_grid(list(videos), prompts, upscale=args.upscale).save(args.grid)
    report = {"videos": paths, "seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
              "seconds_per_clip_generation": round((timer.total - timer.seconds["load"] - timer.seconds["write"])
                                                   / len(prompts), 3)}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
