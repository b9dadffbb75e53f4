"""What a sampling call is: its parameters, its noise and its clock. Imports no model code (no diffusers,
no transformers), so that the TorchScript serving path (apt/inference/serving_bundle.py) starts in torch's time."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


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
