"""Stage 1 entry: consistency distillation of a Wan teacher into a one-step generator.

    python scripts/distill.py --config configs/toy/distill.yaml [key=value ...]
    torchrun --nproc_per_node 2 scripts/distill.py --config configs/toy/distill.yaml train.steps=100
"""

from __future__ import annotations

from apt.entry import run_training
from distill.config import DistillConfig
from distill.stage import ConsistencyDistillation


def build_stage(cfg: DistillConfig, dist, comps, samples) -> ConsistencyDistillation:
    negative = comps.text.encode([cfg.cd.negative_prompt])
    return ConsistencyDistillation(cfg, dist, comps.transformer, negative, samples)


def main(argv=None) -> dict:
    return run_training(DistillConfig, __doc__, argv, build_stage)
