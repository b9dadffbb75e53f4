"""Sampling: prompts -> latents (teacher multi-step with CFG, or a generator in one or two steps) -> videos."""

from __future__ import annotations

from dataclasses import replace

import torch

from apt.core import flow
from apt.core.sampling import PhaseTimer, SamplingParams, draw_noise, noise_generators
from apt.inference.decoders import Decoder
from apt.models.generator import OneStepGenerator
from apt.models.loading import Components


class Sampler:
    """one_step=False: the transformer is a teacher, sampled with `cfg.steps` Euler steps and CFG.
    one_step=True: the transformer is a one-step generator's backbone (a training checkpoint's EMA or
    an exported folder), sampled by OneStepGenerator in cfg.steps = 1 or 2 steps with no CFG (the
    guidance was distilled into it). decoder: what turns latents into video (apt/inference/decoders.py:
    the VAE, the VAE in tiles, the fast decoder); default the components' VAE."""

    def __init__(self, components: Components, device: torch.device | str = "cpu", dtype=torch.float32,
                 one_step: bool = False, decoder: Decoder | None = None):
        self.decoder = decoder if decoder is not None else components.vae
        if components.transformer is None or self.decoder is None or components.text is None:
            raise ValueError("sampling needs a transformer, a text encoder and a decoder")
        self.c, self.device, self.dtype = components, torch.device(device), dtype
        self.generator = OneStepGenerator(components.transformer) if one_step else None

    def decode(self, latents: torch.Tensor) -> torch.Tensor | None:
        """Normalised latents -> videos (B, 3, F, H, W) in [-1, 1] by the chosen decoder (None on a rank
        that only helped a tiled decode)."""
        return self.decoder.decode(latents)

    def latent_shape(self, cfg: SamplingParams) -> tuple[int, int, int, int]:
        shape = self.decoder.latent_shape(cfg.frames, cfg.height, cfg.width)
        p_t, p_h, p_w = self.c.transformer.patch_size
        if shape[2] % p_h or shape[3] % p_w:
            mult = self.decoder.spatial_factor * p_h
            raise ValueError(f"height and width must be multiples of {mult} for this model, got {cfg.height}x{cfg.width}")
        return shape

    def velocity(self, x_t, t, text):
        return self.c.transformer(x_t.to(self.dtype), t, text.to(self.dtype)).float()

    @torch.no_grad()
    def generate(self, prompts: list[str], cfg: SamplingParams, timer: PhaseTimer | None = None,
                 decode: bool = True, batch_size: int | None = None) -> torch.Tensor:
        """Videos (B, 3, F, H, W) in [-1, 1] (or latents if decode=False); sample i uses seed cfg.seed + i,
        whatever the batching (batch_size bounds how many run at once)."""
        timer = timer or PhaseTimer()
        if batch_size and len(prompts) > batch_size:
            return torch.cat([self.generate(prompts[i : i + batch_size], replace(cfg, seed=cfg.seed + i), timer, decode)
                              for i in range(0, len(prompts), batch_size)])
        if self.generator is not None and cfg.guidance_scale != 1.0:
            raise ValueError("a one-step generator has its guidance distilled in: use guidance_scale 1.0")
        shape = self.latent_shape(cfg)
        with timer.phase("text_encoder"):
            text = self.c.text.encode(prompts).to(self.device)
            negative = None
            if cfg.guidance_scale != 1.0:
                negative = self.c.text.encode([cfg.negative_prompt] * len(prompts)).to(self.device)
        generators = noise_generators([cfg.seed + i for i in range(len(prompts))])
        noise = draw_noise(shape, generators, self.device)
        with timer.phase("dit"):
            if self.generator is None:
                latents = flow.euler_sample(self.velocity, noise, text, cfg.steps, cfg.guidance_scale, negative,
                                            cfg.shift)
            else:
                # the 2-step mode's re-noising noise comes from each sample's own generator too
                renoise = draw_noise(shape, generators, self.device) if cfg.steps == 2 else None
                latents = self.generator.sample(noise, text, cfg.steps, cfg.renoise_t, renoise).float()
        if not decode:
            return latents
        with timer.phase("decode"):
            return self.decode(latents)
