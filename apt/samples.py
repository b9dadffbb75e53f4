"""Sample videos at fixed seeds during training: every rank runs the (sharded) generator, rank 0 writes."""

from __future__ import annotations

from pathlib import Path

import torch

from apt.pipeline import initial_noise
from apt.video import frame_grid, write_mp4


class SampleWriter:
    def __init__(self, prompts: list[str], text: torch.Tensor, latent_shape: tuple[int, ...], seed: int,
                 vae=None, rank: int = 0, fps: int = 8, upscale: int = 4):
        """text: (P, L, D) embeddings of `prompts`, computed once so the text encoder can be freed."""
        self.prompts, self.text, self.rank, self.vae = prompts, text, rank, vae
        self.noise = initial_noise(latent_shape, [seed + i for i in range(len(prompts))])
        self.fps, self.upscale = fps, upscale

    @classmethod
    def for_run(cls, sampling_cfg, components, latent_shape: tuple[int, ...], rank: int) -> "SampleWriter":
        """From a run's `sampling` config; every rank embeds the prompts, rank 0 keeps the VAE to decode."""
        return cls(sampling_cfg.prompts, components.text.encode(sampling_cfg.prompts), latent_shape,
                   sampling_cfg.seed, vae=components.vae if rank == 0 else None, rank=rank,
                   fps=sampling_cfg.fps, upscale=sampling_cfg.upscale)

    @torch.no_grad()
    def write(self, generator: torch.nn.Module, step: int, out_dir: Path) -> Path | None:
        device = next(iter(generator.parameters())).device
        latents = generator(self.noise.to(device), self.text.to(device)).float().cpu()
        if self.rank != 0 or self.vae is None:
            return None
        videos = self.vae.decode(latents)
        folder = Path(out_dir) / "samples" / f"step_{step:08d}"
        for i, (prompt, video) in enumerate(zip(self.prompts, videos)):
            slug = "".join(ch if ch.isalnum() else "_" for ch in prompt)[:48].strip("_")
            write_mp4(video, folder / f"{i:02d}_{slug}.mp4", fps=self.fps, upscale=self.upscale)
        frame_grid(list(videos), self.prompts, upscale=self.upscale).save(folder / "grid.png")
        return folder
