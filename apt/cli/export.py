"""Export a training checkpoint as a diffusers-format folder that WanPipeline serves in one step.

    python scripts/export.py --checkpoint runs/toy-apt --out exports/toy-apt --verify
    python scripts/export.py --checkpoint runs/wan14b-apt/checkpoints/step_00000300 \\
        --model /data/Wan2.1-T2V-14B-Diffusers --dtype bf16 --out exports/wan14b-apt --verify

--verify reloads the folder and compares its one-step latents with the checkpoint's for fixed seeds
(exactly equal in the export's dtype; bf16 also within a stated tolerance of the float32 checkpoint);
the exit status is 1 if they differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from apt.export import BF16_TOLERANCE, export_checkpoint, verify_export
from apt.loading import DTYPES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="training run or step directory")
    p.add_argument("--out", type=Path, required=True, help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--model", help="teacher folder the run started from (default: the run's config.yaml)")
    p.add_argument("--weights", choices=("ema", "generator", "student"), default="ema")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--verify", action="store_true", help="reload the export and compare with the checkpoint")
    p.add_argument("--verify-device", default="cpu")
    p.add_argument("--bf16-tolerance", type=float, default=BF16_TOLERANCE)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = export_checkpoint(args.checkpoint, args.out, args.model, args.weights, args.dtype, args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = {"export": str(out)}
    if args.verify:
        report["verify"] = verify_export(out, args.checkpoint, args.model, device=args.verify_device,
                                         bf16_tolerance=args.bf16_tolerance)
    print(json.dumps(report, indent=2))
    if args.verify and not report["verify"]["ok"]:
        print("error: the export's output differs from the checkpoint's", file=sys.stderr)
        return 1
    return 0
