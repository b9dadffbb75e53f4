"""Rewards: scores of decoded frames against their prompts, higher is better.

    reward(videos (B, 3, F, H, W) in [-1, 1], prompts: list[str]) -> (B,) scores

A reward is any module with a `name` that maps videos and prompts to scores; its kind (how it is
built from a config entry) is registered in apt/rewards/registry.py. `Rewards` is the weighted sum
of several, each scored as its entry says (`Scoring`: which frames, per frame or per clip, pooled
how, normalised or not), each logged on its own. Reward feedback needs the scores differentiable in
the videos; the policy objectives (apt/adversarial/policy.py) do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from einops import rearrange
from torch import nn

from apt.core.collectives import sum_over_ranks
from apt.core.config import ConfigError

PER_FRAME = ("", "mean", "min")


class Reward(Protocol):
    name: str

    def __call__(self, videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(B,) scores."""


@dataclass(frozen=True)
class Scoring:
    """How one reward is applied (the fields of its config entry, apt/rewards/config.py)."""

    weight: float = 1.0
    frames: tuple[int, ...] = ()
    subsample: int = 0
    per_frame: str = ""
    temporal: float = 0.0
    normalize: bool = False
    window: int = 1

    def __post_init__(self):
        if self.per_frame not in PER_FRAME:
            raise ConfigError(f"per_frame must be one of {', '.join(map(repr, PER_FRAME))}, got {self.per_frame!r}")
        if self.temporal and not self.per_frame:
            raise ConfigError("temporal is a penalty on the spread of per-frame scores: it needs per_frame")
        if self.subsample < 0 or self.temporal < 0 or self.window < 1:
            raise ConfigError("subsample and temporal must be >= 0, window >= 1")
        if self.window > 1 and not self.per_frame:
            raise ConfigError("window is the length of the pieces per_frame scores: it needs per_frame")


def pick_frames(videos: torch.Tensor, frames: list[int] | tuple[int, ...]) -> torch.Tensor:
    """(B, 3, F, H, W) -> the listed frames (negative indices count from the end); all when empty."""
    if not frames:
        return videos
    n = videos.shape[2]
    index = [f % n for f in frames if -n <= f < n]
    if not index:
        raise ValueError(f"none of the reward's frames {list(frames)} exists in a {n}-frame clip")
    return videos[:, :, index]


def subsample_frames(videos: torch.Tensor, k: int) -> torch.Tensor:
    """k of the clip's frames, drawn uniformly without replacement (torch's RNG), kept in time order."""
    n = videos.shape[2]
    if not k or k >= n:
        return videos
    index = torch.randperm(n)[:k].sort().values.to(videos.device)
    return videos.index_select(2, index)


def score_frames(reward, videos: torch.Tensor, prompts: list[str], scoring: Scoring) -> torch.Tensor:
    """(B,) scores of one reward: of the whole clip, or of each frame (each run of `window` frames) on its
    own, pooled."""
    if not scoring.per_frame:
        return reward(videos, prompts)
    b, k = videos.shape[0], min(scoring.window, videos.shape[2])
    pieces = videos.unfold(2, k, 1)  # (B, 3, P, H, W, k): every run of k consecutive frames
    f = pieces.shape[2]
    frames = rearrange(pieces, "b c p h w k -> (b p) c k h w")
    scores = reward(frames, [p for p in prompts for _ in range(f)]).view(b, f)
    pooled = scores.mean(1) if scoring.per_frame == "mean" else scores.amin(1)
    if scoring.temporal and f > 1:
        pooled = pooled - scoring.temporal * scores.std(1)
    return pooled


class RunningMoments(nn.Module):
    """The running mean and variance of a reward's scores over every rank's samples (exact, Chan's
    merge of batch moments); its state is checkpointed with the stage."""

    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("m2", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, scores: torch.Tensor) -> None:
        s = scores.detach().to(torch.float64)
        n, total, squares = sum_over_ranks(torch.stack([s.new_tensor(float(s.numel())), s.sum(), s.square().sum()]))
        mean = total / n
        m2 = squares - n * mean.square()
        delta = mean - self.mean
        count = self.count + n
        self.m2 += m2 + delta.square() * self.count * n / count
        self.mean += delta * n / count
        self.count.copy_(count)

    def normalise(self, scores: torch.Tensor) -> torch.Tensor:
        std = (self.m2 / (self.count - 1).clamp_min(1)).sqrt().clamp_min(1e-6)
        return ((scores - self.mean.to(scores.dtype)) / std.to(scores.dtype))


class Rewards(nn.Module):
    """A weighted sum of rewards: (total (B,), {name: (B,) each reward's own raw scores}). terms:
    (reward, Scoring), or (reward, weight[, frames]) for the defaults."""

    def __init__(self, terms: list[tuple]):
        super().__init__()
        terms = [t if isinstance(t[1], Scoring) else (t[0], Scoring(t[1], tuple(t[2]) if len(t) > 2 else ()))
                 for t in terms]
        names = [r.name for r, _ in terms]
        if len(set(names)) != len(names):
            raise ConfigError(f"adv.rewards: two rewards share a name ({', '.join(names)}): give each a name")
        self.rewards = nn.ModuleList([r if isinstance(r, nn.Module) else _Wrapped(r) for r, _ in terms])
        self.scorings = [s for _, s in terms]
        self.weights = [s.weight for s in self.scorings]
        self.moments = nn.ModuleDict({r.name: RunningMoments() for r, s in terms if s.normalize})

    def forward(self, videos: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        each, total = {}, 0.0
        for reward, scoring in zip(self.rewards, self.scorings):
            clips = subsample_frames(pick_frames(videos, scoring.frames), scoring.subsample)
            scores = score_frames(reward, clips, prompts, scoring).float()
            each[reward.name] = scores
            if scoring.normalize:
                moments = self.moments[reward.name]
                moments.update(scores)
                scores = moments.normalise(scores)
            total = total + scoring.weight * scores
        return total, each


class _Wrapped(nn.Module):
    """A reward that is a plain callable (a user's `kind: python` class need not be a module)."""

    def __init__(self, reward):
        super().__init__()
        self.reward, self.name = reward, reward.name

    def forward(self, videos, prompts):
        return self.reward(videos, prompts)
