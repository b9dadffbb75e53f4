"""Stage 1 entry: consistency distillation of a Wan teacher into a one-step generator.

    python scripts/distill.py --config configs/toy/distill.yaml [key=value ...]
    torchrun --nproc_per_node 2 scripts/distill.py --config configs/toy/distill.yaml train.steps=100
"""

from __future__ import annotations

from pathlib import Path

from apt.config import config_arg_parser, dump_config, load_config
from apt.data.latents import build_training_dataset
from apt.distributed import init_distributed, shutdown_distributed
from apt.harness import Harness
from apt.loading import load_components, resolve_model_dir
from apt.samples import SampleWriter
from distill.config import DistillConfig
from distill.stage import ConsistencyDistillation


def main(argv=None) -> dict:
    args = config_arg_parser(__doc__).parse_args(argv)
    cfg = load_config(DistillConfig, args.config, args.overrides)
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
        negative = comps.text.encode([cfg.cd.negative_prompt])
        stage = ConsistencyDistillation(cfg, dist, comps.transformer, negative, samples)
        comps.text = None  # all prompts are embedded: free the text encoder
        summary = Harness(cfg.train, dist, dataset, stage).run()
    finally:
        shutdown_distributed()
    return summary
