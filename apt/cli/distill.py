"""Stage 1: consistency distillation of a Wan teacher into a one-step generator (distill/).

    apt-distill --config configs/toy/distill.yaml [key=value ...]
    torchrun --nproc_per_node 2 scripts/train_distill.py --config configs/toy/distill.yaml train.steps=100
"""

from __future__ import annotations

from apt.core.command import console_script
from apt.training.launch import run_training
from distill.build import build_stage
from distill.config import DistillConfig


def main(argv=None) -> dict:
    return run_training(DistillConfig, __doc__, argv, build_stage, prog="apt-distill")


cli = console_script(main, distributed=True)  # exits without interpreter teardown
