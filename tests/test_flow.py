import pytest
import torch

from apt.core import flow


def test_shift_formula_and_fixed_points():
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(flow.shift(t, 1.0), t)
    s12 = flow.shift(t, 12.0)
    assert torch.allclose(s12, 12 * t / (1 + 11 * t))
    assert s12[0] == 0 and torch.isclose(s12[-1], torch.tensor(1.0))
    assert torch.all(s12[1:-1] > t[1:-1])  # shifted towards noise
    assert torch.all(s12.diff() > 0)  # still monotone
    assert flow.shift(0.5, 3.0) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        flow.shift(t, 0.0)


def test_shift_matches_diffusers_flow_match_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=12.0)
    sched.set_timesteps(10)
    # diffusers' unshifted grid ends at the shifted smallest training sigma, then shifts again
    sigmas = torch.linspace(1.0, flow.shift(1 / 1000, 12.0), 10)
    assert torch.allclose(sched.sigmas[:-1], flow.shift(sigmas, 12.0), atol=1e-6)


def test_noise_velocity_round_trip():
    x0, eps = torch.randn(3, 4, 2, 5, 5), torch.randn(3, 4, 2, 5, 5)
    t = torch.tensor([0.1, 0.5, 0.9])
    x_t = flow.add_noise(x0, eps, t)
    assert torch.allclose(x_t[1], 0.5 * x0[1] + 0.5 * eps[1])
    v = flow.velocity_target(x0, eps)
    assert torch.allclose(flow.x0_from_v(x_t, v, t), x0, atol=1e-6)
    assert torch.allclose(flow.eps_from_v(x_t, v, t), eps, atol=1e-6)
    assert torch.allclose(flow.v_from_x0(x_t, x0, t), v, atol=1e-5)
    # scalar t broadcasts too
    assert torch.allclose(flow.add_noise(x0, eps, 1.0), eps)


def test_timestep_grid():
    g = flow.timestep_grid(4, 1.0)
    assert torch.allclose(g, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    assert torch.allclose(flow.timestep_grid(4, 3.0), flow.shift(g, 3.0))
    with pytest.raises(ValueError):
        flow.timestep_grid(0)


def test_sample_timesteps_distribution():
    gen = torch.Generator().manual_seed(0)
    t = flow.sample_timesteps(20000, 12.0, generator=gen)
    assert 0 <= t.min() and t.max() <= 1
    # median of shift(U, s) is shift(0.5, s)
    assert t.median().item() == pytest.approx(flow.shift(0.5, 12.0), abs=0.01)


def test_one_euler_step_is_the_one_step_generator_formula():
    z, x0 = torch.randn(2, 4, 1, 4, 4), torch.randn(2, 4, 1, 4, 4)
    text = torch.zeros(2, 3, 8)

    def straight_field(x_t, t, _text):  # exact velocity of the straight path through x0
        return flow.v_from_x0(x_t, x0, t)

    out = flow.euler_sample(straight_field, z, text, steps=1)
    assert torch.allclose(out, z - straight_field(z, torch.ones(2), text), atol=1e-6)
    assert torch.allclose(out, x0, atol=1e-5)
    # on a straight path any number of shifted steps lands on x0 too
    assert torch.allclose(flow.euler_sample(straight_field, z, text, steps=7, shift_s=3.0), x0, atol=1e-4)


def test_classifier_free_guidance_combination_and_negative_prompt():
    calls = []

    def field(x_t, t, text):
        calls.append(text.shape[0])
        return text.mean((1, 2)).view(-1, 1, 1, 1, 1).expand_as(x_t)

    x = torch.zeros(2, 1, 1, 2, 2)
    pos, neg = torch.full((2, 3, 4), 2.0), torch.full((2, 3, 4), 0.5)
    v = flow.guided_velocity(field, x, torch.ones(2), pos, neg, scale=7.5)
    assert torch.allclose(v, torch.full_like(x, 0.5 + 7.5 * (2.0 - 0.5)))
    assert calls == [4]  # both halves in one batch
    out = flow.euler_sample(field, x, pos, steps=2, guidance_scale=3.0, negative_text=neg)
    assert torch.allclose(out, x - (0.5 + 3.0 * 1.5))
    with pytest.raises(ValueError, match="negative"):
        flow.euler_sample(field, x, pos, steps=2, guidance_scale=3.0)
    # any guided caller (stage 1's teacher ODE step too) fails without the negative prompt, instead of
    # sampling without guidance; scale 1 needs none
    with pytest.raises(ValueError, match="negative_text"):
        flow.guided_velocity(field, x, torch.ones(2), pos, None, scale=7.5)
    assert torch.equal(flow.guided_velocity(field, x, torch.ones(2), pos, None, scale=1.0), field(x, None, pos))


def test_euler_sample_from_per_sample_times():
    x0, eps = torch.randn(3, 4, 2, 4, 4), torch.randn(3, 4, 2, 4, 4)
    text = torch.zeros(3, 3, 8)
    t = torch.tensor([0.9, 0.4, 0.05])
    x_t = flow.add_noise(x0, eps, t)
    seen = []

    def straight_field(x, t_cur, _text):  # exact velocity of each sample's straight path through x0
        seen.append(t_cur.clone())
        return flow.v_from_x0(x, x0, t_cur)

    for steps in (1, 4):  # each sample integrates over its own grid t, ..., 0 and lands on x0
        seen.clear()
        assert torch.allclose(flow.euler_sample_from(straight_field, x_t, t, text, steps), x0, atol=1e-5)
        assert torch.allclose(seen[0], t) and torch.allclose(seen[-1], t / steps)
    # one step is the x0 prediction; from t = 1 it is the plain sampler's first-step formula
    field = lambda x, t_cur, _text: x * 0.3 + 1.0  # noqa: E731
    one = flow.euler_sample_from(field, x_t, t, text, 1)
    assert torch.allclose(one, flow.x0_from_v(x_t, field(x_t, t, text), t))
    ones = torch.ones(3)
    assert torch.allclose(flow.euler_sample_from(field, eps, ones, text, 3), flow.euler_sample(field, eps, text, 3),
                          atol=1e-6)
    with pytest.raises(ValueError, match="negative"):
        flow.euler_sample_from(field, x_t, t, text, 2, guidance_scale=5.0)
    with pytest.raises(ValueError, match="at least one"):
        flow.euler_sample_from(field, x_t, t, text, 0)
