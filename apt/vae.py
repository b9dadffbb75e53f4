"""Video VAE wrapper: the one place that knows latent normalisation.

Everywhere else in the project latents are normalised, `(mu - latents_mean) / latents_std`, the
same convention as diffusers' WanPipeline, so an exported folder decodes identically there.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan


class VideoVAE(torch.nn.Module):
    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        self.vae = vae
        cfg = vae.config
        if len(cfg.latents_mean) != cfg.z_dim or len(cfg.latents_std) != cfg.z_dim:
            raise ValueError(
                f"VAE config latents_mean/latents_std must have z_dim={cfg.z_dim} entries, "
                f"got {len(cfg.latents_mean)}/{len(cfg.latents_std)}"
            )
        shape = (1, cfg.z_dim, 1, 1, 1)
        self.register_buffer("mean", torch.tensor(cfg.latents_mean, dtype=torch.float32).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.latents_std, dtype=torch.float32).view(shape), persistent=False)

    @property
    def z_dim(self) -> int:
        return self.vae.config.z_dim

    @property
    def temporal_factor(self) -> int:
        return self.vae.config.scale_factor_temporal

    @property
    def spatial_factor(self) -> int:
        return self.vae.config.scale_factor_spatial

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent for a clip; checks the clip is encodable."""
        tf, sf = self.temporal_factor, self.spatial_factor
        if (frames - 1) % tf:
            raise ValueError(f"frames must be {tf}k+1 for this VAE, got {frames}")
        if height % sf or width % sf:
            raise ValueError(f"height and width must be multiples of {sf} for this VAE, got {height}x{width}")
        return (self.z_dim, (frames - 1) // tf + 1, height // sf, width // sf)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, F, H, W) in [-1, 1] -> normalised latent (posterior mean)."""
        mu = self.vae.encode(video.to(self.vae.dtype)).latent_dist.mode().float()
        return (mu - self.mean) / self.std

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """normalised latent -> video (B, 3, F, H, W) in [-1, 1] (clamped)."""
        raw = latent.float() * self.std + self.mean
        return self.vae.decode(raw.to(self.vae.dtype)).sample.float().clamp(-1, 1)
