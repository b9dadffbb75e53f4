"""Evaluate the toy teacher and trained one-step generators on held-out-combination prompts of the
toy world (the evaluator network is the toy world's: apt/toy/evaluation.py).

    apt-evaluate --run CD=outputs/quickstart/cd --run APT=outputs/quickstart/apt --two-step APT --n 96 --out outputs/eval

Prints a Markdown table (attribute accuracy read by the shipped evaluator, Frechet distance on its
features against real held-out clips, sharpness and edge sharpness ratios against them, seconds per
clip) and writes table.md, metrics.json and grid.png (a few prompts, one row per model) to --out.
The first rows are references: real held-out clips of the same prompts, and the same clips through
the VAE (the best a latent generator can do). Deterministic for a seed.
"""

from __future__ import annotations

from apt.core.command import console_script, run_command
from apt.core.config import parse_command


def main(argv=None) -> dict:
    from apt.toy.evaluate import EvaluateConfig, evaluate

    return run_command(lambda: evaluate(parse_command(EvaluateConfig, argv, __doc__, prog="apt-evaluate")))


cli = console_script(main)
