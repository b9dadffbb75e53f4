"""Stage 2 entry: adversarial post-training of the one-step generator.

    python scripts/train_apt.py --config configs/toy/apt.yaml adv.generator_init=runs/toy-distill
    torchrun --nproc_per_node 2 scripts/train_apt.py --config configs/toy/apt.yaml adv.generator_init=runs/toy-distill
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from apt.adversarial import AdversarialPostTraining
from apt.adversarial_config import APTConfig
from apt.backbone import WanBackbone
from apt.checkpoint import latest_checkpoint, load_model_from_checkpoint
from apt.config import config_arg_parser, dump_config, load_config
from apt.data.latents import build_training_dataset
from apt.distributed import init_distributed, shutdown_distributed
from apt.harness import Harness
from apt.loading import load_components, resolve_model_dir
from apt.samples import SampleWriter


def initial_generator(spec: str, teacher: WanBackbone) -> WanBackbone:
    """The stage-1 EMA generator (run dir or checkpoint dir), loaded before any sharding."""
    backbone = WanBackbone(copy.deepcopy(teacher.model))
    if spec == "teacher":
        return backbone
    path = Path(spec)
    checkpoint = path if (path / "meta.json").exists() else latest_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(f"adv.generator_init={spec}: no stage-1 checkpoint there")
    load_model_from_checkpoint(checkpoint, "ema", backbone)
    return backbone


def main(argv=None) -> dict:
    args = config_arg_parser(__doc__).parse_args(argv)
    cfg = load_config(APTConfig, args.config, args.overrides)
    dist = init_distributed()
    try:
        out_dir = Path(cfg.train.out_dir)
        if dist.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, out_dir / "config.yaml")
        model_dir = resolve_model_dir(cfg.model.path)
        comps = load_components(model_dir)
        dataset = build_training_dataset(cfg.data, comps, model_dir, dist)
        samples = SampleWriter.for_run(cfg.sampling, comps, tuple(dataset[0]["latent"].shape), dist.rank)
        generator = initial_generator(cfg.adv.generator_init, comps.transformer)
        # the discriminator's new heads are randomly initialised: the same on every rank and every run
        torch.manual_seed(cfg.train.seed)
        stage = AdversarialPostTraining(cfg, dist, comps.transformer, generator, samples)
        comps.text = None
        summary = Harness(cfg.train, dist, dataset, stage).run()
    finally:
        shutdown_distributed()
    return summary
