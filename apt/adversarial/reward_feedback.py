"""Reward feedback on the one-step generator (Seedance 1.0's reward maximisation on the predicted clean
video, VADER's reward gradients): G's samples decoded with gradients and scored by the configured
rewards (apt/rewards/); L_G gains -sum_i w_i R_i. The discriminator stays on as the regulariser."""

from __future__ import annotations

import torch


class RewardFeedback:
    def __init__(self, rewards, vae, latent_frames: int, checkpointing: bool, window: int = 0):
        """rewards: apt.rewards.base.Rewards; vae: the VideoVAE that decodes G's samples; latent_frames:
        decode only the first k latent frames (0 = all); window: k latent frames at a random start instead
        (0 = off); checkpointing: recompute each latent frame's decode in backward (bounded memory)."""
        self.rewards, self.vae = rewards, vae
        self.latent_frames, self.checkpointing, self.window = latent_frames, checkpointing, window

    def decode(self, sample: torch.Tensor) -> torch.Tensor:
        return decode_for_reward(self.vae, sample, self.latent_frames, self.window, self.checkpointing)

    def reward(self, sample: torch.Tensor, captions: list[str], metrics) -> torch.Tensor:
        """The weighted reward of G's samples (its batch mean), each reward logged on its own."""
        total, each = self.rewards(self.decode(sample), captions)
        if not total.requires_grad and sample.requires_grad:
            raise ValueError(f"the rewards ({', '.join(each)}) have no gradient in the frames: score them through "
                             f"a policy objective (adv.policy.objective=grpo or prdp)")
        log_rewards(metrics, total, each)
        return total.mean()

    def loss(self, sample: torch.Tensor, captions: list[str], metrics, noise=None, text=None) -> torch.Tensor:
        """What G's update minimises: minus the reward."""
        return -self.reward(sample, captions, metrics)


def window_start(latent_frames: int, window: int) -> int | None:
    """Where a `window` of latent frames starts in a clip of `latent_frames`, drawn from the rank's RNG (like
    the data's noise); None when there is no window or it covers the clip."""
    if not window or window >= latent_frames:
        return None
    return int(torch.randint(0, latent_frames - window + 1, ()))


def decode_for_reward(vae, latent: torch.Tensor, latent_frames: int, window: int, checkpointing: bool,
                      start: int | None = None) -> torch.Tensor:
    """The frames the rewards see: the first `latent_frames` latent frames (0 = all), or `window` of them from
    `start` (None: drawn by window_start), the cache warmed on those before."""
    if start is None:
        start = window_start(latent.shape[2], window)
    if start is None:
        return vae.decode_with_grad(latent, latent_frames, checkpointing)
    return vae.decode_with_grad(latent, window, checkpointing, start=start)


def log_rewards(metrics, total: torch.Tensor, each: dict[str, torch.Tensor]) -> None:
    """The weighted total and each reward's own scores, as batch means."""
    metrics.add("reward", total.mean())
    for name, scores in each.items():
        metrics.add(f"reward_{name}", scores.mean())
