"""Latents to video: the one Decoder interface and the one place a decoder choice is read.

    decoder.latent_shape(frames, height, width) -> (C, T, h, w)   the latent of a clip of that size
    decoder.spatial_factor                                        pixels per latent cell
    decoder.decode(latents) -> videos (B, 3, F, H, W) in [-1, 1], or None on a rank that only helped

Three decoders: the full VAE (apt/models/vae.py), the VAE in overlapping spatial tiles dealt to the
ranks (`TiledVAE`: for memory, or split over GPUs under torchrun), and the distilled fast decoder
(apt/models/fast_decoder.py). This module imports no torch: commands parse `--vae-tiles` with it.
"""

from __future__ import annotations

from typing import Protocol

KINDS = ("vae", "fast")


class Decoder(Protocol):
    spatial_factor: int

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]: ...

    def decode(self, latents): ...


class TiledVAE:
    """The VAE decoding rows x cols overlapping tiles (VideoVAE.decode_tiles: equal to diffusers' tiled
    decode); with world > 1 the tiles are dealt to the ranks and rank 0 gets the video, the others None."""

    def __init__(self, vae, rows: int, cols: int, overlap: int = 8, rank: int = 0, world: int = 1):
        self.vae, self.rows, self.cols, self.overlap, self.rank, self.world = vae, rows, cols, overlap, rank, world
        self.spatial_factor = vae.spatial_factor

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return self.vae.latent_shape(frames, height, width)

    def decode(self, latents):
        return self.vae.decode_tiles(latents, self.rows, self.cols, overlap=self.overlap, rank=self.rank,
                                     world_size=self.world)


def parse_tiles(text: str) -> tuple[int, int]:
    from apt.core.config import ConfigError

    rows, sep, cols = text.lower().partition("x")
    if not (sep and rows.isdigit() and cols.isdigit() and int(rows) >= 1 and int(cols) >= 1):
        raise ConfigError(f"vae_tiles takes ROWSxCOLS (e.g. 2x4), off or auto, got {text!r}")
    return int(rows), int(cols)


def tile_grid(setting: str, world_size: int) -> tuple[int, int] | None:
    """(rows, cols) of the VAE tiles, or None for an untiled decode. auto: one tile per rank
    (apt.models.vae.rank_tile_grid), none in one process."""
    if setting == "off" or (setting == "auto" and world_size == 1):
        return None
    if setting != "auto":
        return parse_tiles(setting)
    from apt.models.vae import rank_tile_grid

    return rank_tile_grid(world_size)


def make_decoder(components, kind: str = "vae", tiles: tuple[int, int] | None = None, overlap: int = 8,
                 rank: int = 0, world: int = 1) -> Decoder:
    """'vae' (in tiles when `tiles` is (rows, cols)) or 'fast' (the components must carry it)."""
    if kind not in KINDS:
        raise ValueError(f"decoder must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "fast":
        if components.fast_decoder is None:
            raise ValueError("decoder 'fast' needs the model's fast decoder (fast_decoder/, apt-train-decoder)")
        return components.fast_decoder
    if components.vae is None:
        raise ValueError("decoder 'vae' needs the model's VAE")
    return TiledVAE(components.vae, *tiles, overlap=overlap, rank=rank, world=world) if tiles else components.vae
