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
    set_optimizer_state_dict,
)

from apt.core.collectives import all_gather_objects, barrier, gather_objects, is_distributed
from apt.core.files import (
    DamagedFile,
    UnsafePickle,
    check_dcp_metadata,
    disk_full,
    disk_full_error,
    hash_files,
    make_readable,
    mismatched,
)
from apt.training.lora_weights import lora_record, model_state, set_model_state


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


class CorruptCheckpoint(DamagedFile):
    """A checkpoint whose files are missing, cut short or altered (a crash or a full disk outside the
    atomic save, a flipped bit, a doctored file)."""


def _my_share(names: list[str]) -> list[str]:
    """This rank's share of the files to hash (all of them without a process group)."""
    if not is_distributed():
        return names
    import torch.distributed as dist

    return names[dist.get_rank()::dist.get_world_size()]


def verify_checkpoint(path: str | Path) -> None:
    """Check a checkpoint before anything is restored from it: its DCP metadata names only DCP's own
    classes (it is a pickle), every file the metadata points into exists and is long enough, the RNG
    files are there, and every file has the SHA-256 meta.json recorded (the ranks share the hashing).
    Raises CorruptCheckpoint naming the first bad file."""
    path = Path(path)
    if not is_complete(path):
        raise CorruptCheckpoint(f"{path} is not a complete checkpoint (no meta.json)")
    try:
        check_dcp_metadata(path / ".metadata")
    except UnsafePickle as err:
        raise CorruptCheckpoint(f"{path / '.metadata'} is not a checkpoint's metadata: it {err}; not loaded "
                                "(a pickle can run code)") from None
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{path / '.metadata'} is missing") from None
    except Exception as err:  # a truncated .metadata fails inside pickle with any of several errors
        raise CorruptCheckpoint(f"{path / '.metadata'} cannot be read ({type(err).__name__}: {err})") from None
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
    meta = json.loads((path / "meta.json").read_text())
    for rank in range(meta.get("world_size", 1)):
        if not (path / f"rng_rank{rank}.pt").is_file():
            raise CorruptCheckpoint(f"{path / f'rng_rank{rank}.pt'} is missing")
    expected = meta.get("sha256", {})  # checkpoints written before the hashes were recorded have none
    mine = {name: expected[name] for name in _my_share(sorted(expected))}
    bad = sorted(n for part in all_gather_objects(mismatched(path, mine)) for n in part)
    if bad:
        raise CorruptCheckpoint(f"{path / bad[0]} is not the file that was saved (its SHA-256 differs from "
                                f"meta.json's){f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}")


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


class CheckpointManager:
    """Collective: every rank constructs one and calls save/load together."""

    def __init__(self, root: str | Path, keep: int = 2, rank: int = 0, world_size: int = 1, context_parallel: int = 1):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep, self.rank, self.world_size, self.context_parallel = keep, rank, world_size, context_parallel

    def _state(self, models: dict, optimizers: dict) -> dict:
        state = {f"model.{k}": model_state(m) for k, m in models.items()}
        for k, (m, opt) in optimizers.items():
            state[f"optim.{k}"] = get_optimizer_state_dict(m, opt)
        return state

    def save(self, step: int, models: dict, optimizers: dict, extra: dict, rank_state: dict | None = None) -> Path:
        """rank_state: this rank's other state to carry across a resume (tensors, numbers, lists, dicts:
        what torch.load(weights_only=True) reads back), e.g. a stop rule's counters."""
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".tmp_step_{step:08d}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier()
        try:
            self._write(step, tmp, models, optimizers, extra, rank_state or {})
        except BaseException as err:  # DCP's CheckpointException is a BaseException
            shutil.rmtree(tmp, ignore_errors=True)  # half a checkpoint only takes space from the next try
            if not isinstance(err, (KeyboardInterrupt, SystemExit)) and disk_full(err, self.root):
                raise disk_full_error(self.root, f"the checkpoint {final}", "the half-written one is removed and the "
                                      "previous checkpoint is intact: free space and run the same command to resume") \
                    from err
            raise
        if self.rank == 0:
            self._publish(tmp, final)
        barrier()
        return final

    def _write(self, step: int, tmp: Path, models: dict, optimizers: dict, extra: dict, rank_state: dict) -> None:
        dcp.save(self._state(models, optimizers), checkpoint_id=str(tmp))
        torch.save({**_rng_state(), "rank_state": rank_state}, tmp / f"rng_rank{self.rank}.pt")
        barrier()
        # every file's hash, the ranks sharing the work (a shard is hashed by whoever lists it)
        files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
        hashes = gather_objects(hash_files(tmp, _my_share(files)))
        if self.rank == 0:
            adapters = {k: lora_record(m) for k, m in models.items() if lora_record(m)}
            meta = dict(extra, step=step, world_size=self.world_size, context_parallel=self.context_parallel,
                        **({"lora": adapters} if adapters else {}),
                        sha256={k: v for part in hashes for k, v in part.items()})
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            make_readable(tmp)  # DCP writes some shards owner-only
            _fsync_tree(tmp)

    def _publish(self, tmp: Path, final: Path) -> None:
        """Rename the complete checkpoint into place and point `latest` at it (rank 0)."""
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        pointer = self.root / "latest.tmp"
        with open(pointer, "w") as f:
            f.write(final.name)
            f.flush()
            os.fsync(f.fileno())
        pointer.replace(self.root / "latest")
        self._prune()

    def _prune(self) -> None:
        done = sorted(p for p in self.root.glob("step_*") if is_complete(p))
        stale = list(self.root.glob(".tmp_step_*"))  # left by a crash mid-save
        for old in done[: -self.keep] + stale:
            shutil.rmtree(old, ignore_errors=True)

    def load(self, path: str | Path, models: dict, optimizers: dict) -> dict:
        """Restore models, optimisers and this rank's RNG in place; returns meta.json's content, with this
        rank's saved `rank_state` where the world size is the same.
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
            set_model_state(m, state[f"model.{k}"])
        for k, (m, opt) in optimizers.items():
            set_optimizer_state_dict(m, opt, state[f"optim.{k}"])
        # Per-rank RNG and state only mean something in a world of the same shape; otherwise keep fresh seeds
        # (a context-parallel group's ranks must draw alike: they are seeded per group, not per rank).
        if (meta.get("world_size", self.world_size), meta.get("context_parallel", 1)) == (self.world_size,
                                                                                         self.context_parallel):
            saved = torch.load(path / f"rng_rank{self.rank}.pt", weights_only=True)
            _set_rng_state(saved)
            meta["rank_state"] = saved.get("rank_state", {})
        return meta


def checkpoint_model_names(path: str | Path) -> set[str]:
    """Names of the models a checkpoint holds (e.g. {'ema', 'student'}), from DCP's metadata alone (checked
    to name only DCP's classes first)."""
    try:
        check_dcp_metadata(Path(path) / ".metadata")
    except UnsafePickle as err:
        raise CorruptCheckpoint(f"{Path(path) / '.metadata'} is not a checkpoint's metadata: it {err}") from None
    keys = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    return {k.split(".")[1] for k in keys if k.startswith("model.")}


def load_model_from_checkpoint(path: str | Path, name: str, module: torch.nn.Module, verify: bool = True) -> None:
    """Load one model (e.g. stage 1's 'ema') out of a training checkpoint into `module` (any sharding),
    after checking the checkpoint (verify_checkpoint; verify=False when the caller just did). A LoRA
    model's adapter loads into a module that carries the same adapter (apt.models.lora.add_lora)."""
    if verify:
        verify_checkpoint(path)
    state = {f"model.{name}": model_state(module)}
    dcp.load(state, checkpoint_id=str(path))
    set_model_state(module, state[f"model.{name}"])


def export_full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded CPU state dict for export (collective: call on every rank; rank 0 gets the tensors,
    the others an empty dict). CPU offload keeps the full model out of accelerator memory."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
