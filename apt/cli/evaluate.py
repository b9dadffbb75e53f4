"""Evaluate the toy teacher and trained one-step generators on held-out-combination prompts.

    python scripts/evaluate.py --model toy --teacher-steps 25 --run cd=runs/toy-distill --run apt=runs/toy-apt \
        --two-step apt --n 96 --out outputs/eval

Prints a Markdown table (attribute accuracy read by the shipped evaluator, Frechet distance on its
features against real held-out clips, sharpness and edge sharpness ratios against them, seconds per
clip) and writes table.md, metrics.json and grid.png (a few prompts, one row per model) to --out.
The first rows are references: real held-out clips of the same prompts, and the same clips through
the VAE (the best a latent generator can do). Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from apt.evaluation import comparison_grid, evaluate_models, markdown_table, model_specs, settings
from apt.loading import resolve_model_dir


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy", help="teacher folder ('toy' = the shipped toy teacher)")
    p.add_argument("--teacher-steps", type=int, default=25, help="0 leaves the teacher out")
    p.add_argument("--cfg", type=float, default=5.0, help="teacher classifier-free guidance scale")
    p.add_argument("--run", action="append", default=[], help="name=run_dir: its latest checkpoint's EMA, 1 step")
    p.add_argument("--two-step", action="append", default=[], help="a --run name to evaluate in 2 steps as well")
    p.add_argument("--no-real", action="store_true", help="leave out the real-data reference rows")
    p.add_argument("--n", type=int, default=96, help="prompts (held-out combinations)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--grid-rows", type=int, default=4, help="prompts shown in grid.png")
    p.add_argument("--out", type=Path, default=Path("outputs/eval"))
    args = p.parse_args(argv)

    model_dir = resolve_model_dir(args.model)
    specs = model_specs(args.teacher_steps, args.run, args.two_step, real=not args.no_real, guidance_scale=args.cfg)
    results, videos, requests = evaluate_models(specs, model_dir, args.n, args.seed, args.batch_size)
    table = markdown_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table)
    report = {"settings": settings(args.n, args.seed, args.batch_size, model_dir), "models": results}
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    comparison_grid(videos, requests, args.grid_rows).save(args.out / "grid.png")
    print(table)
    return report


if __name__ == "__main__":
    main()
