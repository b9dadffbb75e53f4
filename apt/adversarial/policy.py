"""Rewards without a gradient through a stochastic one-step policy (adv.policy, apt/rewards/config.py).

The policy is a Gaussian around the generator's sample in latent space, a ~ N(mu, sigma^2 I) with
mu = G(z, c); log pi(a) is taken per latent element (the mean over elements, as Flow-GRPO does), so
that sigma and the objectives' scales do not depend on the resolution. For each sample the update
draws `group` actions, decodes them (no gradient) and scores them with adv.rewards; the actions of
one group share the prompt and z, so their reward differences come from the actions alone.

- GRPO (DeepSeekMath's group-relative policy optimisation, as Flow-GRPO and DanceGRPO use it for
  flow models): advantages A = (r - mean) / std within each group, the clipped surrogate
  -min(rho A, clip(rho, 1 - eps, 1 + eps) A) with rho = pi_theta(a) / pi_old(a), and
  kl_weight x KL(pi_theta || pi_ref) to the starting generator (closed form between Gaussians of one sigma).
- PRDP (proximal reward difference prediction, Deng et al. 2024): for pairs of actions, the reward
  difference is regressed onto beta x the difference of their log-ratios log pi_theta / pi_old, each
  log-ratio clipped to [-eps, eps] (proximal); PRDP's pairs here are antithetic, mu +- sigma eps.

The update is on-policy (the actions are drawn from this step's G), so rho = 1 where the gradient is
taken: the clipping bounds what a later pass over the same actions could do and is kept for that
reason, not because it acts in a one-pass update. Everything is a function of mu, the sample G's
update backpropagates from (apt/adversarial/generator_step.py).
"""

from __future__ import annotations

import torch

from apt.adversarial.reward_feedback import decode_for_reward, log_rewards, window_start


def log_ratio(actions: torch.Tensor, mean: torch.Tensor, old_mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, K) log pi(a | mean) - log pi(a | old_mean) per latent element. actions (B, K, ...), means (B, ...)."""
    new = (actions - mean[:, None]).square().flatten(2).mean(-1)
    old = (actions - old_mean[:, None]).square().flatten(2).mean(-1)
    return (old - new) / (2 * sigma**2)


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(B, K) rewards -> advantages, normalised within each group; a group whose rewards all agree has none."""
    std = rewards.std(1, keepdim=True)
    return torch.where(std > 1e-6, (rewards - rewards.mean(1, keepdim=True)) / std.clamp_min(1e-6),
                       torch.zeros_like(rewards))


def grpo_loss(ratio_log: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    ratio = ratio_log.exp()
    return -torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages).mean()


def prdp_loss(ratio_log: torch.Tensor, rewards: torch.Tensor, beta: float, clip: float) -> torch.Tensor:
    """Pairs (k, k + K/2) of each group: ((r_a - r_b) - beta (clip(l_a) - clip(l_b)))^2."""
    half = rewards.shape[1] // 2
    clipped = ratio_log.clamp(-clip, clip)
    target = rewards[:, :half] - rewards[:, half:]
    return (target - beta * (clipped[:, :half] - clipped[:, half:])).square().mean()


class PolicyObjective:
    def __init__(self, rewards, vae, cfg, latent_frames: int = 0, reference=None, window: int = 0):
        """rewards: apt.rewards.base.Rewards (scored only); vae: the VideoVAE that decodes the actions (their
        first `latent_frames`, or a `window` at a random start); cfg: PolicyConfig; reference: the frozen
        starting generator (GRPO's KL), or None."""
        self.rewards, self.vae, self.cfg = rewards, vae, cfg
        self.latent_frames, self.reference, self.window = latent_frames, reference, window

    def actions(self, mean: torch.Tensor) -> torch.Tensor:
        """(B, K, ...) actions around the sample; PRDP's second half mirrors the first."""
        k = self.cfg.group
        if self.cfg.objective == "prdp":
            eps = torch.randn(mean.shape[0], k // 2, *mean.shape[1:], device=mean.device, dtype=mean.dtype)
            eps = torch.cat([eps, -eps], 1)
        else:
            eps = torch.randn(mean.shape[0], k, *mean.shape[1:], device=mean.device, dtype=mean.dtype)
        return mean[:, None] + self.cfg.sigma * eps

    @torch.no_grad()
    def score(self, actions: torch.Tensor, captions: list[str], metrics) -> torch.Tensor:
        """(B, K) total rewards of the decoded actions, each reward logged (mean over actions). The actions are
        decoded one group member at a time: the decode's peak memory is one micro-batch's, as without a policy."""
        totals, each = [], {}
        # one window for the whole group: its members are compared on the same frames
        start = window_start(actions.shape[3], self.window)
        for k in range(actions.shape[1]):
            videos = decode_for_reward(self.vae, actions[:, k], self.latent_frames, self.window, False, start)
            total, scores = self.rewards(videos, captions)
            totals.append(total.float())
            for name, value in scores.items():
                each.setdefault(name, []).append(value)
        totals = torch.stack(totals, 1)
        log_rewards(metrics, totals, {name: torch.stack(values) for name, values in each.items()})
        return totals

    def loss(self, sample: torch.Tensor, captions: list[str], metrics, noise: torch.Tensor | None = None,
             text: torch.Tensor | None = None) -> torch.Tensor:
        """The policy loss of G's samples (a leaf with its gradient to be taken), logged."""
        old = sample.detach()
        actions = self.actions(old)
        rewards = self.score(actions, captions, metrics)
        ratio_log = log_ratio(actions, sample, old, self.cfg.sigma)
        if self.cfg.objective == "grpo":
            advantages = group_advantages(rewards)
            metrics.add("policy_groups_with_signal", (advantages.abs().sum(1) > 0).float().mean())
            loss = grpo_loss(ratio_log, advantages, self.cfg.clip)
            if self.cfg.kl_weight and self.reference is not None:
                with torch.no_grad():
                    ref = self.reference(noise, text)
                kl = (sample - ref).square().flatten(1).mean(1).mean() / (2 * self.cfg.sigma**2)
                metrics.add("policy_kl", kl)
                loss = loss + self.cfg.kl_weight * kl
        else:
            metrics.add("policy_pairs_with_signal", (rewards[:, : self.cfg.group // 2]
                                                     != rewards[:, self.cfg.group // 2 :]).float().mean())
            loss = prdp_loss(ratio_log, rewards, self.cfg.beta, self.cfg.clip)
        metrics.add("policy_loss", loss)
        return self.cfg.weight * loss
