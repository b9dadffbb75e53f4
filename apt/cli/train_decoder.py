"""Train a fast decoder (a small latent-to-video decoder distilled from the model's VAE decoder) for
`apt-generate --decoder fast`: on your latent shards, or on toy-world latents.

    apt-train-decoder --data data/shards/video-720p49 --model checkpoints/Wan2.1-T2V-1.3B-Diffusers \\
        --crop 32 --out checkpoints/Wan2.1-T2V-1.3B-Diffusers/fast_decoder
    apt-train-decoder --data toy --out outputs/fast-decoder        # the shipped toy decoder's recipe

A model folder's fast_decoder/ is found by apt-generate and apt-evaluate and copied by apt-export;
elsewhere, pass --fast-decoder PATH. Resumable: the same command continues from <out>/train_state.pt.
Writes config.json, model.safetensors, report.json (PSNR against the VAE on held-out latents) and
losses.txt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from apt.command import console_script, run_command
from apt.config import ConfigError, option, parse_command

TOY_DATA_SEED = 7  # toy clips of their own (training stages use seed 0)
# The shipped toy decoder's settings (scripts/build_toy.py --component decoder; docs/fast-decoder.md)
TOY_RECIPE = dict(data="toy", steps=4000, latent_noise=0.5)


@dataclass
class TrainDecoderConfig:
    data: str = option("toy", "latent shard folder (apt-preprocess) or 'toy' (toy-world clips, encoded once)")
    model: str = option("toy", "diffusers-layout folder whose vae/ is distilled ('toy' = shipped)")
    out: str = option("outputs/fast-decoder", "folder to write")
    steps: int = option(6000, "optimiser steps")
    batch_size: int = option(16, "clips per step (and per VAE decode of the targets)")
    lr: float = option(2e-3, "AdamW learning rate (warm-up 100 steps, cosine decay)")
    clips: int = option(2048, "latents taken from the data (decoded once by the VAE as targets)")
    holdout: int = option(64, "of those, kept out of training for the report")
    crop: int = option(0, "cut each clip to one random window of CROP x CROP latent cells, decoded by the VAE "
                          "as is (what fits 720p in memory: 32 cells = 19 MB per 49-frame clip); 0 = whole clips")
    latent_noise: float = option(0.0, "> 0: also train on a noised copy of the latents (per-clip noise std "
                                      "uniform in [0, this]), decoded by the VAE too: robust to generated latents")
    channels: list[int] = option(help="a width per resolution below the full one, the flag repeated (--channels 64 "
                                      "--channels 24); default by the VAE's factor: 48,16 for 4x, 128,64,32 for 8x",
                                 default_factory=list)
    blocks: int = option(2, "memory blocks per resolution")
    seed: int = option(0, "initialisation and batch order")
    save_every: int = option(200, "steps between resumable states")
    device: str = option("", "cpu, cuda, ...; default: cuda if available")

    def validate(self):
        for key in ("steps", "batch_size", "clips", "save_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.holdout < 1 or self.crop < 0 or self.blocks < 0 or self.lr <= 0 or self.latent_noise < 0:
            raise ConfigError("holdout must be >= 1, crop, blocks and latent_noise >= 0, lr > 0")
        if any(c < 1 for c in self.channels):
            raise ConfigError(f"channels must be positive widths, got {self.channels}")


def load_latents(cfg: TrainDecoderConfig, components, model_dir: Path):
    """(latents (N, C, T, h, w) normalised, a description of where they came from)."""
    import torch

    if cfg.data == "toy":
        from apt.model_folder import native_sample
        from apt.toy.data import toy_latent_dataset

        frames = native_sample(model_dir)["frames"]
        data = toy_latent_dataset(components, model_dir, num_clips=cfg.clips, seed=TOY_DATA_SEED, frames=frames)
        return data.latents[: cfg.clips], f"toy world: {cfg.clips} clips (seed {TOY_DATA_SEED}, {frames} frames)"
    from apt.data.shards import ShardDataset

    shards = ShardDataset(cfg.data)
    n = min(cfg.clips, len(shards))
    if n < cfg.clips:
        print(f"{cfg.data} holds {len(shards)} items: using all of them")
    return torch.stack([shards[i]["latent"] for i in range(n)]), f"shards {cfg.data}: first {n} items"


def train(cfg: TrainDecoderConfig) -> dict:
    import torch

    from apt.distributed import set_cpu_threads
    from apt.loading import load_components
    from apt.model_folder import resolve_model_dir
    from apt.train_decoder import DecoderTraining, train_fast_decoder

    set_cpu_threads()
    model_dir = resolve_model_dir(cfg.model)
    parts = ("vae", "text_encoder", "tokenizer") if cfg.data == "toy" else ("vae",)
    components = load_components(model_dir, parts=parts)
    latents, source = load_latents(cfg, components, model_dir)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    components.vae.to(device)
    if len(latents) <= cfg.holdout + cfg.batch_size:
        raise ConfigError(f"{len(latents)} latents are too few: need more than holdout + batch_size "
                          f"({cfg.holdout} + {cfg.batch_size})")
    training = DecoderTraining(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, clips=len(latents),
                               holdout=cfg.holdout, crop=cfg.crop, latent_noise=cfg.latent_noise, seed=cfg.seed,
                               save_every=cfg.save_every, channels=tuple(cfg.channels) or None, blocks=cfg.blocks)
    report = train_fast_decoder(components.vae, latents.to(device), cfg.out, training, source=source,
                                device=device)
    print(json.dumps(report, indent=2))
    return report


def main(argv=None) -> dict:
    return run_command(lambda: train(parse_command(TrainDecoderConfig, argv, __doc__, prog="apt-train-decoder")))


cli = console_script(main)
