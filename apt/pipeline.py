"""Sampling: prompts -> latents (teacher multi-step with CFG, or a generator in one or two steps) -> videos."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from apt import flow
from apt.loading import Components


@dataclass
class SampleConfig:
    height: int = 32
    width: int = 32
    frames: int = 9
    steps: int = 25
    guidance_scale: float = 5.0
    negative_prompt: str = ""
    shift: float = 3.0
    seed: int = 0


@dataclass
class PhaseTimer:
    """Wall-clock seconds per phase (text encoder, DiT, VAE decode), like the paper's Table 8."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def initial_noise(shape: tuple[int, ...], seeds: list[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """One independent generator per sample: sample i is the same whatever the batch around it."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device, dtype)


class Sampler:
    def __init__(self, components: Components, device: torch.device | str = "cpu", dtype=torch.float32):
        if components.transformer is None or components.vae is None or components.text is None:
            raise ValueError("sampling needs transformer, vae and text encoder")
        self.c, self.device, self.dtype = components, torch.device(device), dtype

    def latent_shape(self, cfg: SampleConfig) -> tuple[int, int, int, int]:
        shape = self.c.vae.latent_shape(cfg.frames, cfg.height, cfg.width)
        p_t, p_h, p_w = self.c.transformer.patch_size
        if shape[2] % p_h or shape[3] % p_w:
            mult = self.c.vae.spatial_factor * p_h
            raise ValueError(f"height and width must be multiples of {mult} for this model, got {cfg.height}x{cfg.width}")
        return shape

    def velocity(self, x_t, t, text):
        return self.c.transformer(x_t.to(self.dtype), t, text.to(self.dtype)).float()

    @torch.no_grad()
    def generate(self, prompts: list[str], cfg: SampleConfig, timer: PhaseTimer | None = None,
                 decode: bool = True, batch_size: int | None = None) -> torch.Tensor:
        """Videos (B, 3, F, H, W) in [-1, 1] (or latents if decode=False); sample i uses seed cfg.seed + i,
        whatever the batching (batch_size bounds how many run at once)."""
        timer = timer or PhaseTimer()
        if batch_size and len(prompts) > batch_size:
            return torch.cat([self.generate(prompts[i : i + batch_size], replace(cfg, seed=cfg.seed + i), timer, decode)
                              for i in range(0, len(prompts), batch_size)])
        shape = self.latent_shape(cfg)
        with timer.phase("text_encoder"):
            text = self.c.text.encode(prompts).to(self.device)
            negative = None
            if cfg.guidance_scale != 1.0:
                negative = self.c.text.encode([cfg.negative_prompt] * len(prompts)).to(self.device)
        noise = initial_noise(shape, [cfg.seed + i for i in range(len(prompts))], self.device)
        with timer.phase("dit"):
            latents = flow.euler_sample(self.velocity, noise, text, cfg.steps, cfg.guidance_scale, negative, cfg.shift)
        if not decode:
            return latents
        with timer.phase("vae_decode"):
            return self.c.vae.decode(latents)
