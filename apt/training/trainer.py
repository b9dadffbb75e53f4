"""The one trainer of every stage: it owns the loop.

It derives the micro-batch count once, hands a stage each update's micro-batches, syncs the
step's metrics once (they stay on the device until then), runs the one finite check, calls the
stage's callbacks (EMA, collapse guards), logs, checkpoints, resumes and writes previews. A stage
supplies only its models, optimisers, callbacks and the step over the micro-batches it is handed
(see `Stage`).
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from apt.core.collectives import any_rank
from apt.data.stream import DataStream
from apt.training.callbacks import Callback
from apt.training.checkpoint import CheckpointManager, CorruptCheckpoint, is_complete
from apt.training.config import TrainConfig
from apt.training.device_stats import device_peak_flops, peak_memory_gb
from apt.training.distributed import DistInfo, context_parallel_divergence, local_tensor
from apt.training.metrics import StepMetrics
from apt.training.run_folder import checkpoints_dir, latest_checkpoint, samples_dir
from apt.training.run_log import RunLog, setup_logging

PREVIEW_GIF = "preview.gif"  # what a stage's sample() writes for TensorBoard's video view


# A trained diffusion transformer's weights are O(1) (the toy's largest: 4; Wan's: tens): a weight past
# this is a flipped bit or a diverged run, not a value to save.
MAX_ABS_WEIGHT = 1e4


class NonFiniteError(FloatingPointError):
    """A loss, gradient norm or weight turned NaN or infinite (or a weight implausibly large)."""


def plausible(weights: torch.Tensor) -> bool:
    return bool(weights.numel() == 0 or weights.abs().max() <= MAX_ABS_WEIGHT)


class MicroBatches:
    """One update's micro-batches: drawn from the data stream as they are used, moved to the device.
    Iterating again draws the next ones (a stage whose two halves each take their own data)."""

    def __init__(self, data: DataStream, count: int, device: torch.device):
        self.data, self.count, self.device = data, count, device

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict]:
        for _ in range(self.count):
            batch = self.data.next_batch()
            yield {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}


class Stage(Protocol):
    name: str  # recorded in checkpoints: a run refuses to resume another stage's checkpoint

    def modules(self) -> dict[str, nn.Module]:
        """Everything checkpointed (e.g. student, ema); frozen models need not be listed."""

    def optimizers(self) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
        """Each optimiser with the module whose parameters it steps."""

    def callbacks(self) -> list[Callback]:
        """Called after each update (apt/training/callbacks.py), in this order."""

    def train_step(self, batches: MicroBatches, step: int) -> StepMetrics:
        """Forward and backward over the update's micro-batches, step the optimiser(s); the metrics
        stay on the device (the trainer averages them over ranks once)."""

    def sample(self, step: int, out_dir: Path) -> None:
        """Called on every rank (a sharded forward is collective); rank 0 writes the files."""

    def flops_per_sample(self, latent_shape: tuple[int, ...], text_tokens: int) -> float:
        """Model FLOPs one training sample costs (apt/training/flops.py), for the logged utilisation."""


class Trainer:
    """Made before the models (a global batch the ranks cannot make fails at once); `run` trains."""

    def __init__(self, cfg: TrainConfig, dist: DistInfo):
        self.cfg, self.dist = cfg, dist
        # per rank and update: derived here only; a context-parallel group shares its micro-batches
        self.micro_batches = cfg.grad_accum(dist.dp_size)
        self.global_batch = cfg.micro_batch_size * self.micro_batches * dist.dp_size
        self.out_dir = Path(cfg.out_dir)
        self.ckpt = CheckpointManager(checkpoints_dir(self.out_dir), cfg.keep_checkpoints, dist.rank,
                                      dist.world_size, dist.context_parallel)
        self.stage: Stage | None = None
        self.dataset = None
        self.callbacks: list[Callback] = []

    def _resume_path(self) -> Path | None:
        if self.cfg.resume == "never":
            return None
        if self.cfg.resume == "auto":
            return latest_checkpoint(self.out_dir)
        path = Path(self.cfg.resume)
        if not path.exists():
            raise FileNotFoundError(f"train.resume={path} does not exist")
        return path

    def _resume(self, log: Callable[[str], None]) -> tuple[int, int, Path | None]:
        """(step, data position, checkpoint) after restoring modules, optimisers and RNG. With
        train.resume=auto a corrupt newest checkpoint is skipped for the newest intact one (logged)."""
        # Seed first: a resume on another world size keeps these fresh per-rank seeds.
        # groups draw different noise for different samples; a context-parallel group's ranks the same
        seed = self.cfg.seed + self.dist.dp_rank
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        path = self._resume_path()
        if path is None:
            return 0, 0, None
        candidates = [path]
        if self.cfg.resume == "auto":  # older complete checkpoints, newest first
            candidates += sorted((p for p in path.parent.glob("step_*") if is_complete(p) and p.name < path.name),
                                 reverse=True)
        # The run's settings win over the checkpoint's optimiser hyperparameters (equal unless the
        # resume was allowed to change them: train.allow_config_change).
        configured = {k: [{h: v for h, v in g.items() if h != "params"} for g in opt.param_groups]
                      for k, (_, opt) in self.stage.optimizers().items()}
        for i, candidate in enumerate(candidates):
            try:
                meta = self.ckpt.load(candidate, self.stage.modules(), self.stage.optimizers())
                break
            except CorruptCheckpoint as err:
                if i + 1 == len(candidates):
                    raise FileNotFoundError(f"{err}; no intact checkpoint to resume from "
                                            f"(train.resume=never starts afresh)") from None
                log(f"[{self.stage.name}] {err}: resuming from {candidates[i + 1]} instead")
        if meta.get("stage") != self.stage.name:
            raise ValueError(f"{candidate} is a {meta.get('stage')!r} checkpoint, not {self.stage.name!r}")
        for k, (_, opt) in self.stage.optimizers().items():
            for group, settings in zip(opt.param_groups, configured[k]):
                group.update(settings)
        self._restore_rank_state(meta.get("rank_state"))
        return meta["step"], meta["data_position"], candidate

    def _rank_state(self) -> dict:
        """What the stage and its callbacks carry across a resume besides models and optimisers (the stop
        rule's counters, the running AUC's window)."""
        stage_state = self.stage.state_dict() if hasattr(self.stage, "state_dict") else {}
        return {"stage": stage_state, "callbacks": [cb.state_dict() for cb in self.callbacks]}

    def _restore_rank_state(self, state: dict | None) -> None:
        if not state:  # a checkpoint of another world size or of an earlier version: start them afresh
            return
        if state.get("stage") and hasattr(self.stage, "load_state_dict"):
            self.stage.load_state_dict(state["stage"])
        for callback, saved in zip(self.callbacks, state.get("callbacks", [])):
            if saved:
                callback.load_state_dict(saved)

    def _check_finite(self, step: int, metrics: dict[str, float]) -> None:
        """Stop, before anything is saved, when a loss or gradient norm is not finite: training on would
        only overwrite good checkpoints with NaN ones. The metrics are the ranks' mean, so one rank's
        NaN is every rank's and every rank stops together."""
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:
            raise NonFiniteError(f"step {step}: {bad} is not finite; the last good checkpoint is "
                                 f"{latest_checkpoint(self.out_dir)}. Lower the learning rate{self._advice()} "
                                 f"or check the data, then resume")

    def _advice(self) -> str:
        advice = getattr(self.stage, "nonfinite_advice", "")
        return f" {advice}" if advice else ""

    def _check_context_parallel(self, step: int) -> None:
        diverged = context_parallel_divergence(self.dist)
        if diverged:
            raise RuntimeError(f"step {step}: the random generators of context-parallel group(s) {diverged} differ "
                               "across their ranks (something drew random numbers on some ranks only), so their "
                               "token shares no longer belong to one sample; the last good checkpoint is "
                               f"{latest_checkpoint(self.out_dir)}")

    def _check_weights(self, step: int) -> None:
        """Before every save: weights that are not finite, or far beyond any trained network's scale (a
        flipped exponent bit turns 0.1 into 1e29, which no finite check sees), are never checkpointed."""
        bad = [f"{name}.{p_name}" for name, module in self.stage.modules().items()
               for p_name, p in module.named_parameters() if not plausible(local_tensor(p.detach()))]
        if any_rank(bool(bad)):
            raise NonFiniteError(f"step {step}: weights are not finite or beyond |w| = {MAX_ABS_WEIGHT:g} "
                                 f"({', '.join(bad[:3]) or 'on another rank'}); not saved; the last good checkpoint "
                                 f"is {latest_checkpoint(self.out_dir)}")

    def save(self, step: int, data: DataStream) -> Path:
        self._check_weights(step)
        return self.ckpt.save(step, self.stage.modules(), self.stage.optimizers(),
                              {"data_position": data.position, "stage": self.stage.name}, self._rank_state())

    def _flops_per_step(self) -> float | None:
        """Model FLOPs of one update over all ranks, if the stage can count them."""
        counter = getattr(self.stage, "flops_per_sample", None)
        if counter is None:
            return None
        item = self.dataset[0]
        return counter(tuple(item["latent"].shape), int(item["text"].shape[0])) * self.global_batch

    def _throughput(self, seconds_per_step: float, flops_per_step: float | None, peak: float | None) -> dict:
        out = {"peak_memory_gb": peak_memory_gb(self.dist.device)}
        if flops_per_step and seconds_per_step > 0:
            per_device = flops_per_step / seconds_per_step / self.dist.world_size
            out["tflops_per_device"] = float(f"{per_device / 1e12:.4g}")  # 4 significant digits, any scale
            if peak:
                out["mfu"] = float(f"{per_device / peak:.4g}")
        return out

    def run(self, stage: Stage, dataset) -> dict:
        """Train `stage` on `dataset` to cfg.steps (resuming per cfg.resume); returns {step, metrics, out_dir}."""
        self.stage, self.dataset = stage, dataset
        self.callbacks = list(stage.callbacks()) if hasattr(stage, "callbacks") else []
        cfg, rank, name = self.cfg, self.dist.rank, stage.name
        setup_logging(rank)
        notes: list[str] = []
        step, position, resumed_from = self._resume(notes.append)
        data = DataStream(self.dataset, cfg.micro_batch_size, self.dist.dp_rank, self.dist.dp_size, cfg.seed, position)
        batches = MicroBatches(data, self.micro_batches, self.dist.device)
        callbacks = self.callbacks
        log = RunLog(self.out_dir, rank, resume_step=step if resumed_from is not None else None,
                     tensorboard=cfg.tensorboard)
        for note in notes:
            log.message(note)
        if resumed_from is not None:
            log.message(f"[{name}] resumed from {resumed_from} at step {step}")
        flops_per_step = self._flops_per_step()
        peak = device_peak_flops(self.dist.device, cfg.peak_tflops)
        bar = tqdm(total=cfg.steps, initial=step, desc=name, disable=rank != 0, dynamic_ncols=True)
        last: dict = {}
        window_start, window_steps = time.perf_counter(), 0
        try:
            while step < cfg.steps:
                metrics = stage.train_step(batches, step)
                for callback in callbacks:
                    callback.after_update(step)
                synced = metrics.synced()  # the step's one host sync and collective
                self._check_finite(step + 1, synced)
                if self.dist.context_parallel > 1 and (step == 0 or (step + 1) % cfg.log_every == 0):
                    self._check_context_parallel(step + 1)
                for callback in callbacks:
                    callback.after_sync(step, synced)
                step += 1
                window_steps += 1
                if step % cfg.log_every == 0 or step == cfg.steps:
                    last = dict(synced)
                    now = time.perf_counter()
                    seconds = (now - window_start) / window_steps
                    last.update(step=step, seconds_per_step=round(seconds, 4), samples_seen=data.position,
                                **self._throughput(seconds, flops_per_step, peak))
                    window_start, window_steps = now, 0
                    log.write(last)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in last.items()
                                     if k not in ("step", "samples_seen") and isinstance(v, float)}, refresh=False)
                bar.update(1)
                pause = time.perf_counter()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self.save(step, data)
                if step == cfg.steps or (cfg.sample_every and step % cfg.sample_every == 0):
                    stage.sample(step, self.out_dir)
                    gif = samples_dir(self.out_dir, step) / PREVIEW_GIF
                    if gif.exists():
                        log.video("preview", gif, step)
                window_start += time.perf_counter() - pause  # seconds_per_step counts training only
        except BaseException as err:  # KeyboardInterrupt included: record why the run ended, re-raise
            what = "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
            log.write({"step": step, "error": what})
            log.message(f"[{name}] stopped at step {step}: {what}; "
                        f"last checkpoint: {latest_checkpoint(self.out_dir)}")
            raise
        finally:
            bar.close()
            log.close()
        return {"step": step, "metrics": last, "out_dir": str(self.out_dir)}
