"""The trainer: config, data order, run log, DCP checkpoints, resume, and a 2-process run.

Anything that needs a process group runs in a subprocess (a world of one, or torchrun), so the pytest
process never holds one.
"""

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from apt.core.config import ConfigError, dump_config, load_config
from apt.data.stream import DataStream
from apt.training.config import ParallelConfig, TrainConfig
from apt.training.run_folder import read_metrics
from apt.training.run_log import RunLog

TESTS = Path(__file__).resolve().parent
FIXTURE = TESTS / "trainer_fixture.py"
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@dataclass
class _Schema:
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def validate(self):
        self.train.validate()
        self.parallel.validate()


def test_config_merges_defaults_yaml_and_overrides_and_dumps(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 7\n  out_dir: x\n")
    cfg = load_config(_Schema, path, ["train.micro_batch_size=3", "parallel.mixed_precision=bf16"])
    assert (cfg.train.steps, cfg.train.micro_batch_size, cfg.train.out_dir) == (7, 3, "x")
    assert (cfg.train.grad_accum(1), cfg.parallel.mixed_precision) == (1, "bf16")
    dump_config(cfg, tmp_path / "dumped.yaml")
    assert load_config(_Schema, tmp_path / "dumped.yaml", []) == cfg


@pytest.mark.parametrize("yaml_text, override, key", [
    ("", ["train.stepz=3"], "train.stepz"),  # unknown key (override)
    ("train:\n  lr: 1\n", [], "train.lr"),  # unknown key (YAML)
    ("", ["train.steps=many"], "train.steps"),  # wrong type
    ("train:\n  seed: [1]\n", [], "train.seed"),  # wrong type (YAML)
    ("", ["train.steps=0"], "train.steps"),  # impossible value
    ("", ["train.micro_batch_size=-2"], "train.micro_batch_size"),
    ("", ["train.seed=-1"], "train.seed"),
    ("", ["parallel.mixed_precision=fp8"], "parallel.mixed_precision"),
    ("", ["parallel.fsdp=false", "parallel.mixed_precision=bf16"], "parallel.mixed_precision"),
    ("", ["train=3"], "train: Merge error"),  # omegaconf names no key here: the override is named
    ("", ["steps"], "key=value"),
])
def test_config_errors_name_the_key(tmp_path, yaml_text, override, key):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(_Schema, path, override)


def test_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_Schema, tmp_path / "nope.yaml", [])


def test_data_stream_is_deterministic_disjoint_across_ranks_and_resumable():
    data = [{"x": torch.tensor(i), "name": str(i)} for i in range(10)]
    r0, r1 = DataStream(data, 2, 0, 2, seed=1), DataStream(data, 2, 1, 2, seed=1)
    seen = []
    for _ in range(5):  # 5 global micro-batches of 4 = two epochs
        b0, b1 = r0.next_batch(), r1.next_batch()
        assert b0["name"] == [str(int(x)) for x in b0["x"]]  # non-tensors collate to lists
        seen.append(b0["x"].tolist() + b1["x"].tolist())
    flat = sum(seen, [])
    assert sorted(flat[:10]) == sorted(flat[10:]) == list(range(10))  # each item once per epoch
    assert flat[:10] != flat[10:]  # a fresh permutation per epoch
    assert r0.position == r1.position == 20
    resumed = DataStream(data, 2, 1, 2, seed=1, position=12)
    assert resumed.next_batch()["x"].tolist() == seen[3][2:]
    with pytest.raises(ValueError, match="fewer than one global micro-batch"):
        DataStream(data[:3], 2, 0, 2, seed=0)


def test_run_log_keeps_lines_up_to_the_resumed_step(tmp_path):
    log = RunLog(tmp_path)
    for s in range(1, 6):
        log.write({"step": s, "loss": float(s)})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "lo')  # a line cut short by a crash
    RunLog(tmp_path, resume_step=3).write({"step": 4, "loss": 40.0})
    assert [(m["step"], m["loss"]) for m in read_metrics(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
    RunLog(tmp_path).write({"step": 1, "loss": float("nan")})  # fresh run starts a fresh file
    assert read_metrics(tmp_path) == [{"step": 1, "loss": None}]
    RunLog(tmp_path, rank=1).write({"step": 2})  # other ranks write nothing
    assert len(read_metrics(tmp_path)) == 1


# -- world of one (in a subprocess) --------------------------------------------------------------

def _checkpoint_round_trip(tmp: Path):
    from tiny import tiny_transformer

    from apt.models.backbone import WanBackbone
    from apt.training.checkpoint import CheckpointManager, export_full_state_dict
    from apt.training.distributed import parallelize_backbone
    from apt.training.ema import ema_update
    from apt.training.run_folder import checkpoints_dir, latest_checkpoint

    model = WanBackbone(tiny_transformer())
    parallelize_backbone(model, ParallelConfig())
    assert model.activation_checkpointing
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(2, 4, 1, 4, 4), torch.rand(2), torch.randn(2, 3, 16)).square().mean().backward()
    opt.step()
    mgr = CheckpointManager(checkpoints_dir(tmp), keep=2, rank=0, world_size=1)
    (tmp / "checkpoints" / ".tmp_step_00000009").mkdir(parents=True)  # debris of a crash mid-save
    for step in (1, 2, 3):
        mgr.save(step, {"m": model}, {"m": (model, opt)}, {"data_position": 10 * step, "stage": "t"})
    expected_rng = (torch.rand(3), random.random(), np.random.rand())
    saved = {k: v.full_tensor().clone() for k, v in model.state_dict().items()}
    exp_avg = [s["exp_avg"].full_tensor().clone() for s in opt.state.values()]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    for s in opt.state.values():
        s["exp_avg"].zero_()
    torch.rand(5), random.random(), np.random.rand()  # move every generator on
    meta = mgr.load(latest_checkpoint(tmp), {"m": model}, {"m": (model, opt)})
    assert {k: meta[k] for k in ("data_position", "stage", "step", "world_size")} == \
        {"data_position": 30, "stage": "t", "step": 3, "world_size": 1}
    assert set(meta["sha256"]) >= {".metadata", "rng_rank0.pt"} and meta["rank_state"] == {}
    torch_r, py_r, np_r = expected_rng
    assert torch.equal(torch.rand(3), torch_r) and random.random() == py_r and np.random.rand() == np_r
    assert all(torch.equal(v.full_tensor(), saved[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(s["exp_avg"].full_tensor(), e) for s, e in zip(opt.state.values(), exp_avg))
    ckpts = sorted(p.name for p in (tmp / "checkpoints").iterdir() if p.is_dir())
    assert ckpts == ["step_00000002", "step_00000003"]  # keep=2, crash debris gone
    (tmp / "checkpoints" / "latest").write_text("step_00000099")  # a dangling pointer
    assert latest_checkpoint(tmp).name == "step_00000003"

    full = export_full_state_dict(model)
    assert set(full) == set(saved) and all(torch.equal(full[k], saved[k]) for k in saved)
    assert all(v.device.type == "cpu" and not hasattr(v, "to_local") for v in full.values())

    # EMA on shards == EMA on plain modules; the sharded EMA first ran a no_grad forward (root stays unsharded)
    plain_ema, plain = WanBackbone(tiny_transformer(seed=1)), WanBackbone(tiny_transformer(seed=2))
    ema, src = WanBackbone(tiny_transformer(seed=1)), WanBackbone(tiny_transformer(seed=2))
    for m in (ema, src):
        parallelize_backbone(m, ParallelConfig(activation_checkpointing=False))
    with torch.no_grad():
        ema(torch.randn(1, 4, 1, 4, 4), torch.rand(1), torch.randn(1, 3, 16))
    ema_update(ema, src, 0.7)
    ema_update(plain_ema, plain, 0.7)
    got = {k: v.full_tensor() for k, v in ema.state_dict().items()}
    assert all(torch.allclose(got[k], v, atol=1e-7) for k, v in plain_ema.state_dict().items())


def _trainer_fail_resume_and_match(tmp: Path):
    import trainer_fixture as fx

    from apt.core.config import load_config
    from apt.training.distributed import DistInfo
    from apt.training.trainer import Trainer

    dist = DistInfo(0, 1, 0, torch.device("cpu"), "gloo")

    def run(out, *overrides, name="fixture"):
        cfg = load_config(fx.FixtureConfig, None, [f"train.out_dir={tmp / out}", *overrides])
        stage = fx.FlowMatchingStage(cfg, dist)
        stage.name = name
        return Trainer(cfg.train, dist).run(stage, fx.RandomLatents()), stage

    summary, _ = run("straight")
    assert summary["step"] == 4 and set(summary["metrics"]) >= {"loss", "step", "seconds_per_step", "samples_seen"}
    straight = {m["step"]: m["loss"] for m in read_metrics(tmp / "straight")}
    assert sorted(straight) == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp / "straight" / "samples").iterdir()) == \
        ["step_00000002.json", "step_00000004.json"]

    with pytest.raises(RuntimeError, match="planned failure at step 3"):
        run("split", "fail_at=3")
    assert read_metrics(tmp / "split")[-1]["error"] == "RuntimeError: planned failure at step 3"
    assert (tmp / "split" / "checkpoints" / "latest").read_text() == "step_00000002"

    summary, _ = run("split")  # resume=auto
    assert summary["step"] == 4
    split = {m["step"]: m["loss"] for m in read_metrics(tmp / "split") if "loss" in m}
    assert split == straight  # steps 3-4 after the resume are bit-identical to the uninterrupted run
    meta = json.loads((tmp / "split" / "checkpoints" / "step_00000004" / "meta.json").read_text())
    assert meta["data_position"] == 4 * 2 * 2 and meta["stage"] == "fixture"

    summary, _ = run("split", "train.steps=6", f"train.resume={tmp / 'straight/checkpoints/step_00000002'}")
    assert summary["step"] == 6 and summary["metrics"]["samples_seen"] == 6 * 2 * 2

    with pytest.raises(ValueError, match="'fixture' checkpoint, not 'other'"):
        run("straight", "train.steps=5", name="other")


def _world_of_one(tmp: str):
    from apt.core.command import exit_cleanly
    from apt.training.distributed import init_distributed, shutdown_distributed

    info = init_distributed()
    assert (info.rank, info.world_size, info.backend) == (0, 1, "gloo")
    _checkpoint_round_trip(Path(tmp) / "ckpt")
    _trainer_fail_resume_and_match(Path(tmp) / "trainer")
    shutdown_distributed()
    exit_cleanly(0)  # skip teardown: the rare gloo abort at exit after DCP + full-state gather


def test_world_of_one_checkpoint_round_trip_and_trainer_resume(tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_trainer as t; "
            f"t._world_of_one({str(tmp_path)!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]


# -- two processes under torchrun ----------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_two_ranks_fsdp2_bf16_resume_gives_identical_losses(tmp_path):
    """gloo, FSDP2 per block, bf16 params with fp32 reduction, activation checkpointing, grad accum 2:
    4 steps straight, then a second launch resumes from the step-2 checkpoint and runs to 4."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    def torchrun(out_dir, *overrides):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(FIXTURE), str(out_dir), "parallel.mixed_precision=bf16", "parallel.activation_checkpointing=true",
               "train.global_batch_size=8", *overrides]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]

    torchrun(straight)
    torchrun(resumed, f"train.resume={straight / 'checkpoints' / 'step_00000002'}")
    first = {m["step"]: m for m in read_metrics(straight)}
    second = {m["step"]: m for m in read_metrics(resumed)}
    assert sorted(first) == [1, 2, 3, 4] and sorted(second) == [3, 4]
    for step in (3, 4):
        assert second[step]["loss"] == pytest.approx(first[step]["loss"], rel=1e-6, abs=1e-9)
        assert second[step]["samples_seen"] == first[step]["samples_seen"] == step * 2 * 2 * 2
        assert first[step]["rank"] == 0.5  # metrics are logged as means over ranks
    for out_dir in (straight, resumed):
        meta = json.loads((out_dir / "checkpoints" / "step_00000004" / "meta.json").read_text())
        assert meta["world_size"] == 2 and meta["data_position"] == 4 * 8
        assert sorted(p.name for p in (out_dir / "checkpoints").glob("step_*"))[-1] == "step_00000004"
        assert (out_dir / "samples" / "step_00000004.json").exists()
