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
        consistency sampling. Pass `renoise` drawn per sample (apt.pipeline) so that a sample does
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


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A step directory as given, or a run directory's latest complete checkpoint."""
    from apt.checkpoint import latest_checkpoint

    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if (path / "meta.json").exists():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint in {path} (expected a step directory with meta.json, "
                                f"or a run directory with checkpoints/step_*/)")
    return found


def run_model_dir(step_dir: str | Path) -> Path | None:
    """The teacher folder a run started from (its config.yaml's model.path), if recorded."""
    from omegaconf import OmegaConf

    from apt.loading import resolve_model_dir

    config = Path(step_dir).parent.parent / "config.yaml"  # <run>/checkpoints/step_*/
    if not config.exists():
        return None
    path = OmegaConf.select(OmegaConf.load(config), "model.path")
    return resolve_model_dir(path) if path else None


def load_generator_from_checkpoint(checkpoint: str | Path, model_dir: str | Path | None = None,
                                   name: str = "ema") -> OneStepGenerator:
    """A stage-1/2 training checkpoint's generator (EMA by default) as a plain, unsharded float32 module.

    `checkpoint` is a step directory or a run directory (its latest checkpoint is taken); the
    architecture comes from the teacher folder the run started from (`model_dir`, by default the
    run's config.yaml model.path).
    """
    from apt.backbone import WanBackbone
    from apt.checkpoint import checkpoint_model_names, load_model_from_checkpoint

    path = resolve_checkpoint(checkpoint)
    names = checkpoint_model_names(path)
    if name not in names:
        raise ValueError(f"checkpoint {path} holds no model {name!r}; it holds {', '.join(sorted(names))}")
    if model_dir is None:
        model_dir = run_model_dir(path)
        if model_dir is None:
            raise ValueError(f"no teacher folder recorded for {path} (no run config.yaml): give the model folder")
    backbone = WanBackbone.from_pretrained(model_dir)
    load_model_from_checkpoint(path, name, backbone)
    return OneStepGenerator(backbone.eval().requires_grad_(False))
