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
    from apt.distributed import init_distributed, shutdown_distributed
    from apt.harness import Harness
    from apt.loading import load_components
    from apt.model_folder import resolve_model_dir
    from apt.previews import SampleWriter

    dist = init_distributed()
    lock = None
    try:
        cfg.train.grad_accum(dist.world_size)  # a global batch the ranks cannot make fails here, not at step 1
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
        return Harness(cfg.train, dist, dataset, stage).run()
    finally:
        if lock is not None:
            lock.close()
        shutdown_distributed()


def claim_run_folder(cfg, dist):
    """Rank 0 locks the run folder, clears what a crash left half-written, checks a resume against the
    run's config.yaml and writes the config; every rank raises the same error if any of that fails.
    Returns the lock (rank 0; None elsewhere), held until the run ends."""
    import json

    import torch.distributed as torch_dist

    from apt.config import ConfigError, config_changes, dump_config
    from apt.run_folder import CONFIG, clear_partial_writes, latest_checkpoint, lock_run_folder, run_of

    out_dir, train = Path(cfg.train.out_dir), cfg.train
    lock, error = None, None
    if dist.rank == 0:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            lock = lock_run_folder(out_dir)
            clear_partial_writes(out_dir)
            resume_from = (None if train.resume == "never" else
                           latest_checkpoint(out_dir) if train.resume == "auto" else Path(train.resume))
            saved = out_dir / CONFIG
            if resume_from is not None and not saved.exists():
                saved = run_of(resume_from) / CONFIG
            changes = config_changes(saved, cfg) if resume_from is not None and saved.exists() else {}
            if changes and not train.allow_config_change:
                listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
                raise ConfigError(f"resuming {resume_from} with settings that differ from {saved}: {listed}. "
                                  f"Put them back, start a new train.out_dir, or pass "
                                  f"train.allow_config_change=true to apply them from here on")
            if changes:
                with (out_dir / "config_changes.jsonl").open("a") as f:
                    f.write(json.dumps({"resumed_from": str(resume_from),
                                        "changes": {k: list(v) for k, v in changes.items()}}) + "\n")
            dump_config(cfg, out_dir / CONFIG)
        except (ConfigError, FileExistsError, FileNotFoundError) as err:
            error = err
            if lock is not None:
                lock.close()
                lock = None
    if torch_dist.is_initialized() and dist.world_size > 1:
        shared = [error]
        torch_dist.broadcast_object_list(shared, src=0)
        error = shared[0]
    if error is not None:
        raise error
    return lock


def training_dataset(data_cfg, components, model_dir: Path, dist):
    """Both stages' data, from the source the config names: a shard set (checked against the model) or
    the toy world (encoded once and cached)."""
    if data_cfg.source == "shards":
        from apt.data.latents import open_shard_dataset

        return open_shard_dataset(data_cfg, components)
    from apt.toy.data import toy_training_dataset

    return toy_training_dataset(data_cfg, components, model_dir, dist)
