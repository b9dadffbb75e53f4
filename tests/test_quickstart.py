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


def test_a_bad_override_fails_before_any_stage_runs(tmp_path, capsys):
    from apt.cli.quickstart import main

    for flag, override, message in (("--cd", "train.stepz=3", "--cd: train.stepz: Key 'stepz' not in"),
                                    ("--reward", "adv.lr_generator=-1", "--reward: adv.lr_generator must be positive")):
        with pytest.raises(SystemExit) as exit_status:
            main(["--out", str(tmp_path / "qs"), flag, override])
        assert exit_status.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err  # one line
    assert not (tmp_path / "qs").exists()


def test_a_stage_s_own_error_line_is_shown_once_without_torchrun_s_report(capfd):
    from apt.toy.quickstart import forward_output

    stage = ("import sys; sys.stderr.write('stage 1%\\rstage 50%\\r'); sys.stderr.flush(); "
             "sys.stderr.write('error: data.path: no index.json\\n'); "
             "sys.stderr.write('Traceback (most recent call last):\\n  ChildFailedError report\\n'); sys.exit(1)")
    status, error = forward_output([sys.executable, "-c", stage])
    assert (status, error) == (1, "error: data.path: no index.json")
    shown = capfd.readouterr().err
    assert "stage 50%" in shown and "error:" not in shown and "ChildFailedError" not in shown
    status, error = forward_output([sys.executable, "-c", "import sys; sys.stderr.write('a real bug\\n'); sys.exit(3)"])
    assert (status, error) == (3, None) and "a real bug" in capfd.readouterr().err  # tracebacks of bugs stay
