"""What every training entry point does around its stage: config, process group, run folder,
models, data, sample writer, harness, and a clean shutdown."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from apt.config import config_arg_parser, dump_config, load_config
from apt.data.latents import build_training_dataset
from apt.distributed import init_distributed, shutdown_distributed
from apt.harness import Harness
from apt.loading import load_components, resolve_model_dir
from apt.samples import SampleWriter


def run_training(schema: type, doc: str, argv, build_stage: Callable) -> dict:
    """build_stage(cfg, dist, components, samples) -> stage; the text encoder and the teacher are
    released after it (a stage keeps its own reference to what it needs), so a stage embeds
    whatever prompts it needs while building."""
    args = config_arg_parser(doc).parse_args(argv)
    cfg = load_config(schema, args.config, args.overrides)
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
        stage = build_stage(cfg, dist, comps, samples)
        # Drop what the stage did not keep: the text encoder, and in stage 2 the teacher it copied
        # (for a 14B model, ~57 GB of fp32 host memory per rank).
        comps.text = comps.transformer = None
        return Harness(cfg.train, dist, dataset, stage).run()
    finally:
        shutdown_distributed()
