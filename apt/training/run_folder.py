"""The run folder: what a training run writes, where, and how every other command reads it back.

    <run>/config.yaml          the resolved config; model.path names the teacher folder the run started from
         metrics.jsonl         one JSON object per logged step (written by apt/training/run_log.py)
         samples/step_*/       preview mp4s and grid.png at fixed prompts and seeds
         checkpoints/step_*/   DCP checkpoints (apt/training/checkpoint.py); checkpoints/latest names the newest
         tensorboard/          event files, when the tensorboard package is installed
         .lock                 held (flock) by the run training in the folder: pid, host, start time

Commands take a run folder or one of its step folders wherever they take a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SAMPLES = "samples"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
LOCK = ".lock"
MARKER = ".seaweed-apt-run"  # written into every run folder: training may clear and rewrite its files


class RunFolderBusy(FileExistsError):
    """Another process trains in this run folder."""


def lock_run_folder(run_dir: str | Path, option: str = "train.out_dir"):
    """Hold an exclusive lock on the run folder for this process's lifetime (the returned file; close it
    to release). A second run on the same folder would interleave metrics and race on checkpoints, so
    it stops here, naming the holder. flock is released by the kernel when the holder dies, so a killed
    run never leaves a stale lock."""
    import fcntl
    import os
    import socket
    from datetime import datetime, timezone

    path = Path(run_dir) / LOCK
    if path.is_symlink():  # a lock file is the run's own: never one pointing elsewhere
        path.unlink()
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown process"
        handle.close()
        raise RunFolderBusy(f"{run_dir} is in use by another run ({holder}); wait for it, stop it, "
                            f"or choose another {option}") from None
    handle.seek(0)
    handle.truncate()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
    handle.flush()
    return handle


def is_run_folder(run_dir: str | Path) -> bool:
    """A folder training may write into: missing, empty, marked as a run's, or a run of a version that
    wrote no marker (a config.yaml with train and model sections beside checkpoints/)."""
    run_dir = Path(run_dir)
    if not run_dir.exists() or not [p for p in run_dir.iterdir() if p.name != LOCK] or (run_dir / MARKER).is_file():
        return True
    if not (run_dir / CHECKPOINTS).is_dir() or not (run_dir / CONFIG).is_file():
        return False
    try:
        from omegaconf import OmegaConf

        saved = OmegaConf.load(run_dir / CONFIG)
    except Exception:
        return False
    return all(key in saved for key in ("model", "train"))


def check_run_folder(run_dir: str | Path) -> None:
    """Refuse to train into a folder that holds other things than a run: training clears temporary
    files and TensorBoard events and rewrites config.yaml and metrics.jsonl in its folder."""
    if not is_run_folder(run_dir):
        listed = ", ".join(sorted(p.name for p in Path(run_dir).iterdir())[:5])
        raise FileExistsError(f"train.out_dir={run_dir} holds files that are not a seaweed-apt run ({listed}): "
                              "training would clear and rewrite some of them; choose another train.out_dir")


def clear_partial_writes(run_dir: str | Path) -> list[Path]:
    """Delete what a crash (or a full disk) left half-written: temporary checkpoint folders and the
    temporary files of atomic rewrites. Only complete files and folders are ever renamed into place,
    so nothing here is anything a run can use. Returns what was removed."""
    import shutil

    run_dir = Path(run_dir)
    # pathlib's "*" matches names starting with a dot too (.config.yaml.tmp)
    stale = sorted({*checkpoints_dir(run_dir).glob(".tmp_step_*"), *run_dir.glob("*.tmp"),
                    *checkpoints_dir(run_dir).glob("*.tmp")})
    for path in stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return stale


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def samples_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / SAMPLES / f"step_{step:08d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's newest complete checkpoint; None for a fresh run."""
    from apt.training.checkpoint import latest_complete

    return latest_complete(checkpoints_dir(run_dir))


def resolve_checkpoint(checkpoint: str | Path, verify: bool = False) -> Path:
    """A step directory as given, or a run directory's latest complete checkpoint. verify=True checks it
    (apt.training.checkpoint.verify_checkpoint) and, for a run directory, falls back to its newest intact
    checkpoint, saying so on stderr, as a resumed training run does."""
    import sys

    from apt.training.checkpoint import CorruptCheckpoint, is_complete, verify_checkpoint

    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if is_complete(path):
        if verify:
            verify_checkpoint(path)
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint in {path} (expected a step directory with meta.json, "
                                f"or a run directory with {CHECKPOINTS}/step_*/)")
    if not verify:
        return found
    candidates = [found, *sorted((p for p in checkpoints_dir(path).glob("step_*") if is_complete(p)
                                  and p.name < found.name), reverse=True)]
    for i, candidate in enumerate(candidates):
        try:
            verify_checkpoint(candidate)
            return candidate
        except CorruptCheckpoint as err:
            if i + 1 == len(candidates):
                raise
            print(f"note: {err}: using {candidates[i + 1]} instead", file=sys.stderr)
    return found


def run_of(step_dir: str | Path) -> Path:
    """The run folder a step directory belongs to (<run>/checkpoints/step_*/)."""
    return Path(step_dir).parent.parent


def model_dir_of(step_dir: str | Path) -> Path | None:
    """The teacher folder a run started from (its config.yaml's model.path), if recorded."""
    from omegaconf import OmegaConf

    from apt.models.model_folder import resolve_model_dir

    config = run_of(step_dir) / CONFIG
    if not config.exists():
        return None
    path = OmegaConf.select(OmegaConf.load(config), "model.path")
    return resolve_model_dir(path) if path else None


# The trained weights behind a checkpoint's EMA: stage 2's generator, stage 1's student.
RAW_MODEL_NAMES = ("generator", "student")


def load_generator(checkpoint: str | Path, model_dir: str | Path | None = None, name: str = "ema",
                   merge_lora: bool = True):
    """A stage-1/2 checkpoint's generator (EMA by default) as a plain, unsharded float32 OneStepGenerator.
    name: a model the checkpoint holds, or 'raw' for its trained weights without the EMA (whichever of
    RAW_MODEL_NAMES it holds).

    `checkpoint` is a step or run directory; the architecture comes from the teacher folder the run
    started from (`model_dir`, by default the run's config.yaml model.path). An export folder (apt-export,
    safetensors) works too: the way weights should travel, since a DCP checkpoint's metadata is a
    pickle that runs code when read (load DCP run folders from trusted sources only).
    A LoRA run's model is its base with the adapter folded in (merge_lora=False: the adapter kept apart,
    trainable, for a stage that continues it or an export of the adapter alone).
    """
    from apt.models.backbone import WanBackbone
    from apt.models.generator import OneStepGenerator
    from apt.models.model_folder import is_one_step
    from apt.training.checkpoint import checkpoint_model_names, load_model_from_checkpoint
    from apt.training.lora_weights import checkpoint_lora

    if is_one_step(checkpoint):
        if name == "raw":
            raise ValueError(f"{checkpoint} is an export: it holds one set of weights (its manifest names which); "
                             "give the run or step folder it was exported from for its weights without the EMA")
        from apt.models.model_folder import verify_files

        verify_files(checkpoint, ("transformer",))
        return OneStepGenerator(WanBackbone.from_pretrained(checkpoint).float().eval().requires_grad_(False))
    path = resolve_checkpoint(checkpoint, verify=True)
    names = checkpoint_model_names(path)
    if name == "raw":
        name = next((n for n in RAW_MODEL_NAMES if n in names), name)
    if name not in names:
        raise ValueError(f"checkpoint {path} holds no model {name!r}; it holds {', '.join(sorted(names))}")
    if model_dir is None:
        model_dir = model_dir_of(path)
        if model_dir is None:
            raise ValueError(f"no teacher folder recorded for {path} (no run {CONFIG}): give the model folder")
    record = checkpoint_lora(path).get(name)
    if record:
        backbone = adapter_generator(path, name, record, Path(model_dir), merge=merge_lora)
        return OneStepGenerator(backbone.eval().requires_grad_(False))
    backbone = WanBackbone.empty_from_config(model_dir)  # the checkpoint fills every parameter
    load_model_from_checkpoint(path, name, backbone, verify=False)  # resolve_checkpoint verified it
    return OneStepGenerator(backbone.eval().requires_grad_(False))


def adapter_generator(path: Path, name: str, record: dict, model_dir: Path, merge: bool = True):
    """The WanBackbone of checkpoint `path`'s LoRA model `name`: its base's weights with the adapter loaded
    (and folded in, with merge)."""
    from apt.models.backbone import WanBackbone
    from apt.models.lora import add_lora, merged
    from apt.training.checkpoint import load_model_from_checkpoint
    from apt.training.lora_weights import TEACHER

    base = record.get("base", TEACHER)
    if base == TEACHER:
        backbone = WanBackbone.from_pretrained(model_dir)
    else:
        if not Path(base).exists():
            raise FileNotFoundError(f"{path} holds a LoRA adapter of {base}, which is gone: the adapter needs its base")
        backbone = load_generator(base, model_dir).backbone.requires_grad_(True)
    add_lora(backbone, {k: record[k] for k in ("rank", "alpha", "targets")})
    backbone.lora_base = base
    load_model_from_checkpoint(path, name, backbone, verify=False)  # the caller verified the checkpoint
    return merged(backbone) if merge else backbone


def parse_metrics(text: str) -> list[dict]:
    """metrics.jsonl's records; blank lines and a last line cut short by a crash are skipped."""
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    return parse_metrics(path.read_text()) if path.exists() else []


def claim_run_folder(cfg, dist):
    """Rank 0 locks the run folder, clears what a crash left half-written, checks a resume against the
    run's config.yaml and writes the config; every rank raises the same error if any of that fails.
    Returns the lock (rank 0; None elsewhere), held until the run ends."""
    from apt.core.collectives import broadcast_object
    from apt.core.config import ConfigError, dump_config
    from apt.core.files import append_text
    from apt.training.config import config_changes

    out_dir, train = Path(cfg.train.out_dir), cfg.train
    lock, error = None, None
    if dist.rank == 0:
        try:
            check_run_folder(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            lock = lock_run_folder(out_dir)
            (out_dir / MARKER).touch()
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
                append_text(out_dir / "config_changes.jsonl", json.dumps(
                    {"resumed_from": str(resume_from), "changes": {k: list(v) for k, v in changes.items()}}) + "\n")
            dump_config(cfg, out_dir / CONFIG)
        except (ConfigError, FileExistsError, FileNotFoundError) as err:
            error = err
            if lock is not None:
                lock.close()
                lock = None
    error = broadcast_object(error, src=0)
    if error is not None:
        raise error
    return lock
