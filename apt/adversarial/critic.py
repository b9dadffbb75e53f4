"""The discriminator as stage 2 calls it: a re-noising drawn per sample, D's logits (and tapped
features) at it, and the penalised pass (approximate R1 / R2).

D judges clean latents re-noised at t ~ shift(U(0, 1), adv.d_shift) with its own noise; calls that
must agree on the re-noising (the clean and the sigma-perturbed copy of a penalty; a G step reusing
the D step's real pass) share one draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from apt.adversarial import losses
from apt.core import flow


@dataclass
class RealReference:
    """The D step's pass on one micro-batch's real clips, kept for the G step (adv.real_reference):
    the re-noising it drew and D's outputs there, detached. features: per tap, the batch mean of the
    token states (1, N, D) in float32, all that feature matching reads, so that B clips' token states
    are not held through the G step."""

    t: torch.Tensor
    noise: torch.Tensor
    logits: torch.Tensor
    features: list[torch.Tensor]

    @classmethod
    def of(cls, t: torch.Tensor, noise: torch.Tensor, logits: torch.Tensor, features: list[torch.Tensor],
           part: int = 0, parts: int = 1):
        """From a D call whose batch stacked `parts` equal groups of clips (the real clips are group
        `part`): logits are the real clips' already, features still the whole call's."""
        return cls(t, noise, logits.detach(),
                   [f.chunk(parts)[part].detach().float().mean(0, keepdim=True) for f in features])


class Critic:
    def __init__(self, discriminator: torch.nn.Module, d_shift: float):
        self.discriminator, self.d_shift = discriminator, d_shift

    @property
    def token_group(self):
        """The context-parallel group D's token states are split over (None: not split)."""
        return self.discriminator.backbone.context_parallel_group

    def renoising(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One re-noising (t ~ shift(U(0,1), d_shift) per sample, noise) for D calls that must share it."""
        return flow.sample_timesteps(x.shape[0], self.d_shift).to(x.device), torch.randn_like(x)

    def logits(self, x0: torch.Tensor, text: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
               return_features: bool = False):
        """D's logits (B,) for clean latents x0 re-noised at (t, noise); with return_features, also the
        tapped token states."""
        return self.discriminator(x0, text, t=t, noise=noise, return_features=return_features)

    def penalised_pass(self, x0: torch.Tensor, text: torch.Tensor, weight: float, sigma: float,
                       keep_reference: bool = False):
        """(logits, penalty, reference): D's logits at a fresh re-noising; the approximate R1/R2 penalty
        ||D(x) - D(x + sigma n)||^2 of a sigma-perturbed copy at the SAME t and noise (so only sigma * n
        differs), None when weight is 0; with keep_reference, the pass as a RealReference (else None)."""
        t, noise = self.renoising(x0)
        if weight <= 0:
            out = self.logits(x0, text, t, noise, return_features=keep_reference)
            if not keep_reference:
                return out, None, None
            return out[0], None, RealReference.of(t, noise, *out)
        # Both copies in one call: the same activation memory as two calls, but one pass's
        # per-layer overhead and FSDP collectives instead of two.
        both = self.logits(torch.cat([x0, losses.perturb(x0, sigma)]), torch.cat([text, text]),
                           torch.cat([t, t]), torch.cat([noise, noise]), return_features=keep_reference)
        logits, perturbed = (both[0] if keep_reference else both).chunk(2)
        reference = RealReference.of(t, noise, logits, both[1], part=0, parts=2) if keep_reference else None
        return logits, losses.approximate_r1(logits, perturbed), reference
