"""The one training harness of both stages: data order, resume, logging, checkpoints, samples.

A stage supplies only its models, optimisers and one step (see `Stage`); everything that must be
the same in every stage (what is checkpointed, in which order data arrives, what is logged) is here.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from apt.checkpoint import CheckpointManager, latest_checkpoint
from apt.config import TrainConfig
from apt.distributed import DistInfo, all_reduce_mean
from apt.run_log import RunLog


class Stage(Protocol):
    name: str  # recorded in checkpoints: a run refuses to resume another stage's checkpoint

    def modules(self) -> dict[str, nn.Module]:
        """Everything checkpointed (e.g. student, ema); frozen models need not be listed."""

    def optimizers(self) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
        """Each optimiser with the module whose parameters it steps."""

    def train_step(self, next_batch: Callable[[], dict], step: int) -> dict[str, float]:
        """Pull grad_accum micro-batches with next_batch(), backward, step the optimiser(s);
        return local scalar metrics (the harness averages them over ranks for the log)."""

    def sample(self, step: int, out_dir: Path) -> None:
        """Called on every rank (a sharded forward is collective); rank 0 writes the files."""


def collate(items: list[dict]) -> dict:
    return {k: torch.stack([it[k] for it in items]) if torch.is_tensor(items[0][k]) else [it[k] for it in items]
            for k in items[0]}


class DataStream:
    """Deterministic, resumable data order: a fresh permutation per epoch, seeded by (seed, epoch).

    `position` counts global samples consumed; each micro-batch advances it by mb * world_size and
    rank r takes slots [position + r*mb, position + (r+1)*mb). Resuming = restoring `position`.
    """

    def __init__(self, dataset, micro_batch_size: int, rank: int, world_size: int, seed: int, position: int = 0):
        if len(dataset) < micro_batch_size * world_size:
            raise ValueError(f"dataset has {len(dataset)} items, fewer than one global micro-batch "
                             f"({micro_batch_size} x {world_size} ranks)")
        self.dataset, self.mb, self.rank, self.world, self.seed = dataset, micro_batch_size, rank, world_size, seed
        self.position = position
        self._perm_epoch, self._perm = None, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.dataset), generator=g), epoch
        return self._perm

    def next_batch(self) -> dict:
        n, items = len(self.dataset), []
        start = self.position + self.rank * self.mb
        for k in range(start, start + self.mb):
            items.append(self.dataset[int(self._permutation(k // n)[k % n])])
        self.position += self.mb * self.world
        return collate(items)


class Harness:
    def __init__(self, cfg: TrainConfig, dist: DistInfo, dataset, stage: Stage):
        self.cfg, self.dist, self.dataset, self.stage = cfg, dist, dataset, stage
        self.out_dir = Path(cfg.out_dir)
        self.ckpt = CheckpointManager(self.out_dir, cfg.keep_checkpoints, dist.rank, dist.world_size)

    def _resume_path(self) -> Path | None:
        if self.cfg.resume == "never":
            return None
        if self.cfg.resume == "auto":
            return latest_checkpoint(self.out_dir)
        path = Path(self.cfg.resume)
        if not path.exists():
            raise FileNotFoundError(f"train.resume={path} does not exist")
        return path

    def _resume(self) -> tuple[int, int, Path | None]:
        """(step, data position, checkpoint) after restoring modules, optimisers and RNG."""
        # Seed first: a resume on another world size keeps these fresh per-rank seeds.
        seed = self.cfg.seed + self.dist.rank  # ranks draw different noise for different samples
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        path = self._resume_path()
        if path is None:
            return 0, 0, None
        meta = self.ckpt.load(path, self.stage.modules(), self.stage.optimizers())
        if meta.get("stage") != self.stage.name:
            raise ValueError(f"{path} is a {meta.get('stage')!r} checkpoint, not {self.stage.name!r}")
        return meta["step"], meta["data_position"], path

    def save(self, step: int, data: DataStream) -> Path:
        return self.ckpt.save(step, self.stage.modules(), self.stage.optimizers(),
                              {"data_position": data.position, "stage": self.stage.name})

    def run(self) -> dict:
        """Train to cfg.steps (resuming per cfg.resume); returns {step, metrics, out_dir}."""
        cfg, rank, name = self.cfg, self.dist.rank, self.stage.name
        step, position, resumed_from = self._resume()
        data = DataStream(self.dataset, cfg.micro_batch_size, rank, self.dist.world_size, cfg.seed, position)
        log = RunLog(self.out_dir, rank, resume_step=step if resumed_from is not None else None)
        if resumed_from is not None:
            log.message(f"[{name}] resumed from {resumed_from} at step {step}")
        # gloo reduces CPU tensors; NCCL needs them on this rank's GPU
        reduce_device = self.dist.device if self.dist.backend == "nccl" else None
        bar = tqdm(total=cfg.steps, initial=step, desc=name, disable=rank != 0, dynamic_ncols=True)
        last: dict = {}
        window_start, window_steps = time.perf_counter(), 0
        try:
            while step < cfg.steps:
                metrics = self.stage.train_step(data.next_batch, step)
                step += 1
                window_steps += 1
                if step % cfg.log_every == 0 or step == cfg.steps:
                    # collective: every rank reaches this line at the same steps
                    last = all_reduce_mean(metrics, device=reduce_device)
                    now = time.perf_counter()
                    last.update(step=step, seconds_per_step=round((now - window_start) / window_steps, 4),
                                samples_seen=data.position)
                    window_start, window_steps = now, 0
                    log.write(last)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in last.items()
                                     if k not in ("step", "samples_seen") and isinstance(v, float)}, refresh=False)
                bar.update(1)
                pause = time.perf_counter()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self.save(step, data)
                if step == cfg.steps or (cfg.sample_every and step % cfg.sample_every == 0):
                    self.stage.sample(step, self.out_dir)
                window_start += time.perf_counter() - pause  # seconds_per_step counts training only
        except BaseException as err:  # KeyboardInterrupt included: record why the run ended, re-raise
            what = "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
            log.write({"step": step, "error": what})
            log.message(f"[{name}] stopped at step {step}: {what}; "
                        f"last checkpoint: {latest_checkpoint(self.out_dir)}")
            raise
        finally:
            bar.close()
        return {"step": step, "metrics": last, "out_dir": str(self.out_dir)}
