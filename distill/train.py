"""Stage 1 entry: consistency distillation of a Wan teacher into a one-step generator.

    python scripts/distill.py --config configs/toy/distill.yaml [key=value ...]
    torchrun --nproc_per_node 2 scripts/distill.py --config configs/toy/distill.yaml train.steps=100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from apt.config import dump_config, load_config
from apt.data.latents import toy_latent_dataset
from apt.distributed import init_distributed, shutdown_distributed
from apt.harness import Harness
from apt.loading import load_components, resolve_model_dir
from apt.samples import SampleWriter
from distill.config import DistillConfig
from distill.stage import ConsistencyDistillation


def build_dataset(cfg: DistillConfig, comps, model_dir: Path, dist):
    """Rank 0 encodes the toy world (once, cached); the others then read the cache."""
    kwargs = dict(num_clips=cfg.data.num_clips, seed=cfg.data.seed, frames=cfg.data.frames,
                  cache_dir=cfg.data.cache_dir or None)
    if dist.rank == 0:
        data = toy_latent_dataset(comps, model_dir, **kwargs)
    if dist.world_size > 1:
        torch.distributed.barrier()
    if dist.rank != 0:
        data = toy_latent_dataset(comps, model_dir, show_progress=False, **kwargs)
    return data


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML config (e.g. configs/toy/distill.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=50 cd.lr=1e-4")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = load_config(DistillConfig, args.config, args.overrides)
    dist = init_distributed()
    try:
        out_dir = Path(cfg.train.out_dir)
        if dist.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, out_dir / "config.yaml")
        model_dir = resolve_model_dir(cfg.model.path)
        comps = load_components(model_dir)
        dataset = build_dataset(cfg, comps, model_dir, dist)
        latent_shape = tuple(dataset[0]["latent"].shape)
        samples = SampleWriter(cfg.sampling.prompts, comps.text.encode(cfg.sampling.prompts), latent_shape,
                               cfg.sampling.seed, vae=comps.vae if dist.rank == 0 else None, rank=dist.rank,
                               fps=cfg.sampling.fps, upscale=cfg.sampling.upscale)
        negative = comps.text.encode([cfg.cd.negative_prompt])
        stage = ConsistencyDistillation(cfg, dist, comps.transformer, negative, samples)
        comps.text = None  # all prompts are embedded: free the text encoder
        summary = Harness(cfg.train, dist, dataset, stage).run()
    finally:
        shutdown_distributed()
    return summary
