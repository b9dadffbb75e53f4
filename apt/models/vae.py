"""Video VAE wrapper: the one place that knows latent normalisation.

Everywhere else in the project latents are normalised, `(mu - latents_mean) / latents_std`, the
same convention as diffusers' WanPipeline, so an exported folder decodes identically there.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # imported by whoever builds one (apt/models/loading.py): serving without the VAE skips it
    from diffusers import AutoencoderKLWan


def clip_latent_shape(frames: int, height: int, width: int, z_dim: int, temporal: int, spatial: int
                      ) -> tuple[int, int, int, int]:
    """(C, T, H, W) of the latent of a clip under a causal VAE's factors; checks the clip is encodable.
    The one rule for VideoVAE and the fast decoder (which serves without the VAE)."""
    if (frames - 1) % temporal:
        raise ValueError(f"frames must be {temporal}k+1 for this VAE, got {frames}")
    if height % spatial or width % spatial:
        raise ValueError(f"height and width must be multiples of {spatial} for this VAE, got {height}x{width}")
    return (z_dim, (frames - 1) // temporal + 1, height // spatial, width // spatial)


def tile_windows(height: int, width: int, rows: int, cols: int, overlap: int):
    """The geometry of a rows x cols grid of overlapping tiles over a height x width latent, as diffusers'
    tiled_decode lays it out: (stride_h, stride_w, overlap_h, overlap_w, tile starts (i, j) row by row)."""
    stride_h, stride_w = math.ceil(height / rows), math.ceil(width / cols)
    over_h, over_w = (min(overlap, stride_h) if rows > 1 else 0), (min(overlap, stride_w) if cols > 1 else 0)
    starts = [(i, j) for i in range(0, height, stride_h) for j in range(0, width, stride_w)]
    return stride_h, stride_w, over_h, over_w, starts


def rank_tile_grid(world_size: int) -> tuple[int, int]:
    """(rows, cols) of one VAE tile per rank, as square as the world size factors (8 ranks: 2 x 4, the
    wide side of a landscape clip split more)."""
    rows = max(r for r in range(1, int(world_size**0.5) + 1) if world_size % r == 0)
    return rows, world_size // rows


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
        return clip_latent_shape(frames, height, width, self.z_dim, self.temporal_factor, self.spatial_factor)

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

    @torch.no_grad()
    def decode_tiles(self, latent: torch.Tensor, rows: int, cols: int, overlap: int = 8, rank: int = 0,
                     world_size: int = 1) -> torch.Tensor | None:
        """normalised latent -> video like `decode`, in rows x cols overlapping spatial tiles, each decoded
        on its own and blended, exactly as diffusers' AutoencoderKLWan.tiled_decode does with tile size
        stride + overlap (equal to it, tested). Tiles are dealt to ranks round-robin: with world_size > 1
        (an initialised process group) rank r decodes tiles r, r + world, ... and rank 0 gathers and
        blends them, and gets the video; the other ranks get None. `overlap` is in latent cells: more
        overlap, smaller seams, more work. One tile per rank splits the decode N ways (for memory, or
        for speed over N GPUs); the seams make it differ slightly from an untiled decode. A patchified
        (Wan 2.2) VAE's tiles are blended in its pixel-patch space and unpatchified once, as diffusers does."""
        vae = self.vae
        patch = vae.config.patch_size or 1
        z = (latent.float() * self.std + self.mean).to(vae.dtype)
        height, width = z.shape[-2:]
        if not (1 <= rows <= height and 1 <= cols <= width):
            raise ValueError(f"a {rows}x{cols} tile grid does not fit a {height}x{width} latent")
        stride_h, stride_w, over_h, over_w, starts = tile_windows(height, width, rows, cols, overlap)
        mine = {}
        for k, (i, j) in enumerate(starts):
            if k % world_size != rank:
                continue
            tile = z[:, :, :, i : i + stride_h + over_h, j : j + stride_w + over_w]
            vae.clear_cache()  # diffusers' tiled_decode loop: frame-causal, no clamp before blending
            frames = []
            for t in range(tile.shape[2]):
                vae._conv_idx = [0]
                frames.append(vae.decoder(vae.post_quant_conv(tile[:, :, t : t + 1]), feat_cache=vae._feat_map,
                                          feat_idx=vae._conv_idx, first_chunk=t == 0))
            vae.clear_cache()
            mine[k] = torch.cat(frames, 2)
        tiles = mine
        if world_size > 1:
            from apt.core.collectives import gather_objects

            gathered = gather_objects({k: v.cpu() for k, v in mine.items()}, dst=0)
            if rank != 0:
                return None
            tiles = {k: v.to(z.device) for part in gathered for k, v in part.items()}
        sf = self.spatial_factor // patch  # decoder output cells per latent cell
        grid_cols = len(range(0, width, stride_w))
        out_rows = []
        for r in range(len(starts) // grid_cols):
            out_row = []
            for c in range(grid_cols):
                tile = tiles[r * grid_cols + c]
                if r > 0:
                    tile = vae.blend_v(tiles[(r - 1) * grid_cols + c], tile, over_h * sf)
                if c > 0:
                    tile = vae.blend_h(tiles[r * grid_cols + c - 1], tile, over_w * sf)
                out_row.append(tile[:, :, :, : stride_h * sf, : stride_w * sf])
            out_rows.append(torch.cat(out_row, -1))
        out = torch.cat(out_rows, 3)
        if patch > 1:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

            out = unpatchify(out, patch_size=patch)
        return out.float().clamp(-1, 1)

    def refine(self, video: torch.Tensor, steps: int, lr: float = 0.08, latent: torch.Tensor | None = None
               ) -> torch.Tensor:
        """The normalised latent of `video` (B, 3, F, H, W) in [-1, 1] whose decode is closest to it: the
        encoder's latent (or `latent`, when the caller has it already), then `steps` Adam steps on the
        decode's squared error (the decoder frozen).
        The encoder's posterior mean decodes blurrier than the clip (the toy VAE's round trip has 0.62 of
        real clips' edge sharpness); a few steps through the decoder give latents that decode sharper (0.70
        after 12 steps at lr 0.08), and stage 2's generator follows the latents its discriminator calls
        real (docs/experiments/2026-11-23-stage2-apt.md). The error is summed, not averaged, so that a clip's steps do not depend
        on the batch it is in (Adam's epsilon would weigh in at a mean's tiny gradients)."""
        latent = self.encode(video) if latent is None else latent
        if steps <= 0:
            return latent
        latent = latent.clone().requires_grad_(True)
        opt = torch.optim.Adam([latent], lr=lr)
        target = video.float()
        with torch.enable_grad():
            for _ in range(steps):
                loss = (self.decode_with_grad(latent, checkpointing=False) - target).square().sum()
                (grad,) = torch.autograd.grad(loss, latent)
                latent.grad = grad
                opt.step()
        return latent.detach()

    def decode_with_grad(self, latent: torch.Tensor, latent_frames: int = 0, checkpointing: bool = True,
                         start: int = 0) -> torch.Tensor:
        """The first `latent_frames` latent frames (0 = all) -> video, differentiable in the latent (for
        reward gradients). The Wan VAE decodes frame-causally, so these are exactly the first
        1 + 4 (latent_frames - 1) frames of the whole clip's decode. With `start`, the latent frames
        start .. start + latent_frames - 1 instead, the causal cache warmed on the frames before them
        without gradients: exactly those frames' part of the whole clip's decode. With `checkpointing`, each latent
        frame's decoder pass is recomputed in backward: what is kept is its input and the decoder's
        two-frame causal cache, not every activation of every frame.

        The loop is diffusers' AutoencoderKLWan._decode (one latent frame at a time through the
        decoder, its causal cache carried along), written out so that each step is a pure function
        of (latent frame, cache) that checkpointing can replay; no tiling.
        """
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify
        from torch.utils.checkpoint import checkpoint

        vae = self.vae
        latent = latent[:, :, : start + latent_frames] if latent_frames else latent
        x = vae.post_quant_conv((latent.float() * self.std + self.mean).to(vae.dtype))
        vae.clear_cache()
        cache = list(vae._feat_map)  # the decoder's causal cache: one slot per causal conv

        def frame_step(frame: torch.Tensor, cache_in: list, first: bool):
            work = list(cache_in)  # the decoder writes into its cache list: never into cache_in
            out = vae.decoder(frame, feat_cache=work, feat_idx=[0], first_chunk=first)
            return out, work

        outs = []
        for i in range(x.shape[2]):
            frame = x[:, :, i : i + 1]
            if i < start:  # warming the cache: outputs dropped, nothing kept for backward
                with torch.no_grad():
                    _, cache = frame_step(frame.detach(), cache, i == 0)
                cache = [c.detach() if torch.is_tensor(c) else c for c in cache]
                continue
            if checkpointing and torch.is_grad_enabled():
                out, cache = checkpoint(frame_step, frame, cache, i == 0, use_reentrant=False)
            else:
                out, cache = frame_step(frame, cache, i == 0)
            outs.append(out)
        vae.clear_cache()
        out = torch.cat(outs, 2)
        if vae.config.patch_size is not None:  # Wan 2.2's VAE decodes pixel patches as channels
            out = unpatchify(out, patch_size=vae.config.patch_size)
        return out.float().clamp(-1, 1)
