"""scripts/gpu_check.sh, the one GPU check, runs on CPU at tiny widths: every phase reports its seconds
and the planner's memory figure (peak memory is measured on GPUs only)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_every_phase_in_tiny_mode(tmp_path):
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--tiny", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    for phase in ("stage1_update", "stage2_update", "reward_update"):
        assert report[phase]["seconds_per_update"] > 0 and report[phase]["estimate_gib"] > 0, phase
        assert report[phase]["loss_finite"], phase
    assert report["reward_update"]["reward"] is not None
    for phase in ("dit_one_step", "vae_decode", "fast_decoder"):
        assert report["serving"][phase]["seconds"] > 0, phase
