"""Stage 1 as a harness stage: models, optimiser and one training step of consistency distillation."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch

from apt.backbone import WanBackbone
from apt.distributed import DistInfo, ema_update, parallelize_backbone
from apt.generator import OneStepGenerator
from apt.samples import SampleWriter
from distill.config import DistillConfig
from distill.consistency import cd_grid, cd_loss


class ConsistencyDistillation:
    name = "distill"

    def __init__(self, cfg: DistillConfig, dist: DistInfo, teacher: WanBackbone, negative_text: torch.Tensor,
                 samples: SampleWriter):
        self.cfg, self.dist, self.samples = cfg, dist, samples
        # The student starts as an exact copy of the teacher (stage 1 of the paper).
        self.student = WanBackbone(copy.deepcopy(teacher.model)).train().requires_grad_(True)
        self.ema = WanBackbone(copy.deepcopy(teacher.model)).eval().requires_grad_(False)
        self.teacher = teacher.eval().requires_grad_(False)
        par = cfg.parallel
        parallelize_backbone(self.student, par)
        no_ac = replace(par, activation_checkpointing=False)  # nothing to recompute without grad
        parallelize_backbone(self.ema, no_ac)
        parallelize_backbone(self.teacher, no_ac)
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=cfg.cd.lr, betas=(0.9, 0.99),
                                           weight_decay=cfg.cd.weight_decay)
        self.negative_text = negative_text.to(dist.device)  # (1, L, D)
        self.grid = cd_grid(cfg.cd.num_steps, cfg.cd.shift).to(dist.device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"student": self.student, "ema": self.ema}

    def optimizers(self):
        return {"student": (self.student, self.optimizer)}

    def train_step(self, next_batch, step: int) -> dict[str, float]:
        cd, accum = self.cfg.cd, self.cfg.train.grad_accum
        target = self.ema if cd.target == "ema" else self.student
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for _ in range(accum):
            batch = next_batch()
            x0, text = batch["latent"].to(self.dist.device), batch["text"].to(self.dist.device)
            negative = self.negative_text.expand(x0.shape[0], -1, -1)
            loss, metrics = cd_loss(self.student, target, self.teacher, x0, text, negative, self.grid,
                                    cd.guidance_scale)
            (loss / accum).backward()
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v / accum
        max_norm = cd.max_grad_norm if cd.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), max_norm)
        self.optimizer.step()
        ema_update(self.ema, self.student, cd.ema_decay)
        totals["grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        return totals

    @torch.no_grad()
    def sample(self, step: int, out_dir: Path) -> None:
        """One-step samples of the EMA generator at fixed seeds (every rank runs the sharded forward)."""
        self.samples.write(OneStepGenerator(self.ema), step, out_dir)
