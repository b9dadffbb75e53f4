"""What happens when things go wrong: NaN, a second run on the same folder, a resume with other
settings, a corrupt or half-written checkpoint, a full disk, corrupt data.

The training runs are the trainer fixture (tests/trainer_fixture.py) in a world of one, in a
subprocess, as in test_trainer.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import ENV, TESTS, fixture_run

from apt.core.config import ConfigError, dump_config, load_config
from apt.training.config import config_changes
from apt.training.run_folder import RunFolderBusy, clear_partial_writes, lock_run_folder, read_metrics


def losses(out_dir: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(out_dir) if "loss" in m}


# -- NaN -------------------------------------------------------------------------------------------

def test_a_non_finite_loss_stops_the_run_before_anything_is_saved(tmp_path):
    run = tmp_path / "run"
    fixture_run(run, "train.steps=2")  # a good checkpoint at step 2
    log = fixture_run(run, "train.steps=6", "train.checkpoint_every=1", "train.allow_config_change=true",
                      "lr=1e10", expect_rc=1)
    # lr 1e10: the weights leave any trained scale (or turn non-finite) at step 3, the losses after
    assert "NonFiniteError" in log and "not finite" in log and "the last good checkpoint is" in log
    steps = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    # step 3's update made the weights inf: nothing past the last finite state was written
    for name in steps:
        meta = json.loads((run / "checkpoints" / name / "meta.json").read_text())
        assert meta["step"] <= 3, steps
    assert "not finite" in read_metrics(run)[-1]["error"]


# -- two runs on one folder ------------------------------------------------------------------------

def test_a_run_folder_is_locked_by_its_run_and_freed_when_it_ends(tmp_path):
    held = lock_run_folder(tmp_path)
    with pytest.raises(RunFolderBusy, match=rf"in use by another run \(pid {os.getpid()} on .*, started "):
        lock_run_folder(tmp_path)
    log = fixture_run(tmp_path, "train.steps=1", expect_rc=2)  # a second process: one line, exit 2
    assert f"in use by another run (pid {os.getpid()}" in log and "Traceback" not in log
    assert not (tmp_path / "metrics.jsonl").exists()
    held.close()
    lock_run_folder(tmp_path).close()  # released
    fixture_run(tmp_path, "train.steps=1")


# -- resume with other settings --------------------------------------------------------------------

def test_config_changes_lists_what_differs_except_schedule_keys(tmp_path):
    from trainer_fixture import FixtureConfig

    saved = load_config(FixtureConfig, None, ["lr=0.001", "train.micro_batch_size=2"])
    dump_config(saved, tmp_path / "config.yaml")
    now = load_config(FixtureConfig, None, ["lr=0.0005", "train.micro_batch_size=1", "train.steps=50",
                                            "train.checkpoint_every=7"])
    assert config_changes(tmp_path / "config.yaml", now) == {"lr": (0.001, 0.0005),
                                                             "train.micro_batch_size": (2, 1)}


def test_resume_with_changed_settings_is_refused_or_applied_and_recorded(tmp_path):
    run = tmp_path / "run"
    fixture_run(run, "train.steps=2")
    config_before = (run / "config.yaml").read_text()
    log = fixture_run(run, "train.steps=4", "lr=0.0005", expect_rc=2)
    assert "lr: 0.001 -> 0.0005" in log and "train.allow_config_change=true" in log
    assert (run / "config.yaml").read_text() == config_before  # still true to the checkpoints
    assert max(losses(run)) == 2

    fixture_run(run, "train.steps=4", "lr=0.0005", "train.allow_config_change=true")
    assert "lr: 0.0005" in (run / "config.yaml").read_text()
    record = json.loads((run / "config_changes.jsonl").read_text())
    assert record["changes"] == {"lr": [0.001, 0.0005]} and record["resumed_from"].endswith("step_00000002")
    # the optimiser really ran at the new rate: steps 3-4 match a run resumed at 5e-4 from the same state
    other = tmp_path / "other"
    fixture_run(other, "train.steps=4", "lr=0.0005", f"train.resume={run / 'checkpoints' / 'step_00000002'}")
    assert losses(other) == {3: losses(run)[3], 4: losses(run)[4]}
    fixture_run(tmp_path / "lr3", "train.steps=4", f"train.resume={run / 'checkpoints' / 'step_00000002'}",
                "lr=0.001", "train.allow_config_change=true")
    assert losses(tmp_path / "lr3")[4] != losses(run)[4]


# -- corrupt checkpoints, full disk, leftovers ------------------------------------------------------

def test_a_truncated_shard_is_named_and_auto_resume_falls_back_to_an_intact_checkpoint(tmp_path):
    straight, run = tmp_path / "straight", tmp_path / "run"
    fixture_run(straight, "train.steps=6", "train.keep_checkpoints=3")
    fixture_run(run, "train.steps=4", "train.keep_checkpoints=3")  # checkpoints at 2 and 4
    shard = sorted((run / "checkpoints" / "step_00000004").glob("*.distcp"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])

    log = fixture_run(run, "train.steps=6", f"train.resume={run / 'checkpoints' / 'step_00000004'}", expect_rc=2)
    assert f"{shard} is cut short" in log and "Traceback" not in log
    log = fixture_run(run, "train.steps=6", "train.keep_checkpoints=3")
    assert f"{shard} is cut short" in log and "resuming from" in log and "step_00000002 instead" in log
    assert losses(run) == losses(straight)  # steps 3-6 ran again from step 2, bit for bit


def test_a_full_disk_while_saving_is_named_and_leaves_nothing_half_written(tmp_path):
    code = f"""
import errno, sys
sys.path.insert(0, {str(TESTS)!r})
import torch.distributed.checkpoint as dcp
import trainer_fixture as fx
real_save = dcp.save
def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
dcp.save = full_disk
from apt.core.command import exit_cleanly
try:
    fx.main([{str(tmp_path)!r}, "train.steps=2", "train.checkpoint_every=2"])
except OSError as err:
    print("CAUGHT", err)
    exit_cleanly(0)
exit_cleanly(3)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "disk full while writing the checkpoint" in out.stdout and "GiB free" in out.stdout
    assert not list((tmp_path / "checkpoints").glob(".tmp_step_*"))
    assert "disk full" in read_metrics(tmp_path)[-1]["error"]
    fixture_run(tmp_path, "train.steps=2")  # the next start runs (from scratch: nothing was saved)
    assert sorted(losses(tmp_path)) == [1, 2]


def test_start_up_clears_what_a_crash_left_half_written(tmp_path):
    (tmp_path / "checkpoints" / ".tmp_step_00000004").mkdir(parents=True)
    (tmp_path / "checkpoints" / ".tmp_step_00000004" / "__0_0.distcp").write_bytes(b"half")
    (tmp_path / "metrics.jsonl.tmp").write_text("")
    (tmp_path / ".config.yaml.tmp").write_text("half")
    (tmp_path / "checkpoints" / "latest.tmp").write_text("step_")
    (tmp_path / "notes.txt").write_text("mine")
    removed = clear_partial_writes(tmp_path)
    assert len(removed) == 4
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["checkpoints", "notes.txt"]


def test_checkpoint_files_are_published_with_the_usual_mode(tmp_path):
    fixture_run(tmp_path, "train.steps=2")
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "checkpoints" / "step_00000002").iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


# -- corrupt data ------------------------------------------------------------------------------------

def test_a_shard_holding_non_finite_values_is_named(tmp_path):
    from apt.data.shards import ShardDataset, ShardWriter, write_index

    writer = ShardWriter(tmp_path, rank=0, shard_size=2, dtype=torch.float32, stamp={"v": 1})
    writer.add(torch.zeros(4, 1, 2, 2), torch.ones(3, 8), "good", "a.mp4")
    bad = torch.zeros(4, 1, 2, 2)
    bad[0, 0, 0, 0] = float("nan")
    writer.add(bad, torch.ones(3, 8), "bad", "b.mp4")
    writer.flush()
    write_index(tmp_path, {"frames": 1, "height": 8, "width": 8, "fps": 8.0, "text_shape": [4, 8], "stamp": {"v": 1}})
    data = ShardDataset(tmp_path)
    assert data[0]["caption"] == "good"
    with pytest.raises(ValueError, match=r"r000-00000\.safetensors: item 1 holds non-finite values"):
        data[1]


# -- impossible config values ------------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("cd.guidance_scale=-3", "cd.guidance_scale"),
    ("cd.max_grad_norm=-1", "cd.max_grad_norm"),
    ("cd.weight_decay=-0.1", "cd.weight_decay"),
    ("train.seed=-1", "train.seed"),
])
def test_impossible_stage1_values_stop_at_start_up_with_the_key_named(override, key):
    from distill.config import DistillConfig

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DistillConfig, None, [override])


@pytest.mark.parametrize("override, key", [
    ("adv.collapse_patience=0", "adv.collapse_patience"),
    ("adv.collapse_d_loss=-1", "adv.collapse_d_loss"),
    ("adv.taps=[0,3]", "adv.taps"),
])
def test_impossible_stage2_values_stop_at_start_up_with_the_key_named(override, key):
    from apt.adversarial.config import APTConfig

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(APTConfig, None, ["adv.generator_init=teacher", override])


# -- threads -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("env, expect", [
    ({"LOCAL_WORLD_SIZE": "2"}, "cores // 2"),  # two ranks on this machine share its cores
    ({"LOCAL_WORLD_SIZE": "64"}, "1"),
    ({"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "1"}, "1"),  # the user's setting wins
    ({}, "cores"),
])
def test_each_process_uses_its_share_of_the_cores_it_may_run_on(env, expect):
    code = ("import os, torch; from apt.training.distributed import set_cpu_threads; cores = len(os.sched_getaffinity(0)); "
            f"n = set_cpu_threads(); assert n == torch.get_num_threads() == max(1, {expect}), (n, cores)")
    clean = {k: v for k, v in ENV.items() if k not in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**clean, **env})
    assert out.returncode == 0, out.stderr[-2000:]
