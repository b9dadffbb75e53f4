"""The discriminator's parallelize function: its backbone like any WanBackbone, then heads + root."""

from __future__ import annotations

from torch.distributed.fsdp import fully_shard

from apt.config import ParallelConfig
from apt.distributed import fsdp_kwargs, parallelize_backbone
from discriminator.model import Discriminator


def parallelize_discriminator(d: Discriminator, cfg: ParallelConfig) -> None:
    parallelize_backbone(d.backbone, cfg)
    if cfg.fsdp:
        fully_shard(d, **fsdp_kwargs(cfg))  # the heads and logit layer are small: one group with the root
