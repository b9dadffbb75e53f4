"""What every training command does around its stage: config, process group, run folder, models,
data, preview writer, the trainer, and a clean shutdown."""

from __future__ import annotations

from typing import Callable

from apt.core.command import run_command
from apt.core.config import parse_command


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
    from apt.data.sources import training_dataset
    from apt.models.loading import load_components
    from apt.models.model_folder import resolve_model_dir
    from apt.training.distributed import init_distributed, shutdown_distributed
    from apt.training.previews import SampleWriter
    from apt.training.run_folder import claim_run_folder
    from apt.training.trainer import Trainer

    dist = init_distributed(cfg.parallel.context_parallel)
    lock = None
    try:
        trainer = Trainer(cfg.train, dist)  # a global batch the ranks cannot make fails here, not at step 1
        lock = claim_run_folder(cfg, dist)
        model_dir = resolve_model_dir(cfg.model.path)
        comps = load_components(model_dir)
        dataset = training_dataset(cfg.data, comps, model_dir, dist)
        previews = SampleWriter.for_run(cfg.preview, comps, tuple(dataset[0]["latent"].shape), dist.rank,
                                        gif=cfg.train.tensorboard)  # the GIF is what TensorBoard plays
        stage = build_stage(cfg, dist, comps, previews, dataset)
        # Drop what the stage did not keep: the text encoder, and in stage 2 the teacher it copied
        # (for a 14B model, ~57 GB of fp32 host memory per rank).
        comps.text = comps.transformer = None
        return trainer.run(stage, dataset)
    finally:
        if lock is not None:
            lock.close()
        shutdown_distributed()
