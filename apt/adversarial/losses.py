"""Adversarial losses of stage 2 (Seaweed-APT, arXiv 2501.08316; its printed signs are inconsistent, these are
the standard non-saturating ones):

    L_D = softplus(-D(x)) + softplus(D(x_hat)) + lambda * L_aR1
    L_G = softplus(-D(x_hat))
    L_aR1 = || D(x, c) - D(x + sigma * n, c) ||^2,  n ~ N(0, I)

Approximate R1 replaces the gradient penalty because FSDP, activation checkpointing and flash
attention do not support double backward. Both D calls must see the same re-noising timestep and
noise, so that only the sigma-perturbation differs: callers pass one `t`/`noise` to both.

Optional, off by default: APT2's relativistic pairing loss and approximate R2 (the same penalty on
generated samples), and SeedVR2's discriminator feature matching for the generator.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from apt.core.collectives import sum_over_group


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return d_loss_real(real_logits) + d_loss_fake(fake_logits)


def d_loss_real(real_logits: torch.Tensor) -> torch.Tensor:
    """The real half of L_D; the halves add, so each can be backpropagated on its own."""
    return F.softplus(-real_logits).mean()


def d_loss_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def approximate_r1(real_logits: torch.Tensor, perturbed_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared logit change under a small perturbation of the real input.
    APT2's approximate R2 is the same penalty on generated inputs: call it with the fake logits."""
    return (real_logits - perturbed_logits).square().mean()


def feature_matching(real_features: list[torch.Tensor], fake_features: list[torch.Tensor],
                     group=None) -> torch.Tensor:
    """L1 between the batch-mean discriminator token states of real and generated clips, averaged
    over taps (SeedVR2's feature matching). SeedVR2 restores paired videos; text-to-video samples
    have no real twin, so first moments are matched (Salimans et al. 2016), token by token.
    `group`: the context-parallel ranks whose token shares these are (None: all tokens here)."""
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError("feature matching needs the same, non-empty list of taps for real and fake")
    if group is None:
        terms = [(r.float().mean(0) - f.float().mean(0)).abs().mean() for r, f in zip(real_features, fake_features)]
        return torch.stack(terms).mean()
    # each rank holds an equal share of the tokens: the mean over all of them is the group's sum of shares
    ranks = dist.get_world_size(group)
    terms = [(r.float().mean(0) - f.float().mean(0)).abs().sum() / (r[0].numel() * ranks)
             for r, f in zip(real_features, fake_features)]
    return sum_over_group(torch.stack(terms), group).mean()


def perturb(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + sigma * n: sigma 0.01 for images, 0.1 for video in the paper."""
    return x + sigma * torch.randn(x.shape, generator=generator).to(x)


def relativistic_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """APT2's relativistic pairing loss (optional): softplus(-(D(x) - D(x_hat)))."""
    return F.softplus(-(real_logits - fake_logits)).mean()


def relativistic_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-(fake_logits - real_logits)).mean()


def d_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Fraction of reals scored > 0 and fakes < 0 (a diagnostic: ~1.0 for long means D is winning)."""
    return 0.5 * ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean())


def auc(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney AUC), a float64 scalar
    on the inputs' device: 0.5 at chance, 1.0 when every positive outranks every negative. NaN when
    either set is empty."""
    positive, negative = positive.flatten().double(), negative.flatten().double()
    if not len(positive) or not len(negative):
        return torch.tensor(float("nan"), dtype=torch.float64, device=positive.device)
    diff = positive[:, None] - negative[None, :]
    return (diff > 0).double().mean() + 0.5 * (diff == 0).double().mean()


def discriminator_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D of adv.loss: "nonsaturating" (the paper) or "relativistic" (APT2)."""
    if kind == "relativistic":
        return relativistic_d_loss(real_logits, fake_logits)
    return d_loss(real_logits, fake_logits)


def generator_loss(kind: str, real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_G of adv.loss; real_logits are only read (and only needed) by the relativistic loss."""
    if kind == "relativistic":
        return relativistic_g_loss(real_logits, fake_logits)
    return g_loss(fake_logits)
