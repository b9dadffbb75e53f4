"""Reward kinds and building the rewards a config lists.

Built in: `clip` (apt/rewards/clip.py), `video_text` (a video-text model of yours behind
apt/rewards/video_text.py) and `python` (a class of yours, by import path). Plugins add
kinds through the `seaweed_apt.rewards` entry point group (apt/core/plugins.py), as the toy world
adds `toy`: a function taking the config entry (apt/rewards/config.py) and returning a reward.
"""

from __future__ import annotations

from apt.core import plugins
from apt.core.config import ConfigError
from apt.rewards.config import import_target

BUILT_IN = ("clip", "python", "video_text")
DTYPES = ("", "bfloat16", "float32")


def reward_kinds() -> tuple[str, ...]:
    """Every kind a config may name (imports nothing)."""
    return (*BUILT_IN, *sorted(plugins.registered("rewards")))


def check_reward(spec, where: str) -> None:
    """A config entry's own mistakes, at start-up (nothing is loaded)."""
    if spec.kind not in reward_kinds():
        raise ConfigError(f"{where}.kind must be one of {', '.join(reward_kinds())}, got {spec.kind!r}")
    if spec.weight <= 0:
        raise ConfigError(f"{where}.weight must be positive (the reward is maximised), got {spec.weight}")
    if spec.kind in ("python", "video_text") and ":" not in spec.target:
        raise ConfigError(f"{where}.target: a {spec.kind} reward names its class as package.module:ClassName, "
                          f"got {spec.target!r}")
    if spec.dtype not in DTYPES:
        raise ConfigError(f"{where}.dtype must be bfloat16 or float32 (or empty: the kind's), got {spec.dtype!r}")
    try:
        scoring(spec)
    except ConfigError as err:
        raise ConfigError(f"{where}.{err}") from None


def scoring(spec):
    """How the entry's reward is applied (apt/rewards/base.py Scoring)."""
    from apt.rewards.base import Scoring

    return Scoring(spec.weight, tuple(spec.frames), spec.subsample, spec.per_frame, spec.temporal, spec.normalize,
                   spec.window)


def python_reward(spec):
    """kind python: the class at spec.target, built with spec.options."""
    cls = import_target(spec.target)
    try:
        reward = cls(**spec.options)
    except TypeError as err:
        raise ConfigError(f"options: {spec.target} does not take {dict(spec.options)}: {err}") from None
    if not callable(reward):
        raise ConfigError(f"target: {spec.target} instances are not callable (videos, prompts) -> scores")
    if not getattr(reward, "name", ""):
        reward.name = spec.target.partition(":")[2]
    return reward


def build_reward(spec):
    """One config entry -> a reward, named as the entry says."""
    if spec.kind == "clip":
        from apt.rewards.clip import build
    elif spec.kind == "video_text":
        from apt.rewards.video_text import build
    elif spec.kind == "python":
        build = python_reward
    else:
        build = plugins.load("rewards", spec.kind)
    reward = build(spec)
    if spec.name:
        reward.name = spec.name
    return reward


def build_rewards(specs):
    """The weighted sum of the config's rewards (apt/rewards/base.py Rewards). A missing folder, an
    unknown kind or a class that cannot be built fails here, at start-up, with the entry named."""
    from apt.rewards.base import Rewards

    built = []
    for i, spec in enumerate(specs):
        where = f"adv.rewards[{i}]"
        check_reward(spec, where)
        try:
            reward = build_reward(spec)
        except ConfigError as err:
            raise ConfigError(f"{where}.{err}") from None
        built.append((reward, scoring(spec)))
    return Rewards(built)
