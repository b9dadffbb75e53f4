"""Stage 1 end to end: torchrun, FSDP2, checkpoint/resume, and the loaded generator."""

import json
from pathlib import Path

import pytest
import torch
from tiny import straight_and_resumed_runs

from apt.core.config import ConfigError, load_config
from apt.training.run_folder import read_metrics
from distill.config import DistillConfig

ROOT = Path(__file__).resolve().parents[1]


def test_toy_config_loads_and_rejects_bad_values():
    cfg = load_config(DistillConfig, ROOT / "configs/toy/distill.yaml")
    assert cfg.cd.num_steps == 4 and cfg.parallel.fsdp  # the toy's short chain (docs/experiments/2026-11-23-stage1-distill.md)
    with pytest.raises(ConfigError, match="cd.target"):
        load_config(DistillConfig, ROOT / "configs/toy/distill.yaml", ["cd.target=online"])
    with pytest.raises(ConfigError, match="cd.lrr"):
        load_config(DistillConfig, ROOT / "configs/toy/distill.yaml", ["cd.lrr=1"])


def _losses(out_dir):
    return {m["step"]: m["loss"] for m in read_metrics(out_dir) if "loss" in m}


@pytest.mark.slow
def test_torchrun_two_process_distill_resumes_to_identical_losses(tmp_path, tiny_model_dir):
    """2-process gloo FSDP2 (bf16 mixed precision, activation checkpointing): 4 straight steps vs
    2 steps, stop, then a second launch resuming from the step-2 checkpoint."""
    straight_and_resumed_runs(ROOT / "scripts" / "train_distill.py", ROOT / "configs/toy/distill.yaml", [
        f"model.path={tiny_model_dir}", "data.num_clips=32", "train.micro_batch_size=4", "train.global_batch_size=0",
        "train.checkpoint_every=2", "parallel.mixed_precision=bf16"], tmp_path)
    straight, split = _losses(tmp_path / "straight"), _losses(tmp_path / "split")
    assert sorted(straight) == sorted(split) == [1, 2, 3, 4]
    for step in (3, 4):
        assert split[step] == straight[step]
    meta = json.loads((tmp_path / "split" / "checkpoints" / "step_00000004" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["data_position"] == 4 * 4 * 2 and meta["stage"] == "distill"
    assert (tmp_path / "split" / "samples" / "step_00000004" / "grid.png").exists()

    # the checkpoint's EMA generator loads unsharded; both runs trained it identically, away from the teacher
    from apt.models.backbone import WanBackbone
    from apt.models.generator import OneStepGenerator
    from apt.training.run_folder import load_generator as load_generator_from_checkpoint

    z, text = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 32, 16)
    a = load_generator_from_checkpoint(tmp_path / "straight", tiny_model_dir)(z, text)
    b = load_generator_from_checkpoint(tmp_path / "split", tiny_model_dir)(z, text)
    teacher = OneStepGenerator(WanBackbone.from_pretrained(tiny_model_dir))(z, text)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, teacher, atol=1e-6)
