"""Rebuild the shipped toy components from scratch: VAE, then text encoder, then teacher.

    python scripts/build_toy.py --component all [--out apt/assets/toy-wan]

Each step records its time and final losses in <out>/build_report.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from apt.toy.components import TOY_MODEL_DIR


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--component", choices=["vae", "text", "teacher", "all"], default="all")
    parser.add_argument("--out", type=Path, default=TOY_MODEL_DIR, help="diffusers-layout folder to write")
    parser.add_argument("--steps", type=int, default=None, help="override the component's training steps")
    parser.add_argument("--continue-teacher", action="store_true",
                        help="train the folder's existing teacher further (on clips of --seed) instead of from scratch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = {} if args.steps is None else {"steps": args.steps}
    if args.component in ("vae", "all"):
        from apt.toy.train_vae import train_vae

        train_vae(args.out, **steps)
    if args.component in ("text", "all"):
        from apt.toy.train_text import train_text_encoder

        train_text_encoder(args.out, **steps)
    if args.component in ("teacher", "all"):
        from apt.toy.train_teacher import train_teacher

        train_teacher(args.out, seed=args.seed, continue_training=args.continue_teacher, **steps)


if __name__ == "__main__":
    main()
