"""The trained model and its EMA, as both stages set them up, and the EMA update (a trainer callback)."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from apt.core.config import ConfigError
from apt.models.backbone import WanBackbone
from apt.models.lora import LoRAConfig, add_lora, has_lora
from apt.training.callbacks import Callback
from apt.training.config import ParallelConfig
from apt.training.distributed import local_tensor, parallelize_backbone, reshard


def trainable_with_ema(init: WanBackbone, par: ParallelConfig, copy_init: bool = True, lora: LoRAConfig | None = None
                       ) -> tuple[WanBackbone, WanBackbone]:
    """(trainable model, its EMA), both starting from `init`'s weights and both sharded. copy_init=False
    trains `init` itself (stage 2 gets a generator nobody else holds). The EMA runs without grad, so
    it gets no activation checkpointing. With `lora` enabled only an adapter trains (a fresh one, or the
    one `init` carries from stage 1, which must have the same settings); the EMA follows the adapter."""
    model = WanBackbone(copy.deepcopy(init.model)) if copy_init else init
    if has_lora(init):
        model.lora = init.lora
    adapter = lora is not None and lora.enabled
    if adapter and not has_lora(model):
        add_lora(model, lora)
    elif adapter and model.lora != lora.as_dict():
        raise ConfigError(f"model.lora {lora.as_dict()} differs from the adapter the generator was trained with "
                          f"({model.lora}): continue it with the same settings")
    elif not adapter and has_lora(model):  # initial_generator folds a stage-1 adapter in for full training
        raise ConfigError(f"the generator carries a LoRA adapter ({model.lora}) but model.lora is off")
    ema = WanBackbone(copy.deepcopy(model.model)).eval().requires_grad_(False)
    ema.lora = getattr(model, "lora", None)
    if hasattr(model, "lora_base"):
        ema.lora_base = model.lora_base
    model.train()
    if not adapter:
        model.requires_grad_(True)
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
    # only what trains moves (a LoRA model's frozen base is the EMA's already)
    moving = [i for i, (_, p) in enumerate(m_named) if p.requires_grad]
    e_named, m_named = [e_named[i] for i in moving], [m_named[i] for i in moving]
    e = [local_tensor(p) for _, p in e_named]
    m = [local_tensor(p).to(t.dtype) for (_, p), t in zip(m_named, e)]
    torch._foreach_lerp_(e, m, 1.0 - decay)


class EMAUpdate(Callback):
    """After every update: ema <- decay * ema + (1 - decay) * model."""

    def __init__(self, ema: torch.nn.Module, model: torch.nn.Module, decay: float):
        self.ema, self.model, self.decay = ema, model, decay

    def after_update(self, step: int) -> None:
        ema_update(self.ema, self.model, self.decay)
