"""The discriminator: a full copy of the ORIGINAL teacher, run only up to its deepest tap, with a
token head after each tapped layer and one logit per sample.

Inputs are clean latents (real x or generated x_hat); the discriminator re-noises them itself at a
timestep drawn per sample, t ~ shift(U(0, 1), s) (s = 1 images, 12 video at scale): feeding t = 0
only collapses training (the paper's finding).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from apt.core import flow
from apt.models.backbone import WanBackbone, default_taps
from discriminator.heads import LogitHead, TokenHead


class Discriminator(nn.Module):
    def __init__(self, backbone: WanBackbone, taps: tuple[int, ...] | None = None, head_heads: int | None = None,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.backbone = backbone
        self.taps = tuple(sorted(set(taps or default_taps(backbone.num_blocks))))
        if self.taps[0] < 1 or self.taps[-1] > backbone.num_blocks:
            raise ValueError(f"discriminator taps must be in [1, {backbone.num_blocks}], got {self.taps}")
        dim = backbone.hidden_dim
        heads = head_heads or backbone.config.num_attention_heads
        self.heads = nn.ModuleList([TokenHead(dim, heads, mlp_ratio) for _ in self.taps])
        self.logit = LogitHead(dim, len(self.taps))
        # Blocks past the deepest tap and the velocity head never run: freeze them so no optimiser
        # state is kept for them and "every trainable parameter gets a gradient" holds.
        m = backbone.model
        unused = list(m.blocks[self.taps[-1]:]) + [m.norm_out, m.proj_out]
        for module in unused:
            module.requires_grad_(False)
        m.scale_shift_table.requires_grad_(False)

    def head_parameters(self) -> list[nn.Parameter]:
        """The new layers on top of the backbone copy (token heads and logit layer)."""
        return list(self.heads.parameters()) + list(self.logit.parameters())

    @classmethod
    def from_teacher(cls, teacher: WanBackbone, **kwargs) -> "Discriminator":
        """A full, trainable copy of the teacher's weights (not the distilled generator's)."""
        backbone = WanBackbone(copy.deepcopy(teacher.model)).train().requires_grad_(True)
        return cls(backbone, **kwargs)

    def logits_at(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, return_features: bool = False):
        """D_hat(x_t, t, c): logits (B,) for already-noised inputs; with return_features, also the
        tapped token states (one (B, N, D) tensor per tap) the heads read, for feature matching
        (this rank's share of the tokens under context parallelism)."""
        feats, _ = self.backbone.features(x_t, t, text, self.taps)
        # heads and logit in float32 whatever the backbone computes in (discriminator/parallel.py)
        group = self.backbone.context_parallel_group  # token shares under context parallelism
        logits = self.logit([head(feats[k].float(), group) for head, k in zip(self.heads, self.taps)]).float()
        return (logits, [feats[k] for k in self.taps]) if return_features else logits

    def forward(self, x0: torch.Tensor, text: torch.Tensor, shift_s: float = 1.0, t: torch.Tensor | None = None,
                noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                return_features: bool = False):
        """D(x, c): re-noise clean latents at t ~ shift(U(0,1), s) per sample (or the given t/noise)."""
        if t is None:
            t = flow.sample_timesteps(x0.shape[0], shift_s, generator=generator).to(x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator).to(x0)
        return self.logits_at(flow.add_noise(x0, noise, t.to(x0.dtype)), t, text, return_features)
