import torch

from apt.core import flow
from distill.consistency import cd_grid, cd_loss, consistency_fn, teacher_ode_step


def test_grid_and_boundary():
    g = cd_grid(8, 3.0)
    assert g[0] == 0 and torch.isclose(g[-1], torch.tensor(1.0)) and torch.all(g.diff() > 0)
    model = lambda x, t, c: torch.randn_like(x)  # noqa: E731 - any velocity
    x = torch.randn(2, 4, 1, 4, 4)
    assert torch.equal(consistency_fn(model, x, torch.zeros(2), None), x)  # f(x, 0) = x


def test_teacher_step_is_guided_euler():
    def field(x, t, c):
        return c.mean((1, 2)).view(-1, 1, 1, 1, 1) * torch.ones_like(x)

    x = torch.zeros(2, 1, 1, 2, 2)
    pos, neg = torch.full((2, 3, 4), 1.0), torch.zeros(2, 3, 4)
    out = teacher_ode_step(field, x, torch.tensor([0.8, 0.5]), torch.tensor([0.6, 0.5]), pos, neg, 7.5)
    assert torch.allclose(out[0], torch.full_like(out[0], -0.2 * 7.5))
    assert torch.allclose(out[1], torch.zeros_like(out[1]))


def test_loss_is_zero_for_an_exact_straight_flow_and_positive_otherwise():
    x0 = torch.randn(4, 4, 1, 4, 4)
    # a model that knows x0 exactly: every consistency function returns x0, teacher steps stay on the path
    exact = lambda x, t, c: flow.v_from_x0(x, x0, t.clamp_min(1e-6))  # noqa: E731
    grid = cd_grid(6, 1.0)
    loss, metrics = cd_loss(exact, exact, exact, x0, torch.zeros(4, 2, 3), None, grid, 1.0,
                            torch.Generator().manual_seed(0))
    assert loss.item() < 1e-8 and 0 < metrics["t_mean"] <= 1
    wrong = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    loss, _ = cd_loss(wrong, exact, exact, x0, torch.zeros(4, 2, 3), None, grid, 1.0, torch.Generator().manual_seed(0))
    assert loss.item() > 0.1
