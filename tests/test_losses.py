import math

import pytest
import torch

from apt.adversarial import losses


def sp(x):  # softplus by hand
    return math.log1p(math.exp(x))


def test_non_saturating_losses_match_hand_computed_values():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    want_d = ((sp(-2.0) + sp(0.5)) + (sp(1.0) + sp(-3.0))) / 2
    assert losses.d_loss(real, fake).item() == pytest.approx(want_d, rel=1e-6)
    assert losses.g_loss(fake).item() == pytest.approx((sp(-0.5) + sp(3.0)) / 2, rel=1e-6)
    # at D = 0 everywhere: log 2 per term
    zeros = torch.zeros(4)
    assert losses.d_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))


def test_approximate_r1_is_its_formula_on_a_fixed_input():
    real, perturbed = torch.tensor([1.0, 2.0, -0.5]), torch.tensor([1.5, 1.0, -0.5])
    assert losses.approximate_r1(real, perturbed).item() == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    # with a linear D(x) = w.x, the aR1 of a perturbation is exactly (sigma * w.n)^2
    w = torch.randn(6)
    x = torch.randn(4, 6)
    g = torch.Generator().manual_seed(3)
    xp = losses.perturb(x, 0.1, generator=g)
    n = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(xp, x + 0.1 * n)
    assert losses.approximate_r1(x @ w, xp @ w).item() == pytest.approx(((0.1 * n @ w) ** 2).mean().item(), rel=1e-5)


def test_relativistic_losses_and_accuracy():
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 2.0])
    assert losses.relativistic_d_loss(real, fake).item() == pytest.approx((sp(-2.0) + sp(2.0)) / 2, rel=1e-6)
    assert losses.relativistic_g_loss(real, fake).item() == pytest.approx((sp(2.0) + sp(-2.0)) / 2, rel=1e-6)
    assert losses.d_accuracy(real, fake) == pytest.approx(0.5 * (0.5 + 0.5))


def test_feature_matching_is_l1_between_batch_means_averaged_over_taps():
    real = [torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]]), torch.zeros(2, 3, 2)]  # (B, N, D) per tap
    fake = [torch.tensor([[[0.0, 0.0]], [[0.0, 0.0]]]), torch.ones(2, 3, 2)]
    # tap 1: batch means (2, 3) vs (0, 0) -> mean |.| = 2.5; tap 2: 0 vs 1 -> 1.0
    assert losses.feature_matching(real, fake).item() == pytest.approx((2.5 + 1.0) / 2)
    assert losses.feature_matching(real, real).item() == 0.0
    with pytest.raises(ValueError):
        losses.feature_matching(real, fake[:1])


def test_auc_ranks_positives_over_negatives_with_ties_as_half():
    assert losses.auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert losses.auc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 0.0
    assert losses.auc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5
    # a common offset of every logit (what the D accuracy at threshold 0 is fooled by) does not move it
    real, fake = torch.randn(50) + 0.5, torch.randn(50)
    assert losses.auc(real + 7.0, fake + 7.0) == losses.auc(real, fake)
    assert losses.auc(torch.tensor([]), fake) != losses.auc(torch.tensor([]), fake)  # NaN on an empty set
