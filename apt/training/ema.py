"""The trained model and its EMA, as both stages set them up, and the EMA update (a trainer callback)."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from apt.models.backbone import WanBackbone
from apt.training.callbacks import Callback
from apt.training.config import ParallelConfig
from apt.training.distributed import local_tensor, parallelize_backbone, reshard


def trainable_with_ema(init: WanBackbone, par: ParallelConfig, copy_init: bool = True
                       ) -> tuple[WanBackbone, WanBackbone]:
    """(trainable model, its EMA), both starting from `init`'s weights and both sharded. copy_init=False
    trains `init` itself (stage 2 gets a generator nobody else holds). The EMA runs without grad, so
    it gets no activation checkpointing."""
    model = WanBackbone(copy.deepcopy(init.model)) if copy_init else init
    ema = WanBackbone(copy.deepcopy(init.model)).eval().requires_grad_(False)
    model.train().requires_grad_(True)
    parallelize_backbone(model, par)
    parallelize_backbone(ema, replace(par, activation_checkpointing=False))
    return model, ema


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model. Works on plain modules and on FSDP2 modules sharded
    the same way: each rank lerps only its local shards, so no communication is needed."""
    # A root run under no_grad keeps its params unsharded (full tensors); lerp would then mix a full
    # tensor with a shard, so put both back to their sharded form first.
    reshard(ema)
    reshard(model)
    e_named, m_named = list(ema.named_parameters()), list(model.named_parameters())
    if [n for n, _ in e_named] != [n for n, _ in m_named]:
        raise ValueError("EMA and model have different parameter lists")
    e = [local_tensor(p) for _, p in e_named]
    m = [local_tensor(p).to(t.dtype) for (_, p), t in zip(m_named, e)]
    torch._foreach_lerp_(e, m, 1.0 - decay)


class EMAUpdate(Callback):
    """After every update: ema <- decay * ema + (1 - decay) * model."""

    def __init__(self, ema: torch.nn.Module, model: torch.nn.Module, decay: float):
        self.ema, self.model, self.decay = ema, model, decay

    def after_update(self, step: int) -> None:
        ema_update(self.ema, self.model, self.decay)
