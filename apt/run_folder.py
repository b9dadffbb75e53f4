"""The run folder: what a training run writes, where, and how every other command reads it back.

    <run>/config.yaml          the resolved config; model.path names the teacher folder the run started from
         metrics.jsonl         one JSON object per logged step (written by apt/run_log.py)
         samples/step_*/       preview mp4s and grid.png at fixed prompts and seeds
         checkpoints/step_*/   DCP checkpoints (apt/checkpoint.py); checkpoints/latest names the newest
         tensorboard/          event files, when the tensorboard package is installed

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


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def samples_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / SAMPLES / f"step_{step:08d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's newest complete checkpoint; None for a fresh run."""
    from apt.checkpoint import latest_complete

    return latest_complete(checkpoints_dir(run_dir))


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A step directory as given, or a run directory's latest complete checkpoint."""
    from apt.checkpoint import is_complete

    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if is_complete(path):
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint in {path} (expected a step directory with meta.json, "
                                f"or a run directory with {CHECKPOINTS}/step_*/)")
    return found


def run_of(step_dir: str | Path) -> Path:
    """The run folder a step directory belongs to (<run>/checkpoints/step_*/)."""
    return Path(step_dir).parent.parent


def model_dir_of(step_dir: str | Path) -> Path | None:
    """The teacher folder a run started from (its config.yaml's model.path), if recorded."""
    from omegaconf import OmegaConf

    from apt.model_folder import resolve_model_dir

    config = run_of(step_dir) / CONFIG
    if not config.exists():
        return None
    path = OmegaConf.select(OmegaConf.load(config), "model.path")
    return resolve_model_dir(path) if path else None


def load_generator(checkpoint: str | Path, model_dir: str | Path | None = None, name: str = "ema"):
    """A stage-1/2 checkpoint's generator (EMA by default) as a plain, unsharded float32 OneStepGenerator.

    `checkpoint` is a step or run directory; the architecture comes from the teacher folder the run
    started from (`model_dir`, by default the run's config.yaml model.path).
    """
    from apt.backbone import WanBackbone
    from apt.checkpoint import checkpoint_model_names, load_model_from_checkpoint
    from apt.generator import OneStepGenerator

    path = resolve_checkpoint(checkpoint)
    names = checkpoint_model_names(path)
    if name not in names:
        raise ValueError(f"checkpoint {path} holds no model {name!r}; it holds {', '.join(sorted(names))}")
    if model_dir is None:
        model_dir = model_dir_of(path)
        if model_dir is None:
            raise ValueError(f"no teacher folder recorded for {path} (no run {CONFIG}): give the model folder")
    backbone = WanBackbone.from_pretrained(model_dir)
    load_model_from_checkpoint(path, name, backbone)
    return OneStepGenerator(backbone.eval().requires_grad_(False))


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
