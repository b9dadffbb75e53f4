"""Stage 2's optimiser (both networks)."""

from __future__ import annotations

import torch


def make_optimizer(kind: str, param_groups, lr: float, beta2: float) -> torch.optim.Optimizer:
    """The paper's optimiser: "RMSProp, alpha 0.9 (= Adam with beta1 0, beta2 0.9)", i.e. Adam with
    beta1 0 and bias correction (its first update moves each weight by lr). torch's RMSprop has no
    bias correction: its first updates are 1/sqrt(1 - beta2^t) = 3.2x, 2.3x, 1.9x ... the lr."""
    # fused: one kernel per parameter for the whole Adam update (on CPU half the time of foreach, which
    # had already cut the optimiser several-fold against torch's per-tensor default on CPU); the same
    # arithmetic. RMSprop has no fused kernel: foreach.
    if kind == "adam":
        return torch.optim.Adam(param_groups, lr=lr, betas=(0.0, beta2), eps=1e-8, weight_decay=0.0, fused=True)
    return torch.optim.RMSprop(param_groups, lr=lr, alpha=beta2, eps=1e-8, weight_decay=0.0, foreach=True)
