"""The README's first command, shortened: CD -> APT -> reward -> evaluation on the toy world writes its report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_runs_both_stages_and_writes_the_table_grid_and_curves(tmp_path):
    out = tmp_path / "qs"
    tiny = ["data.num_clips=64", "train.micro_batch_size=8", "train.global_batch_size=0", "train.steps=2"]
    cmd = [sys.executable, str(ROOT / "scripts" / "quickstart.py"), "--nproc", "1", "--out", str(out),
           "--cd", *tiny, "--apt", *tiny, "--reward", *tiny, "--n", "8"]
    env = dict(os.environ, OMP_NUM_THREADS="1", APT_CACHE_DIR=str(tmp_path / "cache"))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    for name in ("table.md", "metrics.json", "grid.png", "losses.png", "timings.json"):
        assert (out / name).stat().st_size > 0, name
    models = json.loads((out / "metrics.json").read_text())["models"]
    assert {"teacher 25-step", "CD 1-step", "APT 1-step", "APT 2-step", "APT+reward 1-step"} <= set(models)
    for row in models.values():
        assert 0.0 <= row["all"] <= 1.0 and row["frechet_distance"] >= 0
    assert "| APT 1-step |" in res.stdout
    # a second call resumes: both stages are already at their last step, nothing trains again
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "resumed from" in again.stdout + again.stderr
