"""G's update of one stage-2 step:

    L_G = softplus(-D(G(z)))  [+ feature matching] [+ guidance distillation] [- rewards]

D's weights are frozen for it: only the gradient through D to G's samples is computed.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import torch

from apt.adversarial import losses
from apt.adversarial.critic import Critic, RealReference
from apt.adversarial.distillation import GuidanceDistillation
from apt.adversarial.terms import FeatureMatching
from apt.training.distributed import grad_norm
from apt.training.metrics import StepMetrics


@contextmanager
def frozen(params: list[torch.nn.Parameter]):
    """No weight gradients for these (nor their reduce-scatter) while G's loss backpropagates through them."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class GeneratorStep:
    def __init__(self, critic: Critic, optimizer: torch.optim.Optimizer, parameters: list[torch.nn.Parameter],
                 d_parameters: list[torch.nn.Parameter], loss: str, matching: FeatureMatching,
                 distillation: GuidanceDistillation | None = None, rewards=None,
                 adversarial_weight: float = 1.0, reward_prompts=None, generator=None):
        """rewards: RewardFeedback or PolicyObjective; reward_prompts: a PromptStream whose prompts the rewards
        score G's own samples of (a second G pass, `generator`), or None (the batch's samples and captions)."""
        self.critic, self.optimizer, self.parameters, self.d_parameters = critic, optimizer, parameters, d_parameters
        self.loss, self.matching, self.distillation, self.rewards = loss, matching, distillation, rewards
        self.adversarial_weight, self.reward_prompts, self.generator = adversarial_weight, reward_prompts, generator

    def __call__(self, micro_batches, count: int, step: int, metrics: StepMetrics,
                 references: list[RealReference | None] | None = None) -> None:
        """micro_batches: `count` tuples (real latents, text, captions, G's samples with their graph, G's noise);
        references: the D step's real passes, one per micro-batch, or None (fresh ones)."""
        distill = self.distillation.weight_at(step) if self.distillation is not None else 0.0
        matching = self.matching.weight_at(step)
        self.optimizer.zero_grad(set_to_none=True)
        with frozen(self.d_parameters):
            for (x, text, captions, fake, noise), reference in zip(micro_batches, references or itertools.repeat(None)):
                if self.rewards is None:
                    loss = self.adversarial_loss(x, text, fake, metrics, matching, reference)
                    if distill:
                        loss = loss + distill * self.distillation.loss(fake, text, metrics)
                    (loss / count).backward()
                    continue
                # Rewards: the adversarial and the reward gradients meet at G's sample, each backpropagated
                # on its own (D's activations and the decoder's never coexist), then G's backward runs once.
                sample = fake.detach().requires_grad_(True)
                if self.adversarial_weight:
                    adversarial = self.adversarial_loss(x, text, sample, metrics, matching, reference)
                    (self.adversarial_weight * adversarial).backward()
                if distill:
                    (distill * self.distillation.loss(sample, text, metrics)).backward()
                before = sample.grad.clone() if sample.grad is not None else torch.zeros_like(sample)
                # how hard each side pulls on G's samples: what a reward or policy weight is set against
                metrics.add("sample_grad_adversarial", before.norm())
                if self.reward_prompts is not None:  # the rewards score G's samples of their own prompts
                    fake.backward(before / count)
                    self.prompted_reward(noise, count, metrics)
                    continue
                self.rewards.loss(sample, captions, metrics, noise, text).backward()
                metrics.add("sample_grad_reward", (sample.grad - before).norm())
                fake.backward(sample.grad / count)
        metrics.set("g_grad_norm", grad_norm(self.parameters))
        self.optimizer.step()

    def prompted_reward(self, like: torch.Tensor, count: int, metrics: StepMetrics) -> None:
        """The reward term on G's samples of prompts drawn from the reward prompt stream (fresh noise)."""
        text, captions = self.reward_prompts.draw(like.shape[0], like.device)
        noise = torch.randn_like(like)
        fake = self.generator(noise, text.to(like.dtype))
        sample = fake.detach().requires_grad_(True)
        self.rewards.loss(sample, captions, metrics, noise, text).backward()
        metrics.add("sample_grad_reward", sample.grad.norm())
        fake.backward(sample.grad / count)

    def logits(self, x: torch.Tensor, text: torch.Tensor, fake: torch.Tensor, features: bool = False,
               reference: RealReference | None = None):
        """D on G's samples at a fresh re-noising and, where the relativistic loss or feature matching
        needs it, on the real clips at the same t and noise as a reference only (no gradient; else None).
        Given the D step's reference, G's samples are re-noised as its real clips were and D's outputs
        there stand in for the real pass."""
        if reference is not None:
            fake_out = self.critic.logits(fake, text, reference.t, reference.noise, return_features=features)
            return fake_out, (reference.logits, reference.features) if features else reference.logits
        t, noise = self.critic.renoising(x)
        fake_out = self.critic.logits(fake, text, t, noise, return_features=features)
        real_out = None
        if self.loss == "relativistic" or features:
            with torch.no_grad():
                real_out = self.critic.logits(x, text, t, noise, return_features=features)
        return fake_out, real_out

    def adversarial_loss(self, x: torch.Tensor, text: torch.Tensor, fake: torch.Tensor, metrics: StepMetrics,
                         matching_weight: float = 0.0, reference: RealReference | None = None) -> torch.Tensor:
        """L_G for G's samples `fake` (plus matching_weight x feature matching where > 0), logged."""
        matching = matching_weight > 0
        fake_out, real_out = self.logits(x, text, fake, matching, reference)
        fake_logits, real_logits = (fake_out[0], real_out[0]) if matching else (fake_out, real_out)
        loss_g = losses.generator_loss(self.loss, real_logits, fake_logits)
        metrics.add("g_loss", loss_g)
        if matching:
            fm = self.matching.loss(real_out[1], fake_out[1], self.critic.token_group)
            metrics.add("feature_matching", fm)
            return loss_g + matching_weight * fm
        return loss_g
