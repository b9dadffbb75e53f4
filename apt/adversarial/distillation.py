"""ADD's distillation term (Sauer et al. 2023, arXiv 2311.17042), beyond the paper: the teacher's
guidance, which pure APT loses (docs/method.md), pulls on G while D keeps it on the data.

G's samples are re-noised to t ~ shift(U(0,1), distill_shift); the frozen teacher's guided x0
prediction there (or `steps` guided Euler steps from t to 0) is a fixed target; the squared error is
weighted by c(t) = 1 - t (ADD's alpha_t: the teacher's prediction from nearly pure noise is a blurred
average, worth little). Lazily weighted like the penalties (adv.distill_every).
"""

from __future__ import annotations

import torch

from apt.adversarial.terms import LazyTerm
from apt.core import flow


class GuidanceDistillation(LazyTerm):
    def __init__(self, teacher, negative_text: torch.Tensor | None, weight: float, every: int, guidance_scale: float,
                 shift: float, steps: int):
        super().__init__(weight, every)
        self.teacher, self.negative_text = teacher, negative_text
        self.guidance_scale, self.shift, self.steps = guidance_scale, shift, steps

    def loss(self, fake: torch.Tensor, text: torch.Tensor, metrics) -> torch.Tensor:
        b = fake.shape[0]
        t = flow.sample_timesteps(b, self.shift).to(fake.device)
        with torch.no_grad():
            x_t = flow.add_noise(fake.detach(), torch.randn_like(fake), t)
            negative = self.negative_text.expand(b, -1, -1) if self.negative_text is not None else None
            target = flow.euler_sample_from(self.teacher, x_t, t, text, self.steps, self.guidance_scale, negative)
        per_sample = (fake.float() - target.float()).square().flatten(1).mean(1)
        loss = ((1 - t.float()) * per_sample).mean()
        metrics.add("distill", loss)
        return loss
