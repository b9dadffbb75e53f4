"""Rewards: differentiable scores of decoded frames against their prompts, higher is better.

    reward(videos (B, 3, F, H, W) in [-1, 1], prompts: list[str]) -> (B,) scores

Every reward loads from a local folder; nothing downloads. Kinds (`adv.rewards[i].kind`):
- `toy`: the toy world's alignment model (apt/toy/reward.py), a contrastive video-text model that
  shares nothing with the evaluator of the results table;
- `clip`: any `transformers` CLIP folder (OpenAI CLIP, PickScore, HPS v2 are CLIP checkpoints): the
  cosine of the frames' and the prompt's embeddings, frames resized and normalised as the folder's
  preprocessor says; with `head` (a safetensors linear layer `weight` (1, D), `bias` (1,) over the
  image embedding, e.g. an aesthetic predictor) the head's score instead, prompt-independent.
A weighted sum of several (`Rewards`) logs each one on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from apt.config import ConfigError

KINDS = ("toy", "clip")
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


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


class CLIPReward(nn.Module):
    """Frames and prompt through a local CLIP folder: mean over frames of the cosine similarity."""

    def __init__(self, folder: str | Path, frames: list[int] | tuple[int, ...] = (), head: str | Path | None = None,
                 name: str = "clip"):
        super().__init__()
        from transformers import AutoTokenizer, CLIPModel

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"CLIP reward folder {folder} does not exist (it must be a local "
                                    f"transformers CLIP folder: config.json, weights, tokenizer files)")
        self.name, self.frames = name, tuple(frames)
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.size = int(self.model.config.vision_config.image_size)
        pre = folder / "preprocessor_config.json"
        stats = json.loads(pre.read_text()) if pre.is_file() else {}
        self.register_buffer("mean", torch.tensor(stats.get("image_mean", CLIP_MEAN)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(stats.get("image_std", CLIP_STD)).view(1, 3, 1, 1), persistent=False)
        self.head = None
        if head:
            from safetensors.torch import load_file

            weights = load_file(str(Path(head).expanduser()))
            self.head = nn.Linear(weights["weight"].shape[1], 1).requires_grad_(False)
            self.head.load_state_dict(weights)

    def _pixels(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> (B*F, 3, S, S): short side resized to S (antialiased), centre crop,
        CLIP normalisation, as CLIPImageProcessor does."""
        b, c, f, h, w = videos.shape
        frames = ((videos.transpose(1, 2).reshape(b * f, c, h, w).float() + 1) / 2).clamp(0, 1)
        scale = self.size / min(h, w)
        size = (max(self.size, round(h * scale)), max(self.size, round(w * scale)))
        frames = F.interpolate(frames, size=size, mode="bicubic", align_corners=False, antialias=True)
        top, left = (size[0] - self.size) // 2, (size[1] - self.size) // 2
        frames = frames[:, :, top : top + self.size, left : left + self.size]
        return (frames - self.mean) / self.std

    @staticmethod
    def _embedding(out) -> torch.Tensor:
        # transformers 5 returns an output object whose pooler_output is the projected embedding
        return out if torch.is_tensor(out) else out.pooler_output

    def forward(self, videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        videos = pick_frames(videos, self.frames)
        b, f = videos.shape[0], videos.shape[2]
        self.model.to(videos.device)
        image = self._embedding(self.model.get_image_features(pixel_values=self._pixels(videos))).view(b, f, -1)
        if self.head is not None:
            return self.head.to(videos.device)(F.normalize(image, dim=-1)).mean(1)[:, 0]
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(videos.device)
        text = self._embedding(self.model.get_text_features(input_ids=tokens.input_ids,
                                                            attention_mask=tokens.attention_mask))
        return (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)[:, None]).sum(-1).mean(1)


class Rewards(nn.Module):
    """A weighted sum of rewards: (total (B,), {name: (B,) each reward's own scores})."""

    def __init__(self, terms: list[tuple[Reward, float]]):
        super().__init__()
        names = [r.name for r, _ in terms]
        if len(set(names)) != len(names):
            raise ConfigError(f"adv.rewards: two rewards share a name ({', '.join(names)}): give each a name")
        self.rewards = nn.ModuleList([r for r, _ in terms])
        self.weights = [w for _, w in terms]

    def forward(self, videos: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        each = {r.name: r(videos, prompts) for r in self.rewards}
        total = sum(w * each[r.name] for r, w in zip(self.rewards, self.weights))
        return total, each


def build_rewards(terms) -> Rewards:
    """From the config's reward terms (apt/adversarial/config.py RewardTerm: kind, path, weight, frames,
    head, name). A missing folder or an unknown kind fails here, at start-up, with the entry named."""
    built = []
    for i, term in enumerate(terms):
        where = f"adv.rewards[{i}]"
        if term.kind == "toy":
            from apt.toy.reward import ToyAlignmentReward  # the embedded default's reward

            try:
                reward = ToyAlignmentReward(term.path or None, frames=term.frames)
            except FileNotFoundError as err:
                raise ConfigError(f"{where}.path: {err}") from None
        elif term.kind == "clip":
            if not term.path:
                raise ConfigError(f"{where}.path: a clip reward needs a local CLIP folder")
            try:
                reward = CLIPReward(term.path, term.frames, term.head or None, name=term.name or "clip")
            except (FileNotFoundError, OSError) as err:
                raise ConfigError(f"{where}.path: {err}") from None
        else:
            raise ConfigError(f"{where}.kind must be one of {', '.join(KINDS)}, got {term.kind!r}")
        if term.name:
            reward.name = term.name
        built.append((reward, term.weight))
    return Rewards(built)
