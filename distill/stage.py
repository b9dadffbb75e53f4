"""Stage 1 as a trainer stage: models, optimiser and one update of consistency distillation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from apt.models.backbone import WanBackbone
from apt.models.generator import OneStepGenerator
from apt.training.distributed import DistInfo, grad_norm, parallelize_backbone
from apt.training.ema import EMAUpdate, trainable_with_ema
from apt.training.flops import per_sample_flops, tokens_of
from apt.training.metrics import StepMetrics
from apt.training.previews import SampleWriter
from distill.config import DistillConfig
from distill.consistency import cd_grid, cd_loss


class ConsistencyDistillation:
    name = "distill"

    def __init__(self, cfg: DistillConfig, dist: DistInfo, teacher: WanBackbone, negative_text: torch.Tensor,
                 previews: SampleWriter):
        self.cfg, self.dist, self.previews = cfg, dist, previews
        # The student starts as an exact copy of the teacher (stage 1 of the paper).
        self.student, self.ema = trainable_with_ema(teacher, cfg.parallel, lora=cfg.model.lora)
        self.teacher = teacher.eval().requires_grad_(False)
        parallelize_backbone(self.teacher, replace(cfg.parallel, activation_checkpointing=False))
        trainable = [p for p in self.student.parameters() if p.requires_grad]  # all, or the adapter
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.cd.lr, betas=(0.9, 0.99),
                                           weight_decay=cfg.cd.weight_decay)
        self.negative_text = negative_text.to(dist.device)  # (1, L, D)
        self.grid = cd_grid(cfg.cd.num_steps, cfg.cd.shift).to(dist.device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"student": self.student, "ema": self.ema}

    def optimizers(self):
        return {"student": (self.student, self.optimizer)}

    def callbacks(self):
        return [EMAUpdate(self.ema, self.student, self.cfg.cd.ema_decay)]

    def flops_per_sample(self, latent_shape: tuple[int, ...], text_tokens: int) -> float:
        model = self.student.config
        return per_sample_flops("distill", dict(model), tokens_of(latent_shape, model.patch_size), text_tokens,
                                self.student.num_blocks, (self.student.num_blocks,),
                                activation_checkpointing=self.cfg.parallel.activation_checkpointing,
                                lora=self.cfg.model.lora.enabled)["per_sample"]

    def train_step(self, batches, step: int) -> StepMetrics:
        cd = self.cfg.cd
        target = self.ema if cd.target == "ema" else self.student
        self.optimizer.zero_grad(set_to_none=True)
        metrics = StepMetrics(len(batches))
        for batch in batches:
            x0, text = batch["latent"], batch["text"]
            negative = self.negative_text.expand(x0.shape[0], -1, -1)
            loss, values = cd_loss(self.student, target, self.teacher, x0, text, negative, self.grid,
                                   cd.guidance_scale)
            (loss / len(batches)).backward()
            for key, value in values.items():
                metrics.add(key, value)
        metrics.set("grad_norm", grad_norm(self.student.parameters(), cd.max_grad_norm))
        self.optimizer.step()
        return metrics

    @torch.no_grad()
    def sample(self, step: int, out_dir: Path) -> None:
        """One-step previews of the EMA generator at fixed seeds (every rank runs the sharded forward)."""
        self.previews.write(OneStepGenerator(self.ema), step, out_dir)
