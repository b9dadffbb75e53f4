"""The one training harness of both stages: data order, resume, logging, checkpoints, samples.

A stage supplies only its models, optimisers and one step:

    class Stage(Protocol):
        name: str
        def modules(self) -> dict[str, nn.Module]                      # everything checkpointed
        def optimizers(self) -> dict[str, tuple[nn.Module, Optimizer]]
        def train_step(self, next_batch, step) -> dict[str, float]    # pulls its micro-batches
        def sample(self, step, out_dir) -> None                        # called on every rank
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from apt.checkpoint import CheckpointManager, latest_checkpoint
from apt.config import TrainConfig
from apt.distributed import DistInfo, all_reduce_mean
from apt.run_log import RunLog


class Stage(Protocol):
    name: str

    def modules(self) -> dict: ...
    def optimizers(self) -> dict: ...
    def train_step(self, next_batch, step: int) -> dict: ...
    def sample(self, step: int, out_dir: Path) -> None: ...


class TrainingStopped(RuntimeError):
    """Raised by a stage's step to stop the run with a message (e.g. collapse detected)."""


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
        self.ckpt = CheckpointManager(self.out_dir, cfg.keep_checkpoints, dist.rank)

    def _resume_path(self) -> Path | None:
        if self.cfg.resume == "never":
            return None
        if self.cfg.resume == "auto":
            return latest_checkpoint(self.out_dir)
        path = Path(self.cfg.resume)
        if not path.exists():
            raise FileNotFoundError(f"train.resume={path} does not exist")
        return path

    def save(self, step: int, data: DataStream) -> Path:
        return self.ckpt.save(step, self.stage.modules(), self.stage.optimizers(),
                              {"data_position": data.position, "stage": self.stage.name,
                               "world_size": self.dist.world_size})

    def run(self) -> dict:
        cfg, rank = self.cfg, self.dist.rank
        step, position = 0, 0
        resume = self._resume_path()
        if resume is not None:
            meta = self.ckpt.load(resume, self.stage.modules(), self.stage.optimizers())
            if meta.get("stage") != self.stage.name:
                raise ValueError(f"{resume} is a {meta.get('stage')!r} checkpoint, not {self.stage.name!r}")
            step, position = meta["step"], meta["data_position"]
            if rank == 0:
                tqdm.write(f"[{self.stage.name}] resumed from {resume} at step {step}")
        else:
            torch.manual_seed(cfg.seed + rank)
        data = DataStream(self.dataset, cfg.micro_batch_size, rank, self.dist.world_size, cfg.seed, position)
        log = RunLog(self.out_dir, rank, resume_step=step if resume is not None else None)
        bar = tqdm(total=cfg.steps, initial=step, desc=self.stage.name, disable=rank != 0, dynamic_ncols=True)
        last: dict = {}
        try:
            while step < cfg.steps:
                start = time.perf_counter()
                metrics = self.stage.train_step(data.next_batch, step)
                step += 1
                if step % cfg.log_every == 0 or step == cfg.steps:
                    last = all_reduce_mean(metrics, device=self.dist.device if self.dist.backend == "nccl" else None)
                    last.update(step=step, seconds_per_step=round(time.perf_counter() - start, 4),
                                samples_seen=data.position)
                    log.write(last)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in last.items()
                                     if k not in ("step", "samples_seen") and isinstance(v, float)}, refresh=False)
                bar.update(1)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self.save(step, data)
                if step == cfg.steps or (cfg.sample_every and step % cfg.sample_every == 0):
                    self.stage.sample(step, self.out_dir)
        except TrainingStopped as err:
            if rank == 0:
                tqdm.write(f"[{self.stage.name}] stopped at step {step}: {err}")
            log.write({"step": step, "stopped": str(err)})
            raise
        finally:
            bar.close()
        return {"step": step, "metrics": last, "out_dir": str(self.out_dir)}
