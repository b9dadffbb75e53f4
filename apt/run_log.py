"""Rank-0 run log: one JSON object per line in <out_dir>/metrics.jsonl, flushed at every write
(a crash loses nothing already logged), and messages printed without breaking the progress bar."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm import tqdm


class RunLog:
    """resume_step=None starts a fresh file; an int keeps the lines up to that step (resume)."""

    def __init__(self, out_dir: str | Path, rank: int = 0, resume_step: int | None = None):
        self.rank = rank
        self.path = Path(out_dir) / "metrics.jsonl"
        if rank != 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # drop what was logged after the checkpoint we resume from (those steps run again) and
            # a line cut short by a crash; replace the file in one rename
            kept = [r for r in _parse(self.path.read_text()) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            tmp.replace(self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def write(self, record: dict) -> None:
        if self.rank != 0:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
            f.flush()

    def message(self, text: str) -> None:
        if self.rank == 0:
            tqdm.write(text)  # prints above a running tqdm bar instead of through it


def _parse(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # blank, or cut short by a crash
    return records


def read_metrics(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / "metrics.jsonl"
    return _parse(path.read_text()) if path.exists() else []
