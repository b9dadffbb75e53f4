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

        train_teacher(args.out, **steps)


if __name__ == "__main__":
    main()
