"""What every training entry point does around its stage: config, process group, run folder,
models, data, preview writer, harness, and a clean shutdown."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from apt.command import run_command
from apt.config import parse_command


def run_training(schema: type, doc: str, argv, build_stage: Callable, prog: str,
                 preflight: Callable | None = None) -> dict:
    """build_stage(cfg, dist, components, previews, dataset) -> stage; the text encoder and the teacher are
    released after it (a stage keeps its own reference to what it needs), so a stage embeds
    whatever prompts it needs while building. The config is parsed and checked (and `preflight(cfg)`
    checks what it names on disk) before anything heavy is imported or loaded."""

    def checked():
        cfg = parse_command(schema, argv, doc, flags=False, prog=prog)
        if preflight is not None:
            preflight(cfg)
        return cfg

    cfg = run_command(checked)
    return run_command(lambda: _train(cfg, build_stage))


def _train(cfg, build_stage: Callable) -> dict:
    from apt.config import dump_config
    from apt.distributed import init_distributed, shutdown_distributed
    from apt.harness import Harness
    from apt.loading import load_components
    from apt.model_folder import resolve_model_dir
    from apt.previews import SampleWriter
    from apt.run_folder import CONFIG

    dist = init_distributed()
    try:
        cfg.train.grad_accum(dist.world_size)  # a global batch the ranks cannot make fails here, not at step 1
        out_dir = Path(cfg.train.out_dir)
        if dist.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, out_dir / CONFIG)
        model_dir = resolve_model_dir(cfg.model.path)
        comps = load_components(model_dir)
        dataset = training_dataset(cfg.data, comps, model_dir, dist)
        previews = SampleWriter.for_run(cfg.preview, comps, tuple(dataset[0]["latent"].shape), dist.rank)
        stage = build_stage(cfg, dist, comps, previews, dataset)
        # Drop what the stage did not keep: the text encoder, and in stage 2 the teacher it copied
        # (for a 14B model, ~57 GB of fp32 host memory per rank).
        comps.text = comps.transformer = None
        return Harness(cfg.train, dist, dataset, stage).run()
    finally:
        shutdown_distributed()


def training_dataset(data_cfg, components, model_dir: Path, dist):
    """Both stages' data, from the source the config names: a shard set (checked against the model) or
    the toy world (encoded once and cached)."""
    if data_cfg.source == "shards":
        from apt.data.latents import open_shard_dataset

        return open_shard_dataset(data_cfg, components)
    from apt.toy.data import toy_training_dataset

    return toy_training_dataset(data_cfg, components, model_dir, dist)
