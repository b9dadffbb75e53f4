"""Sample the toy teacher on training and held-out prompts, read the attributes back, write a grid.

    python scripts/check_toy_teacher.py --n 96 --grid docs/toy-teacher-grid.png

Prints the fraction of clips whose digit / colour / direction (and all three) match the prompt.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from apt.loading import resolve_model_dir
from apt.pipeline import SampleConfig
from apt.toy.teacher_check import check_teacher


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy")
    p.add_argument("--n", type=int, default=96, help="clips per prompt set")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=SampleConfig.guidance_scale)
    p.add_argument("--shift", type=float, default=SampleConfig.shift)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", type=Path, help="frame grid PNG of the first 12 training-prompt clips")
    args = p.parse_args(argv)
    cfg = SampleConfig(steps=args.steps, guidance_scale=args.cfg, shift=args.shift, seed=args.seed)
    report = {"steps": args.steps, "cfg": args.cfg, "shift": args.shift, "n": args.n}
    for held_out in (False, True):
        acc, videos, requests = check_teacher(resolve_model_dir(args.model), args.n, args.seed, held_out, cfg)
        report["heldout_prompts" if held_out else "train_prompts"] = {k: round(v, 3) for k, v in acc.items()}
        if args.grid and not held_out:
            from apt.video import frame_grid

            args.grid.parent.mkdir(parents=True, exist_ok=True)
            frame_grid(list(videos[:12]), [r["caption"] for r in requests[:12]], upscale=3).save(args.grid)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
