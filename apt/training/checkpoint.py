"""Sharded training checkpoints with torch.distributed.checkpoint (DCP), written atomically.

Layout:  <root>/step_00000100/   DCP shards of models + optimisers
                              meta.json  step, data position, anything JSON-able
                              rng_rank{r}.pt  each rank's RNG states
         <root>/latest          name of the newest complete checkpoint
(<root> is a run's checkpoints/ folder: apt/training/run_folder.py.)
A checkpoint directory only appears (by rename) once every rank has finished writing it, so a crash
mid-save leaves the previous one intact.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from apt.core.collectives import barrier


def _rng_state() -> dict:
    """This rank's generators, as tensors and plain Python values only, so that loading needs no
    unpickling of arbitrary objects (torch.load(weights_only=True))."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),  # (version, tuple of ints, None): weights_only-safe
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def is_complete(path: str | Path) -> bool:
    return (Path(path) / "meta.json").exists()  # written last, just before the rename


def latest_complete(root: str | Path) -> Path | None:
    """The checkpoint named by `latest`; failing that (a crash while replacing it), the newest
    complete step directory; None when there is none."""
    root = Path(root)
    pointer = root / "latest"
    if pointer.exists():
        path = root / pointer.read_text().strip()
        if is_complete(path):
            return path
    done = sorted(p for p in root.glob("step_*") if is_complete(p))
    return done[-1] if done else None


class CorruptCheckpoint(RuntimeError):
    """A checkpoint whose files are missing or cut short (a crash or a full disk outside the atomic save)."""


def verify_checkpoint(path: str | Path) -> None:
    """Check that every file a checkpoint's DCP metadata points into exists and is long enough, and
    that the RNG files are there; raises CorruptCheckpoint naming the first bad file. Reads the
    metadata and file sizes only."""
    path = Path(path)
    if not is_complete(path):
        raise CorruptCheckpoint(f"{path} is not a complete checkpoint (no meta.json)")
    try:
        storage = dcp.FileSystemReader(str(path)).read_metadata().storage_data
    except Exception as err:  # a truncated .metadata fails inside pickle with any of several errors
        raise CorruptCheckpoint(f"{path / '.metadata'} cannot be read ({type(err).__name__}: {err})") from None
    needed: dict[str, int] = {}
    for info in storage.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        file = path / name
        if not file.is_file():
            raise CorruptCheckpoint(f"{file} is missing")
        if file.stat().st_size < size:
            raise CorruptCheckpoint(f"{file} is cut short ({file.stat().st_size} bytes, needs {size})")
    ranks = json.loads((path / "meta.json").read_text()).get("world_size", 1)
    for rank in range(ranks):
        if not (path / f"rng_rank{rank}.pt").is_file():
            raise CorruptCheckpoint(f"{path / f'rng_rank{rank}.pt'} is missing")


def _fsync_tree(folder: Path) -> None:
    """Flush every file of a folder to disk, so that the rename that publishes it never publishes
    data still in the page cache (a power loss would leave a complete-looking empty checkpoint)."""
    for file in folder.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _publishable_mode(folder: Path) -> None:
    """DCP writes some shards owner-only; give every file the mode a plain write would (umask applies)."""
    umask = os.umask(0)
    os.umask(umask)
    for file in folder.rglob("*"):
        if file.is_file():
            file.chmod(0o666 & ~umask)


def _disk_full_message(where: Path) -> OSError:
    free = shutil.disk_usage(where.parent).free / 2**30
    return OSError(errno.ENOSPC, f"disk full while writing the checkpoint {where} ({free:.2f} GiB free on "
                                 f"that disk); the previous checkpoint is intact: free space and run the "
                                 f"same command to resume")


class CheckpointManager:
    """Collective: every rank constructs one and calls save/load together."""

    def __init__(self, root: str | Path, keep: int = 2, rank: int = 0, world_size: int = 1):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep, self.rank, self.world_size = keep, rank, world_size

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
        barrier()
        try:
            dcp.save(self._state(models, optimizers), checkpoint_id=str(tmp))
            torch.save(_rng_state(), tmp / f"rng_rank{self.rank}.pt")
        except Exception as err:
            shutil.rmtree(tmp, ignore_errors=True)  # half a checkpoint only takes space from the next try
            # DCP wraps a writer's OSError in its own exception type: recognise a full disk either way
            if getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err):
                raise _disk_full_message(tmp) from err
            raise
        barrier()
        if self.rank == 0:
            meta = dict(extra, step=step, world_size=self.world_size)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            _publishable_mode(tmp)
            _fsync_tree(tmp)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            pointer = self.root / "latest.tmp"
            with open(pointer, "w") as f:
                f.write(final.name)
                f.flush()
                os.fsync(f.fileno())
            pointer.replace(self.root / "latest")
            self._prune()
        barrier()
        return final

    def _prune(self) -> None:
        done = sorted(p for p in self.root.glob("step_*") if is_complete(p))
        stale = list(self.root.glob(".tmp_step_*"))  # left by a crash mid-save
        for old in done[: -self.keep] + stale:
            shutil.rmtree(old, ignore_errors=True)

    def load(self, path: str | Path, models: dict, optimizers: dict) -> dict:
        """Restore models, optimisers and this rank's RNG in place; returns meta.json's content.
        A checkpoint with missing or cut-short files raises CorruptCheckpoint (the file named) before
        anything is restored."""
        path = Path(path)
        if not is_complete(path):
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no meta.json)")
        verify_checkpoint(path)
        meta = json.loads((path / "meta.json").read_text())
        # DCP reshards on load: a checkpoint of any world size loads into any sharding.
        state = self._state(models, optimizers)
        dcp.load(state, checkpoint_id=str(path))
        for k, m in models.items():
            set_model_state_dict(m, state[f"model.{k}"])
        for k, (m, opt) in optimizers.items():
            set_optimizer_state_dict(m, opt, state[f"optim.{k}"])
        # Per-rank RNG only means something in a world of the same size; otherwise keep fresh seeds.
        if meta.get("world_size", self.world_size) == self.world_size:
            _set_rng_state(torch.load(path / f"rng_rank{self.rank}.pt", weights_only=True))
        return meta


def checkpoint_model_names(path: str | Path) -> set[str]:
    """Names of the models a checkpoint holds (e.g. {'ema', 'student'}), from DCP's metadata alone."""
    keys = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    return {k.split(".")[1] for k in keys if k.startswith("model.")}


def load_model_from_checkpoint(path: str | Path, name: str, module: torch.nn.Module) -> None:
    """Load one model (e.g. stage 1's 'ema') out of a training checkpoint into `module` (any sharding)."""
    state = {f"model.{name}": get_model_state_dict(module)}
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(module, state[f"model.{name}"])


def export_full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded CPU state dict for export (collective: call on every rank; rank 0 gets the tensors,
    the others an empty dict). CPU offload keeps the full model out of accelerator memory."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
