"""The one-step generator of both stages: G(z, c) = z - v(z, T, c), always at the final time T = 1."""

from __future__ import annotations

from pathlib import Path

import torch


from apt import flow


class OneStepGenerator(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        t = torch.ones(z.shape[0], device=z.device, dtype=z.dtype)
        return flow.x0_from_v(z, self.backbone(z, t, text), t)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, text: torch.Tensor, steps: int = 1, renoise_t: float = 0.5,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """steps=1: G(z). steps=2: re-noise G(z) to renoise_t with fresh noise and apply the generator's
        consistency function there (x - t v(x, t)), the usual few-step consistency sampling."""
        if steps not in (1, 2):
            raise ValueError(f"the one-step generator samples in 1 or 2 steps, got {steps}")
        x0 = self(z, text)
        if steps == 2:
            t = torch.full((z.shape[0],), renoise_t, device=z.device, dtype=z.dtype)
            noise = torch.randn(z.shape, generator=generator).to(z)
            x_t = flow.add_noise(x0, noise, t)
            x0 = flow.x0_from_v(x_t, self.backbone(x_t, t, text), t)
        return x0


def load_generator_from_checkpoint(checkpoint: str | Path, model_dir: str | Path, name: str = "ema") -> OneStepGenerator:
    """A stage-1/2 training checkpoint's generator (EMA by default) as a plain, unsharded module.

    `checkpoint` is a step directory or a run directory (its latest checkpoint is taken); the
    architecture comes from the teacher folder the run started from.
    """
    from apt.backbone import WanBackbone
    from apt.checkpoint import latest_checkpoint, load_model_from_checkpoint

    path = Path(checkpoint)
    if not (path / "meta.json").exists():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no complete checkpoint in {path}")
        path = found
    backbone = WanBackbone.from_pretrained(model_dir)
    load_model_from_checkpoint(path, name, backbone)
    return OneStepGenerator(backbone.eval().requires_grad_(False))
