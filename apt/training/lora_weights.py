"""What training checkpoints hold of a LoRA model: its adapter only, with the base the adapter applies to
(the teacher folder, or a full-weights checkpoint or export) recorded in meta.json's "lora"
(apt.training.run_folder.adapter_generator rebuilds the model)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

TEACHER = "teacher"  # a LoRA base: the run's model folder


def model_state(module: torch.nn.Module) -> dict:
    """What a checkpoint holds of a module: its state dict, or a LoRA model's adapter tensors only (its
    base is recorded elsewhere: meta.json's "lora" and the run's config)."""
    from apt.models.lora import is_adapter_key

    state = get_model_state_dict(module)
    if getattr(module, "lora", None):
        state = {k: v for k, v in state.items() if is_adapter_key(k)}
    return state


def set_model_state(module: torch.nn.Module, state: dict) -> None:
    adapter_only = bool(getattr(module, "lora", None))
    set_model_state_dict(module, state, options=StateDictOptions(strict=not adapter_only))


def checkpoint_lora(path: str | Path) -> dict:
    """{model name: LoRA settings} of a checkpoint's adapter-only models ({} for full weights)."""
    meta = Path(path) / "meta.json"
    return json.loads(meta.read_text()).get("lora", {}) if meta.exists() else {}


def lora_record(module: torch.nn.Module) -> dict | None:
    """meta.json's entry for a LoRA model: its settings and the base its adapter applies to."""
    if not getattr(module, "lora", None):
        return None
    return {**module.lora, "base": getattr(module, "lora_base", TEACHER)}
