"""Preview videos at fixed prompts and seeds during training: every rank runs the (sharded) generator,
rank 0 writes one mp4 per prompt, grid.png and preview.gif (TensorBoard plays it) into the run folder."""

from __future__ import annotations

from pathlib import Path

import torch

from apt.core.sampling import initial_noise
from apt.core.video import frame_grid, tiled_gif, write_mp4
from apt.training.run_folder import samples_dir


class SampleWriter:
    def __init__(self, prompts: list[str], text: torch.Tensor, latent_shape: tuple[int, ...], seed: int,
                 vae=None, rank: int = 0, fps: int = 8, upscale: int = 4, gif: bool = True):
        """text: (P, L, D) embeddings of `prompts`, computed once so the text encoder can be freed.
        gif: also write preview.gif (what TensorBoard plays; slow at 720p)."""
        self.prompts, self.text, self.rank, self.vae = prompts, text, rank, vae
        self.noise = initial_noise(latent_shape, [seed + i for i in range(len(prompts))]) if prompts else None
        self.fps, self.upscale, self.gif = fps, upscale, gif

    @classmethod
    def for_run(cls, preview_cfg, components, latent_shape: tuple[int, ...], rank: int,
                gif: bool = True) -> "SampleWriter":
        """From a run's `preview` config; every rank embeds the prompts, rank 0 keeps the VAE to decode.
        No prompts, no previews (at 720p a preview costs a full VAE decode per prompt)."""
        prompts = list(preview_cfg.prompts)
        text = components.text.encode(prompts) if prompts else torch.zeros(0)
        return cls(prompts, text, latent_shape,
                   preview_cfg.seed, vae=components.vae if rank == 0 else None, rank=rank,
                   fps=preview_cfg.fps, upscale=preview_cfg.upscale, gif=gif)

    @torch.no_grad()
    def write(self, generator: torch.nn.Module, step: int, out_dir: Path) -> Path | None:
        if not self.prompts:
            return None
        device = next(iter(generator.parameters())).device
        latents = generator(self.noise.to(device), self.text.to(device)).float().cpu()
        if self.rank != 0 or self.vae is None:
            return None
        videos = self.vae.decode(latents)
        folder = samples_dir(out_dir, step)
        for i, (prompt, video) in enumerate(zip(self.prompts, videos)):
            slug = "".join(ch if ch.isalnum() else "_" for ch in prompt)[:48].strip("_")
            write_mp4(video, folder / f"{i:02d}_{slug}.mp4", fps=self.fps, upscale=self.upscale)
        frame_grid(list(videos), self.prompts, upscale=self.upscale).save(folder / "grid.png")
        if self.gif:
            (folder / "preview.gif").write_bytes(tiled_gif(list(videos), self.upscale, self.fps))
        return folder
