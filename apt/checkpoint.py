"""Sharded training checkpoints with torch.distributed.checkpoint (DCP), written atomically.

Layout:  <out_dir>/checkpoints/step_00000100/   DCP shards of models + optimisers
                                              meta.json  step, data position, anything JSON-able
                                              rng_rank{r}.pt  each rank's RNG states
         <out_dir>/checkpoints/latest          name of the newest complete checkpoint
A checkpoint directory only appears (by rename) once every rank has finished writing it, so a crash
mid-save leaves the previous one intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)


def _barrier():
    if dist.is_initialized():
        dist.barrier()


def _rng_state() -> dict[str, torch.Tensor]:
    # all training randomness comes from torch's generators (data order is index-derived)
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    pointer = Path(out_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "meta.json").exists() else None


class CheckpointManager:
    def __init__(self, out_dir: str | Path, keep: int = 2, rank: int = 0):
        self.root = Path(out_dir) / "checkpoints"
        self.keep, self.rank = keep, rank

    def _state(self, models: dict, optimizers: dict) -> dict:
        state = {f"model.{k}": get_model_state_dict(m) for k, m in models.items()}
        for k, (m, opt) in optimizers.items():
            state[f"optim.{k}"] = get_optimizer_state_dict(m, opt)
        return state

    def save(self, step: int, models: dict, optimizers: dict, extra: dict) -> Path:
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".tmp_step_{step:08d}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        dcp.save(self._state(models, optimizers), checkpoint_id=str(tmp))
        torch.save(_rng_state(), tmp / f"rng_rank{self.rank}.pt")
        _barrier()
        if self.rank == 0:
            (tmp / "meta.json").write_text(json.dumps(dict(extra, step=step), indent=2))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            pointer = self.root / "latest.tmp"
            pointer.write_text(final.name)
            pointer.replace(self.root / "latest")
            self._prune()
        _barrier()
        return final

    def _prune(self) -> None:
        done = sorted(p for p in self.root.glob("step_*") if (p / "meta.json").exists())
        for old in done[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def load(self, path: str | Path, models: dict, optimizers: dict) -> dict:
        """Restore models, optimisers and this rank's RNG in place; returns meta.json's content."""
        path = Path(path)
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no meta.json)")
        state = self._state(models, optimizers)
        dcp.load(state, checkpoint_id=str(path))
        for k, m in models.items():
            set_model_state_dict(m, state[f"model.{k}"])
        for k, (m, opt) in optimizers.items():
            set_optimizer_state_dict(m, opt, state[f"optim.{k}"])
        rng = path / f"rng_rank{self.rank}.pt"
        if rng.exists():  # absent when resuming on a different world size: keep fresh RNG
            _set_rng_state(torch.load(rng, weights_only=True))
        return json.loads((path / "meta.json").read_text())


def load_model_from_checkpoint(path: str | Path, name: str, module: torch.nn.Module) -> None:
    """Load one model (e.g. stage 1's 'ema') out of a training checkpoint into `module` (any sharding)."""
    state = {f"model.{name}": get_model_state_dict(module)}
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(module, state[f"model.{name}"])


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded CPU state dict (collective: call on every rank; rank 0 gets the tensors)."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
