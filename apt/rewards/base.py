"""Rewards: differentiable scores of decoded frames against their prompts, higher is better.

    reward(videos (B, 3, F, H, W) in [-1, 1], prompts: list[str]) -> (B,) scores

A reward is any module with a `name` that maps videos and prompts to scores; its kind (how it is
built from a config entry) is registered in apt/rewards/registry.py. `Rewards` is the weighted sum
of several, each scoring the frames its entry picks, each logged on its own.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from apt.core.config import ConfigError


class Reward(Protocol):
    name: str

    def __call__(self, videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(B,) scores, differentiable in `videos`."""


def pick_frames(videos: torch.Tensor, frames: list[int] | tuple[int, ...]) -> torch.Tensor:
    """(B, 3, F, H, W) -> the listed frames (negative indices count from the end); all when empty."""
    if not frames:
        return videos
    n = videos.shape[2]
    index = [f % n for f in frames if -n <= f < n]
    if not index:
        raise ValueError(f"none of the reward's frames {list(frames)} exists in a {n}-frame clip")
    return videos[:, :, index]


class Rewards(nn.Module):
    """A weighted sum of rewards: (total (B,), {name: (B,) each reward's own scores}). terms: (reward,
    weight) or (reward, weight, frames), frames being the pixel frames that reward scores ([] = all)."""

    def __init__(self, terms: list[tuple]):
        super().__init__()
        terms = [(*t, ()) if len(t) == 2 else tuple(t) for t in terms]
        names = [r.name for r, _, _ in terms]
        if len(set(names)) != len(names):
            raise ConfigError(f"adv.rewards: two rewards share a name ({', '.join(names)}): give each a name")
        self.rewards = nn.ModuleList([r if isinstance(r, nn.Module) else _Wrapped(r) for r, _, _ in terms])
        self.weights = [w for _, w, _ in terms]
        self.frames = [tuple(f) for _, _, f in terms]

    def forward(self, videos: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        each = {r.name: r(pick_frames(videos, f), prompts) for r, f in zip(self.rewards, self.frames)}
        total = sum(w * each[r.name] for r, w in zip(self.rewards, self.weights))
        return total, each


class _Wrapped(nn.Module):
    """A reward that is a plain callable (a user's `kind: python` class need not be a module)."""

    def __init__(self, reward):
        super().__init__()
        self.reward, self.name = reward, reward.name

    def forward(self, videos, prompts):
        return self.reward(videos, prompts)
