"""Stage 1's stage from a config (the command is apt/cli/distill.py)."""

from __future__ import annotations

from distill.config import DistillConfig


def build_stage(cfg: DistillConfig, dist, comps, previews, dataset):
    from distill.stage import ConsistencyDistillation

    negative = comps.text.encode([cfg.cd.negative_prompt])
    return ConsistencyDistillation(cfg, dist, comps.transformer, negative, previews)
