"""One entry of `adv.rewards`: which reward, built how, weighted how, on which frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RewardConfig:
    """One reward of the generator's loss (apt/rewards/)."""

    # a registered kind: "clip" (a local transformers CLIP folder), "python" (your own class, `target`),
    # or a plugin's (the toy world registers "toy", its shipped alignment model)
    kind: str = "toy"
    path: str = ""  # the model's local folder; "" = the kind's default (toy: the shipped one)
    weight: float = 1.0  # > 0: L_G = L_adv - sum_i weight_i * reward_i
    frames: list[int] = field(default_factory=list)  # pixel frames it scores (negative: from the end); [] = all decoded
    head: str = ""  # clip: a safetensors linear head over the image embedding (aesthetic score) instead of the text
    name: str = ""  # what the log calls it; "" = the reward's own name
    # kind python: "package.module:ClassName", a class built with `options` as keyword arguments whose
    # instances map (videos (B, 3, F, H, W) in [-1, 1], prompts) to (B,) scores
    target: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # kind python: keyword arguments of `target`
