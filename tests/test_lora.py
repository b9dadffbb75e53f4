"""LoRA (model.lora): the generator trains a peft adapter on frozen weights; checkpoints hold the adapter only;
an export either folds it in or writes it as a diffusers LoRA file that the teacher folder's WanPipeline
loads with load_lora_weights and then gives the merged export's frames.

Tolerance (measured on this CPU, float32): the adapter beside the layers vs folded into them, 5e-7 on
one-step latents and decoded frames; the test allows 1e-4 (apt/inference/lora_export.py LORA_TOLERANCE).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_transformer

from apt.core.config import ConfigError
from apt.models.backbone import WanBackbone
from apt.models.lora import LoRAConfig, add_lora, is_adapter_key, merged

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMMON = ["data.num_clips=16", "train.micro_batch_size=2", "train.global_batch_size=4", "train.sample_every=0",
          "train.tensorboard=false", "preview.prompts=[]", "model.lora.rank=4"]


def _inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(1, 4, 2, 8, 8, generator=g), torch.rand(1, generator=g), torch.randn(1, 6, 16, generator=g)


def test_a_fresh_adapter_changes_nothing_and_only_it_trains():
    plain = WanBackbone(tiny_transformer())
    adapted = WanBackbone(tiny_transformer())
    state = torch.random.get_rng_state()
    add_lora(adapted, LoRAConfig(rank=4, alpha=8))
    assert torch.equal(torch.random.get_rng_state(), state)  # the run's random stream is not moved
    x, t, text = _inputs()
    with torch.no_grad():
        assert torch.equal(plain(x, t, text), adapted(x, t, text))  # B starts at zero
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all(is_adapter_key(n) for n in trainable)
    assert adapted.lora == {"rank": 4, "alpha": 8, "targets": LoRAConfig().targets}


def test_merged_weights_compute_what_the_adapter_does():
    backbone = WanBackbone(tiny_transformer())
    add_lora(backbone, LoRAConfig(rank=4))
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    x, t, text = _inputs()
    with torch.no_grad():
        folded = merged(backbone)
        assert not any(is_adapter_key(n) for n, _ in folded.named_parameters())
        assert (folded(x, t, text) - backbone(x, t, text)).abs().max() < 1e-4


def test_bad_lora_settings_are_refused():
    with pytest.raises(ConfigError, match="must be >= 0"):
        LoRAConfig(rank=-1).validate()
    with pytest.raises(ConfigError, match="name at least one module"):
        LoRAConfig(rank=4, targets=[]).validate()
    with pytest.raises(ConfigError, match=r"\['to_qq'\] name no module"):
        add_lora(WanBackbone(tiny_transformer()), LoRAConfig(rank=4, targets=["to_qq"]))


def _train(command: str, config: str, out: Path, model_dir: Path, extra: list[str]) -> None:
    cmd = [str(BIN / command), "--config", str(ROOT / "configs" / "toy" / config), f"model.path={model_dir}",
           f"train.out_dir={out}", *COMMON, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", APT_CACHE_DIR=str(out.parent / "cache"))
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]


def _export(checkpoint: Path, out: Path, *flags: str) -> dict:
    run = subprocess.run([str(BIN / "apt-export"), "--checkpoint", str(checkpoint), "--out", str(out), "--dtype",
                          "fp32", "--verify", *flags], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return json.loads(run.stdout)


def _one_step_frames(pipe, scheduler_dir: Path) -> torch.Tensor:
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(scheduler_dir, subfolder="scheduler")
    out = pipe("a red seven moving up", num_inference_steps=1, guidance_scale=1.0, height=32, width=32, num_frames=5,
               max_sequence_length=32, generator=torch.Generator().manual_seed(0), output_type="pt")
    return out.frames[0]


@pytest.mark.slow
def test_lora_runs_checkpoint_the_adapter_and_export_it_for_load_lora_weights(tmp_path, tiny_model_dir):
    """Stage 1 trains an adapter on the teacher, stage 2 continues it; the checkpoints hold adapter tensors
    only (every model.* key of G and its EMA is a lora_A/lora_B weight); the adapter exported as a LoRA file
    and loaded into the teacher folder's WanPipeline gives the merged export's frames. A stage 2 of all
    weights from the same stage 1 folds the adapter in."""
    import torch.distributed.checkpoint as dcp
    from diffusers import WanPipeline

    _train("apt-distill", "distill.yaml", tmp_path / "cd", tiny_model_dir, ["train.steps=2"])
    _train("apt-train", "apt.yaml", tmp_path / "apt", tiny_model_dir,
           ["train.steps=2", f"adv.generator_init={tmp_path / 'cd'}"])
    step = tmp_path / "apt" / "checkpoints" / "step_00000002"
    meta = json.loads((step / "meta.json").read_text())
    assert meta["lora"]["generator"] == meta["lora"]["ema"] == {"rank": 4, "alpha": 4,
                                                                "targets": LoRAConfig().targets, "base": "teacher"}
    keys = dcp.FileSystemReader(str(step)).read_metadata().state_dict_metadata
    for model in ("generator", "ema"):
        names = [k for k in keys if k.startswith(f"model.{model}.")]
        assert names and all(is_adapter_key(k) for k in names), model
    assert any(k.startswith("model.discriminator.") and not is_adapter_key(k) for k in keys)

    merged_report = _export(step, tmp_path / "merged")
    lora_report = _export(step, tmp_path / "lora", "--lora")
    assert merged_report["verify"]["ok"] and lora_report["verify"]["ok"]
    assert lora_report["verify"]["max_abs_diff_vs_merged"] <= 1e-4
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == ["pytorch_lora_weights.safetensors",
                                                                    "scheduler", "seaweed_apt.json"]

    teacher = WanPipeline.from_pretrained(tiny_model_dir)
    teacher.load_lora_weights(tmp_path / "lora")
    with_lora = _one_step_frames(teacher, tmp_path / "lora")
    want = _one_step_frames(WanPipeline.from_pretrained(tmp_path / "merged"), tmp_path / "merged")
    assert with_lora.shape == want.shape and (with_lora - want).abs().max() <= 1e-4

    # a stage 2 of all weights from the LoRA stage 1: the adapter folded in, full weights checkpointed
    _train("apt-train", "apt.yaml", tmp_path / "full", tiny_model_dir,
           ["train.steps=1", f"adv.generator_init={tmp_path / 'cd'}", "model.lora.rank=0"])
    full = tmp_path / "full" / "checkpoints" / "step_00000001"
    assert "lora" not in json.loads((full / "meta.json").read_text())
    assert not any(is_adapter_key(k) for k in dcp.FileSystemReader(str(full)).read_metadata().state_dict_metadata)


@pytest.mark.slow
def test_an_adapter_on_full_stage_1_weights_exports_merged_only_and_resumes_bit_exactly(tmp_path, tiny_model_dir):
    from tiny import write_tiny_run

    write_tiny_run(tmp_path / "cd", tiny_model_dir)  # full weights
    _train("apt-train", "apt.yaml", tmp_path / "straight", tiny_model_dir,
           ["train.steps=2", f"adv.generator_init={tmp_path / 'cd'}", "train.checkpoint_every=1"])
    _train("apt-train", "apt.yaml", tmp_path / "split", tiny_model_dir,
           ["train.steps=1", f"adv.generator_init={tmp_path / 'cd'}", "train.checkpoint_every=1"])
    _train("apt-train", "apt.yaml", tmp_path / "split", tiny_model_dir,
           ["train.steps=2", f"adv.generator_init={tmp_path / 'cd'}", "train.checkpoint_every=1"])
    logs = [(tmp_path / run / "metrics.jsonl").read_text().splitlines()[-1] for run in ("straight", "split")]
    timing = ("seconds_per_step", "tflops_per_device", "peak_memory_gb")
    assert [{k: v for k, v in json.loads(line).items() if k not in timing} for line in logs][0] == \
           [{k: v for k, v in json.loads(line).items() if k not in timing} for line in logs][1]
    step = tmp_path / "straight" / "checkpoints" / "step_00000002"
    assert json.loads((step / "meta.json").read_text())["lora"]["ema"]["base"].startswith(str(tmp_path / "cd"))
    run = subprocess.run([str(BIN / "apt-export"), "--checkpoint", str(step), "--out", str(tmp_path / "x"), "--lora"],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 2 and "export it merged" in run.stderr
    assert _export(step, tmp_path / "merged")["verify"]["ok"]
