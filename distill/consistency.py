"""Discrete-time consistency distillation (Song et al. 2023) in rectified-flow form.

Consistency function of a velocity model:  f(x_t, t) = x_t - t * v(x_t, t)   (the x0 prediction).
It satisfies the boundary condition f(x, 0) = x by construction, and at t = 1 it is the one-step
generator G(z) = z - v(z, 1) that stage 2 trains adversarially.

One CD step, for data x0 and a random interval n of the shifted grid 0 = t_0 < ... < t_N = 1:
    x_{n+1} = (1 - t_{n+1}) x0 + t_{n+1} eps
    x_n     = x_{n+1} + (t_n - t_{n+1}) * v_teacher^cfg(x_{n+1}, t_{n+1})     (one Euler step, CFG baked in)
    loss    = || f_student(x_{n+1}, t_{n+1}) - stopgrad f_target(x_n, t_n) ||^2
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from apt.core import flow


def consistency_fn(model: Callable, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    return flow.x0_from_v(x_t, model(x_t, t, text), t)


def cd_grid(num_steps: int, shift_s: float) -> torch.Tensor:
    """t_0 = 0 < t_1 < ... < t_N = 1, uniform in n then shifted (APT2: N = 32, s = 24)."""
    if num_steps < 1:
        raise ValueError(f"consistency distillation needs at least 1 discretisation step, got {num_steps}")
    return flow.shift(torch.linspace(0.0, 1.0, num_steps + 1), shift_s)


def teacher_ode_step(teacher: Callable, x_next: torch.Tensor, t_next: torch.Tensor, t_cur: torch.Tensor,
                     text: torch.Tensor, negative_text: torch.Tensor | None, guidance_scale: float) -> torch.Tensor:
    """One Euler step of the guided teacher ODE from t_{n+1} down to t_n."""
    v = flow.guided_velocity(teacher, x_next, t_next, text, negative_text, guidance_scale)
    return x_next + flow.per_sample(t_cur - t_next, x_next) * v


def cd_loss(student: Callable, target: Callable, teacher: Callable, x0: torch.Tensor, text: torch.Tensor,
            negative_text: torch.Tensor | None, grid: torch.Tensor, guidance_scale: float,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MSE consistency loss on one batch; returns (loss, metrics as detached scalars on the device)."""
    b = x0.shape[0]
    n = torch.randint(0, len(grid) - 1, (b,), generator=generator)
    t_next, t_cur = grid[n + 1].to(x0), grid[n].to(x0)
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    x_next = flow.add_noise(x0, eps, t_next)
    with torch.no_grad():
        x_cur = teacher_ode_step(teacher, x_next, t_next, t_cur, text, negative_text, guidance_scale)
        want = consistency_fn(target, x_cur, t_cur, text)
    got = consistency_fn(student, x_next, t_next, text)
    loss = F.mse_loss(got.float(), want.float())
    return loss, {"loss": loss.detach(), "t_mean": t_next.mean()}
