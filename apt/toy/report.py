"""build_report.json beside the shipped toy components: how each was trained, how long, final losses."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


def record(model_dir: Path, component: str, entry: dict) -> None:
    path = Path(model_dir) / "build_report.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    entry = dict(entry, torch=torch.__version__, cpu_threads=torch.get_num_threads(), machine=platform.machine())
    report[component] = entry
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
