"""The one-step generator of both stages: G(z, c) = z - v(z, T, c), always at the final time T = 1."""

from __future__ import annotations

import torch

from apt.core import flow


class OneStepGenerator(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        t = torch.ones(z.shape[0], device=z.device, dtype=z.dtype)
        return flow.x0_from_v(z, self.backbone(z, t, text), t)

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """v in x's dtype with the backbone run in its own (bf16 for serving): latents stay float32
        between steps, as in diffusers' WanPipeline."""
        dtype = getattr(self.backbone, "dtype", None) or next(self.backbone.parameters()).dtype
        return self.backbone(x.to(dtype), t, text.to(dtype)).to(x.dtype)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, text: torch.Tensor, steps: int = 1, renoise_t: float = 0.5,
               renoise: torch.Tensor | None = None) -> torch.Tensor:
        """steps=1: G(z). steps=2: re-noise G(z) to renoise_t with `renoise` (standard normal, like z)
        and apply the generator's consistency function there (x - t v(x, t)), the usual few-step
        consistency sampling. Pass `renoise` drawn per sample (apt.inference.sampler) so that a sample does
        not depend on the batch around it; without it, it is drawn from the global RNG."""
        if steps not in (1, 2):
            raise ValueError(f"the one-step generator samples in 1 or 2 steps, got {steps}")
        if not 0.0 < renoise_t <= 1.0:
            raise ValueError(f"renoise_t must be in (0, 1], got {renoise_t}")
        t = torch.ones(z.shape[0], device=z.device, dtype=z.dtype)
        x0 = flow.x0_from_v(z, self._velocity(z, t, text), t)
        if steps == 2:
            if renoise is None:
                renoise = torch.randn_like(z)
            if renoise.shape != z.shape:
                raise ValueError(f"renoise must have the shape of z {tuple(z.shape)}, got {tuple(renoise.shape)}")
            t = torch.full((z.shape[0],), renoise_t, device=z.device, dtype=z.dtype)
            x_t = flow.add_noise(x0, renoise.to(z), t)
            x0 = flow.x0_from_v(x_t, self._velocity(x_t, t, text), t)
        return x0
