"""A tiny trainer stage for the tests: flow matching of a tiny WanBackbone on fixed random latents.

    torchrun --nproc_per_node 2 --standalone tests/trainer_fixture.py OUT_DIR [train.key=value ...]
    [parallel.key=value ...] [fail_at=N]

It goes through everything a real stage does (FSDP2, bf16 mixed precision, activation checkpointing,
gradient accumulation, an EMA, a collective sample) at a size that trains in a second.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tiny import tiny_transformer

from apt.core.collectives import all_reduce_mean
from apt.core.command import exit_cleanly
from apt.core.config import load_config
from apt.models.backbone import WanBackbone
from apt.training.config import ParallelConfig, TrainConfig
from apt.training.distributed import DistInfo, init_distributed, parallelize_backbone, shutdown_distributed
from apt.training.ema import EMAUpdate
from apt.training.metrics import StepMetrics
from apt.training.run_folder import claim_run_folder
from apt.training.trainer import Trainer

LATENT = (4, 1, 4, 4)  # (C, F, H, W) for the tiny transformer (patch 1x2x2)
TEXT = (3, 16)  # (L, text_dim)


@dataclass
class FixtureConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=4, micro_batch_size=2, global_batch_size=4,
                                                                   checkpoint_every=2, sample_every=2))
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    fail_at: int = 0  # > 0: train_step raises at this step (to test the error path)
    lr: float = 1e-3

    def validate(self):
        self.train.validate()
        self.parallel.validate()


class RandomLatents:
    """Fixed random clips, the same on every rank (a generator of its own, not the global RNG)."""

    def __init__(self, n: int = 16, seed: int = 1234):
        g = torch.Generator().manual_seed(seed)
        self.latents, self.text = torch.randn(n, *LATENT, generator=g), torch.randn(n, *TEXT, generator=g)

    def __len__(self):
        return len(self.latents)

    def __getitem__(self, i: int) -> dict:
        return {"latent": self.latents[i], "text": self.text[i], "caption": f"clip {i}"}


class FlowMatchingStage:
    name = "fixture"

    def __init__(self, cfg: FixtureConfig, dist: DistInfo):
        self.cfg, self.dist = cfg, dist
        self.model = WanBackbone(tiny_transformer(seed=0)).train()
        self.ema = WanBackbone(tiny_transformer(seed=0)).eval().requires_grad_(False)
        parallelize_backbone(self.model, cfg.parallel)
        parallelize_backbone(self.ema, ParallelConfig(cfg.parallel.fsdp, False, cfg.parallel.mixed_precision))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr)
        g = torch.Generator().manual_seed(99)
        self.sample_noise, self.sample_text = torch.randn(2, *LATENT, generator=g), torch.randn(2, *TEXT, generator=g)

    def modules(self):
        return {"model": self.model, "ema": self.ema}

    def optimizers(self):
        return {"model": (self.model, self.optimizer)}

    def callbacks(self):
        return [EMAUpdate(self.ema, self.model, 0.9)]

    def train_step(self, batches, step: int) -> StepMetrics:
        if self.cfg.fail_at and step + 1 == self.cfg.fail_at:
            raise RuntimeError(f"planned failure at step {step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        metrics = StepMetrics(len(batches))
        for batch in batches:
            x0, text = batch["latent"], batch["text"]
            assert batch["caption"][0].startswith("clip ")
            noise, t = torch.randn_like(x0), torch.rand(x0.shape[0])  # from the (checkpointed) torch RNG
            x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
            loss = (self.model(x_t, t, text).float() - (noise - x0)).square().mean()
            (loss / len(batches)).backward()
            metrics.add("loss", loss)
        self.optimizer.step()
        assert all_reduce_mean(float(self.dist.rank)) == (self.dist.world_size - 1) / 2
        metrics.set("rank", float(self.dist.rank))  # logged: the mean over ranks
        return metrics

    @torch.no_grad()
    def sample(self, step: int, out_dir: Path) -> None:
        # every rank runs the sharded forward; rank 0 writes (a number stands in for a video)
        v = self.ema(self.sample_noise, torch.ones(2), self.sample_text).float()
        if self.dist.rank == 0:
            (out_dir / "samples").mkdir(parents=True, exist_ok=True)
            (out_dir / "samples" / f"step_{step:08d}.json").write_text(json.dumps({"mean_v": v.mean().item()}))


def main(argv: list[str]) -> dict:
    out_dir, overrides = argv[0], argv[1:]
    cfg = load_config(FixtureConfig, None, [f"train.out_dir={out_dir}"] + overrides)
    dist = init_distributed()
    lock = None
    try:
        trainer = Trainer(cfg.train, dist)
        lock = claim_run_folder(cfg, dist)  # as apt/training/launch.py does for the real stages
        return trainer.run(FlowMatchingStage(cfg, dist), RandomLatents())
    finally:
        if lock is not None:
            lock.close()
        shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1:])
    exit_cleanly(0)
