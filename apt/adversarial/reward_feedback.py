"""Reward feedback on the one-step generator (Seedance 1.0's reward maximisation on the predicted clean
video, VADER's reward gradients): G's samples decoded with gradients and scored by the configured
rewards (apt/rewards/); L_G gains -sum_i w_i R_i. The discriminator stays on as the regulariser."""

from __future__ import annotations

import torch


class RewardFeedback:
    def __init__(self, rewards, vae, latent_frames: int, checkpointing: bool):
        """rewards: apt.rewards.base.Rewards; vae: the VideoVAE that decodes G's samples; latent_frames:
        decode only the first k latent frames (0 = all); checkpointing: recompute each latent frame's
        decode in backward (bounded memory)."""
        self.rewards, self.vae = rewards, vae
        self.latent_frames, self.checkpointing = latent_frames, checkpointing

    def reward(self, sample: torch.Tensor, captions: list[str], metrics) -> torch.Tensor:
        """The weighted reward of G's samples (its batch mean), each reward logged on its own."""
        videos = self.vae.decode_with_grad(sample, self.latent_frames, self.checkpointing)
        total, each = self.rewards(videos, captions)
        metrics.add("reward", total.mean())
        for name, scores in each.items():
            metrics.add(f"reward_{name}", scores.mean())
        return total.mean()
