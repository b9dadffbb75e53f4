"""Train the toy clip evaluator used by apt/core/video_metrics.py and write it with its held-out report.

    python scripts/build_evaluator.py [--out apt/assets/evaluator] [--steps 600] [--threads 1]

Writes model.safetensors, config.json and report.json (training time, accuracy on real held-out
clips, beside the hand-made reader of apt/toy/attributes.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# the shipped evaluator's folder, without importing torch before the arguments are parsed
EVALUATOR_DIR = Path(__file__).resolve().parents[1] / "apt" / "assets" / "evaluator"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=EVALUATOR_DIR, help="folder to write (default: the shipped one)")
    p.add_argument("--steps", type=int, default=600, help="training steps (default: 600)")
    p.add_argument("--seed", type=int, default=0, help="seed of its training clips and initialisation (default: 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    import torch

    from apt.toy.train_evaluator import train_evaluator

    if args.threads:
        torch.set_num_threads(args.threads)

    report = train_evaluator(args.out, steps=args.steps, seed=args.seed)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
