"""Stage 1 entry: consistency distillation of a Wan teacher into a one-step generator.

    apt-distill --config configs/toy/distill.yaml [key=value ...]
    torchrun --nproc_per_node 2 scripts/train_distill.py --config configs/toy/distill.yaml train.steps=100
"""

from __future__ import annotations

from apt.command import console_script
from apt.entry import run_training
from distill.config import DistillConfig


def build_stage(cfg: DistillConfig, dist, comps, previews, dataset):
    from distill.stage import ConsistencyDistillation

    negative = comps.text.encode([cfg.cd.negative_prompt])
    return ConsistencyDistillation(cfg, dist, comps.transformer, negative, previews)


def main(argv=None) -> dict:
    return run_training(DistillConfig, __doc__, argv, build_stage, prog="apt-distill")


cli = console_script(main, distributed=True)  # exits without interpreter teardown
