"""One entry of `adv.rewards`: which reward, built how, weighted how, on which frames."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from apt.core.config import ConfigError


@dataclass
class RewardConfig:
    """One reward of the generator's loss (apt/rewards/)."""

    # a registered kind: "clip" (a local transformers CLIP folder), "video_text" (a video-text model of yours,
    # `target`), "python" (your own class, `target`), or a plugin's (the toy world registers "toy")
    kind: str = "toy"
    path: str = ""  # the model's local folder; "" = the kind's default (toy: the shipped one)
    weight: float = 1.0  # > 0: L_G = L_adv - sum_i weight_i * reward_i (of the normalised score if `normalize`)
    frames: list[int] = field(default_factory=list)  # pixel frames it scores (negative: from the end); [] = all decoded
    subsample: int = 0  # score k of those frames, drawn afresh each step in time order (VADER's subsampling); 0 = all
    # "" = the reward scores the clip as a whole; "mean" / "min" = each frame on its own (a one-frame clip), the
    # scores averaged / their minimum taken (min asks for the prompt in every frame, not on average)
    per_frame: str = ""
    window: int = 1  # with per_frame: score every run of this many consecutive frames instead of single frames
    temporal: float = 0.0  # with per_frame: minus this x the std over frames of the per-frame scores (consistency)
    normalize: bool = False  # score / running std after subtracting the running mean (over all ranks' samples)
    head: str = ""  # clip: a safetensors head over the image embedding (aesthetic score: apt-convert-reward) instead of the text
    dtype: str = ""  # the frozen reward model's weights: bfloat16 | float32; "" = the kind's (clip: bfloat16, toy: float32)
    name: str = ""  # what the log calls it; "" = the reward's own name
    # kind python / video_text: "package.module:ClassName", a class built with `options` as keyword arguments
    target: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of `target`, or of the kind (toy: score)


@dataclass
class PolicyConfig:
    """Rewards without a gradient (a VLM judge, OCR, a detector, human labels) through a stochastic one-step
    policy: a ~ N(G(z, c), sigma^2 I) in latent space (apt/adversarial/policy.py). adv.rewards are then
    only scored, never differentiated; the discriminator stays on as the regulariser."""

    # "" = reward gradients (reward feedback); "grpo" = group-relative advantages, clipped ratio, KL to the
    # starting generator; "prdp" = PRDP's regression of reward differences onto log-ratio differences
    objective: str = ""
    sigma: float = 0.1  # the policy's std around G(z) in latent space (latents have unit variance)
    group: int = 4  # actions per prompt and noise: GRPO's group; PRDP pairs them antithetically (+-eps), so even
    clip: float = 0.2  # grpo: the ratio clipped to [1 - clip, 1 + clip]; prdp: the log-ratio to [-clip, clip]
    beta: float = 1.0  # prdp: the scale of the log-ratio that regresses the reward difference
    kl_weight: float = 0.0  # grpo: weight of KL(policy || the starting generator's), a frozen copy of G; 0 = off
    weight: float = 1.0  # the policy loss's weight in L_G, beside adv.adversarial_weight x L_adv


# What a kind's builder (apt/rewards/registry.py, clip.py, video_text.py, a plugin's) reads of an entry
def import_target(target: str):
    """The class at "package.module:ClassName"."""
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"target: cannot import {target!r}: {err}") from None


def unknown_options(spec, known: tuple[str, ...]) -> None:
    """A kind's builder refuses options it does not take, naming those it does."""
    extra = sorted(set(spec.options) - set(known))
    if extra:
        raise ConfigError(f"options: a {spec.kind} reward takes {', '.join(known) or 'no options'}, got {', '.join(extra)}")
