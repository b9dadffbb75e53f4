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

from dataclasses import dataclass

from apt.core.command import console_script, run_command
from apt.core.config import ConfigError, option, parse_command

# The shipped toy decoder's settings (scripts/build_toy.py --component decoder; docs/experiments/2026-11-25-fast-serving.md)
TOY_RECIPE = dict(data="toy", steps=4000, latent_noise=0.5)


@dataclass
class TrainDecoderConfig:
    data: str = option("toy", "latent shard folder (apt-preprocess), or a data source that makes clips ('toy': the "
                              "toy world's, encoded once)")
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
    data_seed: int = option(7, "a data source's clips (toy): 7 = clips the training stages (seed 0) never see")
    save_every: int = option(200, "steps between resumable states")
    device: str = option("", "cpu, cuda, ...; default: cuda if available")
    overwrite: bool = option(False, "replace a trained fast decoder in --out (otherwise the command stops)")

    def validate(self):
        for key in ("steps", "batch_size", "clips", "save_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.holdout < 1 or self.crop < 0 or self.blocks < 0 or self.lr <= 0 or self.latent_noise < 0:
            raise ConfigError("holdout must be >= 1, crop, blocks and latent_noise >= 0, lr > 0")
        if any(c < 1 for c in self.channels):
            raise ConfigError(f"channels must be positive widths, got {self.channels}")


def main(argv=None) -> dict:
    def command():
        cfg = parse_command(TrainDecoderConfig, argv, __doc__, prog="apt-train-decoder")
        from apt.training.decoder_training import train  # torch: once the options are known to be right

        return train(cfg)

    return run_command(command)


cli = console_script(main)
