"""Stage 2's small units on their own: the running AUC window, reward feedback, and the step metrics
that keep their arithmetic on the device exactly as the host floats did."""

import pytest
import torch

from apt.adversarial.diagnostics import LogitWindow
from apt.adversarial.reward_feedback import RewardFeedback
from apt.adversarial.terms import FeatureMatching, lazy_weight
from apt.rewards.base import Rewards
from apt.training.metrics import StepMetrics


def test_the_logit_window_keeps_the_last_logits_of_each_kind():
    window = LogitWindow(size=3)
    window.extend(torch.tensor([0.0, 1.0]), torch.tensor([5.0, 6.0]))  # the fakes outrank the reals ...
    assert window.auc().item() == 0.0
    window.extend(torch.tensor([9.0, 9.0]), torch.tensor([-1.0, -2.0]))  # ... until newer logits push them out
    assert window.real.tolist() == [1.0, 9.0, 9.0] and window.fake.tolist() == [6.0, -1.0, -2.0]
    assert window.auc().item() == pytest.approx((2 + 3 + 3) / 9)


class _FakeVAE:
    """Decodes a latent (B, C, T, h, w) to 'frames' (B, 3, T, h, w): its first three channels."""

    def __init__(self):
        self.calls = []

    def decode_with_grad(self, latent, latent_frames, checkpointing):
        self.calls.append((latent_frames, checkpointing))
        return latent[:, :3]


class _Mean(torch.nn.Module):
    name = "mean"

    def forward(self, videos, prompts):
        return videos.mean((1, 2, 3, 4))


def test_reward_feedback_decodes_scores_logs_and_passes_the_gradient_to_the_sample():
    vae = _FakeVAE()
    feedback = RewardFeedback(Rewards([(_Mean(), 2.0)]), vae, latent_frames=1, checkpointing=True)
    sample = torch.ones(2, 4, 1, 2, 2, requires_grad=True)
    metrics = StepMetrics(micro_batches=2)
    reward = feedback.reward(sample, ["a", "b"], metrics)
    assert reward.item() == 2.0 and vae.calls == [(1, True)]
    assert metrics["reward"] == 1.0 and metrics["reward_mean"] == 0.5  # halves of an update of 2 micro-batches
    (-reward).backward()
    assert (sample.grad[:, :3] < 0).all() and (sample.grad[:, 3:] == 0).all()  # only what the decode shows


def test_lazy_terms_pay_every_kth_step_at_k_times_the_weight():
    matching = FeatureMatching(weight=0.5, every=3)
    assert [matching.weight_at(s) for s in range(6)] == [1.5, 0, 0, 1.5, 0, 0]
    assert lazy_weight(2.0, 1, 7) == 2.0


def test_step_metrics_average_on_the_device_as_host_floats_did():
    """The accumulation StepMetrics replaced: float(value) / accum summed in Python floats (float64)."""
    values = [torch.tensor(v, dtype=torch.float32) for v in (0.1, 0.7, 1e-8, 3.3)]
    metrics = StepMetrics(micro_batches=len(values))
    host = 0.0
    for v in values:
        metrics.add("loss", v)
        host = host + float(v) / len(values)
    metrics.set("d_auc", torch.tensor(0.25, dtype=torch.float64))
    assert metrics.synced() == {"d_auc": 0.25, "loss": host}  # bit for bit, keys sorted
