"""A small latent-to-video decoder distilled from the VAE decoder (the TAEHV / LightTAE idea): the same
normalised latents in, the same clip shape out, a small fraction of the VAE decoder's work.

The Wan VAE decodes latent frame after latent frame with a causal cache through dozens of 3D
convolutions; at serving time that is most of a one-step generator's time. This decoder runs every
frame through 2D convolutions at once and mixes time only through the previous frame (each
`MemoryBlock` sees frame t and frame t-1), so it stays causal like the VAE: T latent frames become
1 + temporal_factor * (T - 1) frames, the first latent frame one frame, as in Wan's causal VAE.

A model folder may carry it as fast_decoder/ (config.json + model.safetensors + report.json), trained
by `apt-train-decoder` (apt/training/decoder_training.py); the shipped toy has one. The full VAE stays the
default for final output (`apt-generate --decoder vae`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from apt.core.files import save_safetensors

FOLDER = "fast_decoder"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "seaweed-apt-fast-decoder/1"


@dataclass
class FastDecoderConfig:
    z_dim: int  # latent channels (the VAE's z_dim)
    spatial_factor: int  # pixels per latent cell (the VAE's scale_factor_spatial), a power of 2, >= 2
    temporal_factor: int  # frames per latent frame after the first (scale_factor_temporal), a power of 2
    channels: tuple[int, ...] = (48, 16)  # width at the latent resolution, then after each 2x upsample
    blocks: int = 2  # memory blocks at each resolution

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        for name in ("spatial_factor", "temporal_factor"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"{name} must be a power of 2, got {v}")
        if self.spatial_factor < 2:
            raise ValueError(f"spatial_factor must be at least 2, got {self.spatial_factor}")
        # the last 2x upsample is the head's pixel shuffle: one width per resolution below the full one
        if len(self.channels) != self.resolutions:
            raise ValueError(f"channels needs one width per resolution below the full one: {self.resolutions} "
                             f"for spatial_factor {self.spatial_factor}, got {len(self.channels)}")
        if math.log2(self.temporal_factor) > self.resolutions:
            raise ValueError("the decoder doubles time once per resolution: temporal_factor must be <= "
                             f"spatial_factor / 2, got {self.temporal_factor} with spatial_factor "
                             f"{self.spatial_factor}")
        if self.z_dim < 1 or self.blocks < 0 or min(self.channels) < 1:
            raise ValueError("z_dim and channels must be positive, blocks >= 0")

    @property
    def resolutions(self) -> int:
        return int(math.log2(self.spatial_factor))


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class MemoryBlock(nn.Module):
    """Residual block over frame t and frame t-1 (zeros before the first frame): causal in time."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv3x3(2 * channels, channels), nn.ReLU(), conv3x3(channels, channels),
                                  nn.ReLU(), conv3x3(channels, channels))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x (B * frames, C, H, W), frames consecutive in each clip."""
        clips = x.unflatten(0, (-1, frames))
        previous = torch.cat([torch.zeros_like(clips[:, :1]), clips[:, :-1]], 1).flatten(0, 1)
        return torch.relu(x + self.body(torch.cat([x, previous], 1)))


class TimeGrow(nn.Module):
    """Each frame becomes `factor` consecutive frames (a 1x1 convolution makes their channels)."""

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.proj = nn.Conv2d(channels, channels * factor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return self.proj(x).reshape(n, self.factor, c, h, w).flatten(0, 1)


class FastDecoder(nn.Module):
    """Per resolution: memory blocks, then (at the first log2(temporal_factor) resolutions) time doubled,
    then a 2x nearest upsample and a convolution; the head writes the last 2x as a pixel shuffle, so
    no convolution runs at full size (most of the pixels, almost none of the work)."""

    def __init__(self, config: FastDecoderConfig):
        super().__init__()
        self.config = config
        ch = config.channels
        grows = int(math.log2(config.temporal_factor))
        self.stem = conv3x3(config.z_dim, ch[0])
        self.stages = nn.ModuleList()
        for i, width in enumerate(ch):
            stage = nn.Module()
            stage.blocks = nn.ModuleList(MemoryBlock(width) for _ in range(config.blocks))
            stage.grow = TimeGrow(width, 2) if i < grows else None
            last = i == len(ch) - 1
            stage.up = None if last else nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                       conv3x3(width, ch[i + 1]))
            self.stages.append(stage)
        self.head = conv3x3(ch[-1], 3 * 4)

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent of a clip (VideoVAE.latent_shape's contract, no VAE needed)."""
        from apt.models.vae import clip_latent_shape

        c = self.config
        return clip_latent_shape(frames, height, width, c.z_dim, c.temporal_factor, c.spatial_factor)

    @property
    def spatial_factor(self) -> int:
        return self.config.spatial_factor

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent (B, C, T, h, w) -> unclamped video (B, 3, 1 + tf (T - 1), h sf, w sf)."""
        if latent.ndim != 5 or latent.shape[1] != self.config.z_dim:
            raise ValueError(f"expected latents (B, {self.config.z_dim}, T, h, w), got {tuple(latent.shape)}")
        b, t = latent.shape[0], latent.shape[2]
        x = torch.relu(self.stem(rearrange(latent.to(self.dtype), "b c t h w -> (b t) c h w")))
        frames = t
        for stage in self.stages:
            for block in stage.blocks:
                x = block(x, frames)
            if stage.grow is not None:
                x, frames = stage.grow(x), frames * 2
            if stage.up is not None:
                x = torch.relu(stage.up(x))
        video = rearrange(torch.nn.functional.pixel_shuffle(self.head(x), 2), "(b t) c h w -> b c t h w", b=b)
        # the causal VAE decodes its first latent frame to one frame: keep the last of that frame's group
        return video[:, :, self.config.temporal_factor - 1 :]

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """The VideoVAE.decode contract: normalised latent -> video (B, 3, F, H, W) in [-1, 1], float32."""
        return self(latent).float().clamp(-1, 1)

    # -- files -------------------------------------------------------------------------------
    def save(self, folder: str | Path, report: dict | None = None) -> Path:

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}
        save_safetensors(state, folder / WEIGHTS, metadata={"format": FORMAT})
        (folder / CONFIG).write_text(json.dumps({"format": FORMAT, **asdict(self.config)}, indent=2) + "\n")
        if report is not None:
            (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, dtype: torch.dtype = torch.float32, device="cpu") -> "FastDecoder":
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
            raise FileNotFoundError(f"{folder} is not a fast decoder folder (needs {CONFIG} and {WEIGHTS}; "
                                    "train one with apt-train-decoder)")
        raw = json.loads((folder / CONFIG).read_text())
        if raw.pop("format", None) != FORMAT:
            raise ValueError(f"{folder / CONFIG} is not a {FORMAT} config")
        model = cls(FastDecoderConfig(**raw))
        model.load_state_dict(load_file(str(folder / WEIGHTS), device=str(device)))
        return model.to(device, dtype).eval().requires_grad_(False)


def find_fast_decoder(model_dir: str | Path, path: str | Path = "") -> Path:
    """`path` if given, else the model folder's fast_decoder/ (checked against the SHA-256s an export
    recorded); a missing one is named with the way to make it."""
    from apt.models.model_folder import verify_files

    folder = Path(path).expanduser() if path else Path(model_dir) / FOLDER
    if not (folder / CONFIG).is_file():
        where = f"--fast-decoder {folder}" if path else f"{Path(model_dir)} has no {FOLDER}/"
        raise FileNotFoundError(f"{where}: no fast decoder there; train one with apt-train-decoder "
                                f"(--model {model_dir} --out {Path(model_dir) / FOLDER}) or use --decoder vae")
    if not path:
        verify_files(model_dir, (FOLDER,))
    return folder


def config_for_vae(vae_config, channels: tuple[int, ...] | None = None, blocks: int = 2) -> FastDecoderConfig:
    """A decoder config matching a diffusers AutoencoderKLWan config (latent channels and factors).
    Default widths: (48, 16) for a 4x VAE (the toy's, measured in docs/experiments/2026-11-25-fast-serving.md), (128, 64, 32)
    for an 8x one (Wan 2.1). A patchified VAE (Wan 2.2 TI2V-5B's, 16x) needs nothing else: the decoder
    learns the VAE's pixels, whatever the VAE's own layout."""
    sf, tf = vae_config.scale_factor_spatial, vae_config.scale_factor_temporal
    if channels is None:
        resolutions = int(math.log2(sf)) if sf >= 2 else 1
        channels = {1: (48,), 2: (48, 16), 3: (128, 64, 32)}.get(resolutions, (128, 64) + (32,) * (resolutions - 2))
    return FastDecoderConfig(z_dim=vae_config.z_dim, spatial_factor=sf, temporal_factor=tf,
                             channels=tuple(channels), blocks=blocks)
