"""The discriminator's parallelize function: its backbone like any WanBackbone, then heads + root."""

from __future__ import annotations

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from apt.training.config import ParallelConfig
from apt.training.distributed import fsdp_kwargs, parallelize_backbone
from discriminator.model import Discriminator

# The heads and the logit read small differences: approximate R1 at sigma 0.01 moves a logit by a
# fraction of a percent, which bf16 (8 mantissa bits) rounds to exactly 0 about half the time. They
# keep float32 parameters and compute whatever the backbone's precision (their inputs are cast up).
FLOAT32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)


def parallelize_discriminator(d: Discriminator, cfg: ParallelConfig) -> None:
    parallelize_backbone(d.backbone, cfg)
    if not cfg.fsdp:
        return
    kwargs = fsdp_kwargs(cfg)
    for head in [*d.heads, d.logit]:
        fully_shard(head, **{**kwargs, "mp_policy": FLOAT32})
    if "mp_policy" in kwargs:
        # the root re-noises its clean inputs in float32 (not cast on entry); the backbone casts x_t itself
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                                   cast_forward_inputs=False)
    fully_shard(d, **kwargs)
