"""Teacher (25 steps, CFG) vs one-step generators from training runs on the same prompts and seeds.

    python scripts/toy_compare.py --run cd=runs/toy-distill --n 48 --grid docs/toy-cd-vs-teacher.png

Prints attribute accuracy (read back by apt/toy/attributes.py) and seconds per clip for each
model; the grid shows, per prompt, one row per model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from apt.generator import load_generator_from_checkpoint
from apt.loading import load_components, resolve_model_dir
from apt.pipeline import SampleConfig, Sampler, initial_noise
from apt.toy.attributes import attribute_accuracy
from apt.toy.teacher_check import check_prompts
from apt.video import frame_grid


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy", help="the teacher folder the runs started from")
    p.add_argument("--run", action="append", default=[], help="name=run_dir (its latest checkpoint's EMA)")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out", action="store_true", help="use held-out (digit, colour, direction) prompts")
    p.add_argument("--grid", type=Path)
    p.add_argument("--grid-rows", type=int, default=6, help="prompts shown in the grid")
    args = p.parse_args(argv)
    model_dir = resolve_model_dir(args.model)
    comps = load_components(model_dir)
    requests = check_prompts(args.n, args.seed, args.held_out)
    prompts = [r["caption"] for r in requests]
    cfg = SampleConfig(seed=args.seed)
    videos, report = {}, {}

    start = time.perf_counter()
    videos["teacher 25-step"] = Sampler(comps).generate(prompts, cfg, batch_size=16)
    report["teacher 25-step"] = {"seconds_per_clip": (time.perf_counter() - start) / len(prompts)}

    text = comps.text.encode(prompts)
    noise = initial_noise(Sampler(comps).latent_shape(cfg), [cfg.seed + i for i in range(len(prompts))])
    for spec in args.run:
        name, _, run_dir = spec.partition("=")
        gen = load_generator_from_checkpoint(run_dir, model_dir)
        start = time.perf_counter()
        with torch.no_grad():
            videos[f"{name} 1-step"] = comps.vae.decode(torch.cat([gen(noise[i : i + 16], text[i : i + 16])
                                                                   for i in range(0, len(prompts), 16)]))
        report[f"{name} 1-step"] = {"seconds_per_clip": (time.perf_counter() - start) / len(prompts)}
    for name, vids in videos.items():
        report[name].update({k: round(v, 3) for k, v in attribute_accuracy(vids, requests).items()})
        report[name]["seconds_per_clip"] = round(report[name]["seconds_per_clip"], 4)
    if args.grid:
        rows, labels = [], []
        for i in range(min(args.grid_rows, len(prompts))):
            for name, vids in videos.items():
                rows.append(vids[i])
                labels.append(f"{name}: {prompts[i]}")
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        frame_grid(rows, labels, upscale=3).save(args.grid)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
