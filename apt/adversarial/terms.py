"""The lazily weighted terms of stage 2: approximate R1 / R2 and feature matching.

Lazy regularisation (StyleGAN2's): a term paid on one step in `every`, weighted by `every` so that
its average weight is `weight`; the config's `*_every` keys set it (1 = every step, the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from apt.adversarial import losses


def lazy_weight(weight: float, every: int, step: int) -> float:
    """`weight * every` on every `every`-th step (step 0 included), 0 on the others."""
    return weight * every if step % every == 0 else 0.0


@dataclass
class LazyTerm:
    weight: float
    every: int = 1

    def weight_at(self, step: int) -> float:
        return lazy_weight(self.weight, self.every, step)


@dataclass
class ApproximatePenalty(LazyTerm):
    """Approximate R1 (on real clips; the paper's lambda 100, sigma 0.1 for video) or APT2's R2 (on G's
    samples): the squared logit change under a sigma-perturbation of D's input (Critic.penalised_pass)."""

    sigma: float = 0.1


@dataclass
class FeatureMatching(LazyTerm):
    """SeedVR2-style L1 between D's tapped token states of real clips and of G's samples (batch means),
    added to L_G; it needs a real reference pass (fresh, or the D step's: adv.real_reference)."""

    def loss(self, real_features: list[torch.Tensor], fake_features: list[torch.Tensor], group=None) -> torch.Tensor:
        return losses.feature_matching(real_features, fake_features, group)
