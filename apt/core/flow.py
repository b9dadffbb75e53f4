"""Rectified-flow math (the Seaweed-APT paper's conventions), nothing else.

    x_t = (1 - t) * x0 + t * eps,   t in [0, 1],   v = eps - x0
    x0 = x_t - t * v,   eps = x_t + (1 - t) * v
    shift(t, s) = s * t / (1 + (s - 1) * t)
"""

from __future__ import annotations

from typing import Callable

import torch

# velocity_fn(x_t, t, text) -> v; t is a (B,) tensor in [0, 1]
VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def per_sample(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """t as a tensor broadcastable over `like` (per-sample t of shape (B,) or a scalar)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.view(-1, *([1] * (like.ndim - 1))) if t.ndim else t


def shift(t: torch.Tensor | float, s: float) -> torch.Tensor | float:
    """Warp t towards 1 (more noise) for s > 1; identity for s = 1; keeps 0 and 1 fixed."""
    if s <= 0:
        raise ValueError(f"timestep shift must be positive, got {s}")
    return s * t / (1 + (s - 1) * t)


def add_noise(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    t = per_sample(t, x0)
    return (1 - t) * x0 + t * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return eps - x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    return x_t - per_sample(t, x_t) * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    return x_t + (1 - per_sample(t, x_t)) * v


def v_from_x0(x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Velocity that maps x_t to x0; undefined at t = 0."""
    return (x_t - x0) / per_sample(t, x_t)


def sample_timesteps(batch: int, s: float = 1.0, generator: torch.Generator | None = None,
                     device=None) -> torch.Tensor:
    """t ~ shift(U(0, 1), s), one per sample."""
    u = torch.rand(batch, generator=generator, device=device)
    return shift(u, s)


def timestep_grid(steps: int, s: float = 1.0) -> torch.Tensor:
    """steps + 1 shifted times from 1 down to 0: the Euler sampler's schedule."""
    if steps < 1:
        raise ValueError(f"need at least one sampling step, got {steps}")
    return shift(torch.linspace(1.0, 0.0, steps + 1), s)


def guided_velocity(velocity_fn: VelocityFn, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                    negative_text: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_neg + scale * (v_pos - v_neg), both halves in one batch; scale 1 is
    the conditional velocity alone. Every guided sampler goes through here, so a missing negative
    prompt fails here rather than silently sampling without guidance."""
    if scale == 1.0:
        return velocity_fn(x_t, t, text)
    if negative_text is None:
        raise ValueError("classifier-free guidance needs negative_text (the embedded negative prompt)")
    v = velocity_fn(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text, negative_text]))
    v_pos, v_neg = v.chunk(2)
    return v_neg + scale * (v_pos - v_neg)


@torch.no_grad()
def euler_sample_from(velocity_fn: VelocityFn, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, steps: int,
                      guidance_scale: float = 1.0, negative_text: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate from per-sample times t (B,) down to 0 in `steps` equal Euler steps (each sample its own
    grid t, t (k-1)/k, ..., 0). One step is the x0 prediction x_t - t v(x_t, t)."""
    if steps < 1:
        raise ValueError(f"need at least one sampling step, got {steps}")
    x = x_t
    for k in range(steps, 0, -1):
        t_cur, t_next = t * k / steps, t * (k - 1) / steps
        v = guided_velocity(velocity_fn, x, t_cur, text, negative_text, guidance_scale)
        x = x + per_sample(t_next - t_cur, x) * v
    return x


@torch.no_grad()
def euler_sample(velocity_fn: VelocityFn, noise: torch.Tensor, text: torch.Tensor, steps: int,
                 guidance_scale: float = 1.0, negative_text: torch.Tensor | None = None,
                 shift_s: float = 1.0) -> torch.Tensor:
    """Integrate dx/dt = v from t = 1 (noise) to t = 0 with `steps` Euler steps.

    One step from pure noise is x0 = z - v(z, 1): the one-step generator's formula.
    """
    grid = timestep_grid(steps, shift_s).tolist()
    x = noise
    for t_cur, t_next in zip(grid[:-1], grid[1:]):
        t = torch.full((x.shape[0],), t_cur, device=x.device, dtype=x.dtype)
        v = guided_velocity(velocity_fn, x, t, text, negative_text, guidance_scale)
        x = x + (t_next - t_cur) * v
    return x
