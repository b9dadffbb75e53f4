"""Stage 1 as a harness stage: models, optimiser and one training step of consistency distillation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from apt.backbone import WanBackbone
from apt.distributed import DistInfo, grad_norm, parallelize_backbone
from apt.ema import ema_update, trainable_with_ema
from apt.estimate import per_sample_flops, tokens_of
from apt.generator import OneStepGenerator
from apt.previews import SampleWriter
from distill.config import DistillConfig
from distill.consistency import cd_grid, cd_loss


class ConsistencyDistillation:
    name = "distill"

    def __init__(self, cfg: DistillConfig, dist: DistInfo, teacher: WanBackbone, negative_text: torch.Tensor,
                 previews: SampleWriter):
        self.cfg, self.dist, self.previews = cfg, dist, previews
        self.accum = cfg.train.grad_accum(dist.world_size)
        # The student starts as an exact copy of the teacher (stage 1 of the paper).
        self.student, self.ema = trainable_with_ema(teacher, cfg.parallel)
        self.teacher = teacher.eval().requires_grad_(False)
        parallelize_backbone(self.teacher, replace(cfg.parallel, activation_checkpointing=False))
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=cfg.cd.lr, betas=(0.9, 0.99),
                                           weight_decay=cfg.cd.weight_decay)
        self.negative_text = negative_text.to(dist.device)  # (1, L, D)
        self.grid = cd_grid(cfg.cd.num_steps, cfg.cd.shift).to(dist.device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"student": self.student, "ema": self.ema}

    def optimizers(self):
        return {"student": (self.student, self.optimizer)}

    def flops_per_sample(self, latent_shape: tuple[int, ...], text_tokens: int) -> float:
        model = self.student.config
        return per_sample_flops("distill", dict(model), tokens_of(latent_shape, model.patch_size), text_tokens,
                                self.student.num_blocks, (self.student.num_blocks,),
                                activation_checkpointing=self.cfg.parallel.activation_checkpointing)["per_sample"]

    def train_step(self, next_batch, step: int) -> dict[str, float]:
        cd, accum = self.cfg.cd, self.accum
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
        totals["grad_norm"] = grad_norm(self.student.parameters(), cd.max_grad_norm)
        self.optimizer.step()
        ema_update(self.ema, self.student, cd.ema_decay)
        return totals

    @torch.no_grad()
    def sample(self, step: int, out_dir: Path) -> None:
        """One-step previews of the EMA generator at fixed seeds (every rank runs the sharded forward)."""
        self.previews.write(OneStepGenerator(self.ema), step, out_dir)
