"""Every collective of the project lives on the process group's device (apt/core/collectives.py), in a
stage-1, a stage-2 and a reward step, without a GPU: tests/collective_devices.py pretends the group's
device is not the CPU and records each collective the project calls."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apt.core.collectives import mean_over_ranks

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "collective_devices.py"
COMMON = ["data.num_clips=16", "train.micro_batch_size=2", "train.global_batch_size=8", "train.steps=1",
          "train.sample_every=0", "train.tensorboard=false", "preview.prompts=[]", "adv.probe_every=1",
          "adv.probe_size=4"]
RUNS = {
    "stage 1": ("apt.cli.distill", "distill.yaml", []),
    "stage 2": ("apt.cli.train", "apt.yaml", ["adv.generator_init=teacher"]),
    "reward": ("apt.cli.train", "reward.yaml", ["adv.generator_init=teacher", "adv.discriminator_init="]),
}


@pytest.mark.slow
@pytest.mark.parametrize("run", list(RUNS))
def test_no_collective_gets_a_tensor_off_the_groups_device(run, tmp_path, tiny_model_dir):
    module, config, extra = RUNS[run]
    common = [c for c in COMMON if not (run == "stage 1" and c.startswith("adv."))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(DRIVER),
           str(tmp_path / "calls"), module, "--config", str(ROOT / "configs" / "toy" / config),
           f"model.path={tiny_model_dir}", f"train.out_dir={tmp_path / 'run'}", *common, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", APT_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    for rank in (0, 1):
        calls = json.loads((tmp_path / "calls" / f"rank{rank}.json").read_text())
        # the step's metrics are synced (and the guards decide) through the helper, on the group's device
        assert any(c["op"] == "functional all_reduce" and "apt/core/collectives.py" in c["caller"] for c in calls)
        wrong = [c for c in calls if any(d != "meta" for d in c["devices"])]
        assert not wrong, wrong


def test_without_a_process_group_the_helpers_return_the_local_values():
    import torch

    assert mean_over_ranks({"b": torch.tensor(2.5), "a": 1.0}) == {"a": 1.0, "b": 2.5}
    assert mean_over_ranks({}) == {}
