"""Sampling: prompts -> latents (teacher multi-step with CFG, or a generator in one or two steps) -> videos."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from apt import flow
from apt.generator import OneStepGenerator
from apt.loading import Components


@dataclass
class SamplingParams:
    height: int = 32
    width: int = 32
    frames: int = 9
    steps: int = 25
    guidance_scale: float = 5.0
    negative_prompt: str = ""
    shift: float = 3.0
    seed: int = 0
    renoise_t: float = 0.5  # one-step generators, steps=2: where the first output is re-noised


@dataclass
class PhaseTimer:
    """Wall-clock seconds per phase (text encoder, DiT, VAE decode), like the paper's Table 8.

    synchronize=True waits for queued CUDA kernels before each clock reading; without it a phase
    would be charged for the previous phase's asynchronous work.
    """

    seconds: dict[str, float] = field(default_factory=dict)
    synchronize: bool = False

    def _now(self) -> float:
        if self.synchronize:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def phase(self, name: str):
        start = self._now()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + self._now() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def noise_generators(seeds: list[int]) -> list[torch.Generator]:
    """One independent CPU generator per sample: sample i is the same whatever the batch around it.
    diffusers' WanPipeline given `generator=[torch.Generator().manual_seed(s) for s in seeds]` draws
    its initial latents identically (float32, on CPU, one sample after another)."""
    return [torch.Generator().manual_seed(s) for s in seeds]


def draw_noise(shape: tuple[int, ...], generators: list[torch.Generator], device=None,
               dtype=torch.float32) -> torch.Tensor:
    """The next standard-normal draw of `shape` from each sample's generator, stacked."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device, dtype)


def initial_noise(shape: tuple[int, ...], seeds: list[int], device=None, dtype=torch.float32) -> torch.Tensor:
    return draw_noise(shape, noise_generators(seeds), device, dtype)


class Sampler:
    """one_step=False: the transformer is a teacher, sampled with `cfg.steps` Euler steps and CFG.
    one_step=True: the transformer is a one-step generator's backbone (a training checkpoint's EMA or
    an exported folder), sampled by OneStepGenerator in cfg.steps = 1 or 2 steps with no CFG (the
    guidance was distilled into it)."""

    def __init__(self, components: Components, device: torch.device | str = "cpu", dtype=torch.float32,
                 one_step: bool = False):
        if components.transformer is None or components.vae is None or components.text is None:
            raise ValueError("sampling needs transformer, vae and text encoder")
        self.c, self.device, self.dtype = components, torch.device(device), dtype
        self.generator = OneStepGenerator(components.transformer) if one_step else None

    def latent_shape(self, cfg: SamplingParams) -> tuple[int, int, int, int]:
        shape = self.c.vae.latent_shape(cfg.frames, cfg.height, cfg.width)
        p_t, p_h, p_w = self.c.transformer.patch_size
        if shape[2] % p_h or shape[3] % p_w:
            mult = self.c.vae.spatial_factor * p_h
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
        with timer.phase("vae_decode"):
            return self.c.vae.decode(latents)
