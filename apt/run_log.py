"""Rank-0 run log: one JSON object per line in <out_dir>/metrics.jsonl, flushed at every write."""

from __future__ import annotations

import json
import math
from pathlib import Path


class RunLog:
    def __init__(self, out_dir: str | Path, rank: int = 0, resume_step: int | None = None):
        self.rank = rank
        self.path = Path(out_dir) / "metrics.jsonl"
        if rank != 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # drop what was logged after the checkpoint we resume from: those steps run again
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def write(self, record: dict) -> None:
        if self.rank != 0:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
            f.flush()


def read_metrics(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
