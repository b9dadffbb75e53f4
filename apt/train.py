"""Stage 2 entry: adversarial post-training of the one-step generator.

    python scripts/train_apt.py --config configs/toy/apt.yaml adv.generator_init=runs/toy-distill
    torchrun --nproc_per_node 2 scripts/train_apt.py --config configs/toy/apt.yaml adv.generator_init=runs/toy-distill
"""

from __future__ import annotations

import copy

import torch

from apt.adversarial import AdversarialPostTraining
from apt.adversarial_config import APTConfig
from apt.backbone import WanBackbone
from apt.checkpoint import load_model_from_checkpoint
from apt.entry import run_training
from apt.generator import resolve_checkpoint


def initial_generator(spec: str, teacher: WanBackbone) -> WanBackbone:
    """The stage-1 EMA generator (run dir or checkpoint dir), loaded before any sharding."""
    backbone = WanBackbone(copy.deepcopy(teacher.model))
    if spec == "teacher":
        return backbone
    try:
        checkpoint = resolve_checkpoint(spec)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"adv.generator_init={spec}: {err}") from err
    load_model_from_checkpoint(checkpoint, "ema", backbone)
    return backbone


def build_stage(cfg: APTConfig, dist, comps, samples) -> AdversarialPostTraining:
    generator = initial_generator(cfg.adv.generator_init, comps.transformer)
    # the discriminator's new heads are randomly initialised: the same on every rank and every run
    torch.manual_seed(cfg.train.seed)
    return AdversarialPostTraining(cfg, dist, comps.transformer, generator, samples)


def main(argv=None) -> dict:
    return run_training(APTConfig, __doc__, argv, build_stage)
