"""Videos + captions -> latent/text shards that both training stages read (data.source=shards).

    apt-preprocess --config configs/wan2.1-1.3b/preprocess-video.yaml --videos data/clips --captions data/clips.csv
    torchrun --nproc_per_node 8 scripts/preprocess.py --videos data/clips --captions data/clips.csv \\
        --model checkpoints/Wan2.1-T2V-1.3B-Diffusers --out data/shards/video-720p49 --frames 49 --height 720 --width 1280 --fps 24

The clip size must be the one the training config asks for (data.frames/height/width/fps); training
checks the shards against its config and model at start-up. Resumable: the same command continues.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from apt.core.command import console_script, run_command
from apt.core.config import ConfigError, option, parse_command

STORAGE_DTYPES = ("bf16", "fp16", "fp32")


@dataclass
class PreprocessConfig:
    videos: str = option("", "root folder of the videos (mp4/webm/mov/mkv/avi) and images (required)")
    out: str = option("", "shard set folder to write (required)")
    model: str = option("toy", "diffusers-layout folder whose vae/ and text_encoder/ encode ('toy' = shipped)")
    captions: str = option("", "CSV (path,caption) or JSONL; default: a <name>.txt beside each file")
    frames: int = option(49, "clip length in frames (1 = images)")
    height: int = option(720, "clip height in pixels")
    width: int = option(1280, "clip width in pixels")
    fps: float = option(24.0, "clips are resampled to this frame rate by timestamp")
    shard_size: int = option(64, "items per shard: at most this much work is lost on a crash")
    batch_size: int = option(1, "clips per VAE call")
    workers: int = option(0, "decoding processes per rank (torch DataLoader workers)")
    storage_dtype: str = option("bf16", "latents and text embeddings on disk", choices=STORAGE_DTYPES)
    encoder_dtype: str = option("", "VAE and text encoder dtype; default bf16 on GPU, fp32 on CPU",
                                choices=STORAGE_DTYPES)
    retry_skipped: bool = option(False, "try files skipped by an earlier run again")
    clips_per_video: int = option(1, "clips cut from each video, as many as fit, from its start (long videos "
                                     "give several samples)")
    clip_stride: float = option(0.0, "seconds between the starts of a video's clips; 0 = the clip's length "
                                     "(back to back)")
    max_upscale: float = option(0.0, "skip a source that must be scaled up more than this to cover the clip "
                                     "size, with the reason in report.json; 0 = upscale any source")

    def validate(self):
        if not self.videos or not self.out:
            raise ConfigError("give videos (the folder of clips) and out (the shard folder to write)")
        if self.storage_dtype not in STORAGE_DTYPES or self.encoder_dtype not in ("", *STORAGE_DTYPES):
            raise ConfigError(f"storage_dtype and encoder_dtype must be one of {', '.join(STORAGE_DTYPES)}")
        if self.shard_size < 1 or self.batch_size < 1 or self.workers < 0:
            raise ConfigError("shard_size and batch_size must be >= 1, workers >= 0")
        for key in ("frames", "height", "width"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.fps <= 0:
            raise ConfigError(f"fps must be positive, got {self.fps}")
        if self.clips_per_video < 1:
            raise ConfigError(f"clips_per_video must be >= 1, got {self.clips_per_video}")
        if self.clip_stride < 0 or self.max_upscale < 0:
            raise ConfigError("clip_stride and max_upscale must be >= 0 (0 = back to back / no limit)")
        if 0 < self.max_upscale < 1:
            raise ConfigError(f"max_upscale must be >= 1 (or 0 = no limit), got {self.max_upscale}")


def run(cfg: PreprocessConfig) -> dict:
    from apt.data.preprocess import preprocess
    from apt.training.distributed import init_distributed, shutdown_distributed

    dist = init_distributed()
    try:
        report = preprocess(cfg, dist)
    finally:
        shutdown_distributed()
    if dist.rank == 0:
        summary = {k: report[k] for k in ("discovered", "encoded", "skipped", "skipped_by_reason")}
        print(json.dumps(summary), f"-> {Path(cfg.out) / 'index.json'}, report {Path(cfg.out) / 'report.json'}")
    return report


def main(argv=None) -> dict:
    return run_command(lambda: run(parse_command(PreprocessConfig, argv, __doc__, prog="apt-preprocess")))


cli = console_script(main, distributed=True)  # exits without interpreter teardown
