"""Rewards without a gradient (apt/adversarial/policy.py): the Gaussian policy's log-ratios, GRPO's
group-relative advantages and clipped surrogate, PRDP's reward-difference regression, each moving G's
sample toward the better action; and stage-2 runs with each objective on the toy's 0/1 rewards."""

import pytest
import torch
from test_rewards import ROOT, TOY

from apt.adversarial.config import APTConfig
from apt.adversarial.policy import PolicyObjective, group_advantages, grpo_loss, log_ratio, prdp_loss
from apt.core.config import ConfigError, load_config
from apt.rewards.base import Rewards, Scoring
from apt.rewards.config import PolicyConfig
from apt.training.metrics import StepMetrics


def test_log_ratio_is_zero_on_policy_and_favours_actions_near_the_new_mean():
    old = torch.zeros(1, 4)
    actions = torch.stack([torch.ones(4), -torch.ones(4)])[None]  # (1, 2, 4)
    assert torch.equal(log_ratio(actions, old, old, 0.5), torch.zeros(1, 2))
    moved = log_ratio(actions, old + 0.1, old, 0.5)
    assert moved[0, 0] > 0 > moved[0, 1]


def test_group_advantages_are_normalised_within_groups_and_zero_where_rewards_agree():
    a = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    assert torch.allclose(a[0].mean(), torch.tensor(0.0)) and torch.allclose(a[0].std(), torch.tensor(1.0))
    assert torch.equal(a[1], torch.zeros(4))


@pytest.mark.parametrize("objective", ["grpo", "prdp"])
def test_each_objective_moves_the_mean_toward_the_rewarded_action(objective):
    mean = torch.zeros(1, 4, requires_grad=True)
    actions = torch.stack([torch.ones(4), -torch.ones(4)])[None]  # a pair: the first is rewarded
    rewards = torch.tensor([[1.0, 0.0]])
    ratio = log_ratio(actions, mean, mean.detach(), 0.5)
    loss = grpo_loss(ratio, group_advantages(rewards), 0.2) if objective == "grpo" else prdp_loss(ratio, rewards, 1.0, 0.2)
    loss.backward()
    assert torch.all(-mean.grad > 0)  # a descent step moves the mean toward actions[0]


def test_clipping_stops_the_gradient_once_the_policy_has_moved_far():
    mean = torch.full((1, 4), 0.5, requires_grad=True)  # far past the old mean toward the rewarded action
    actions = torch.stack([torch.ones(4), -torch.ones(4)])[None]
    ratio = log_ratio(actions, mean, torch.zeros(1, 4), 0.5)
    grpo_loss(ratio, group_advantages(torch.tensor([[1.0, 0.0]])), 0.2).backward()
    assert mean.grad.abs().sum() == 0
    mean.grad = None
    prdp_loss(log_ratio(actions, mean, torch.zeros(1, 4), 0.5), torch.tensor([[1.0, 0.0]]), 1.0, 0.2).backward()
    assert mean.grad.abs().sum() == 0


class Brighter(torch.nn.Module):
    """1 where the clip is brighter than zero on average: a judge with no gradient."""

    name = "bright"

    def forward(self, videos, prompts):
        return (videos.detach().mean((1, 2, 3, 4)) > 0).float()


class Identity:
    def decode_with_grad(self, latent, frames=0, checkpointing=False, start=0):
        return latent


@pytest.mark.parametrize("objective", ["grpo", "prdp"])
def test_the_objective_draws_groups_scores_them_and_logs(objective):
    torch.manual_seed(0)
    cfg = PolicyConfig(objective=objective, sigma=0.5, group=4, kl_weight=1.0 if objective == "grpo" else 0.0)
    reference = lambda noise, text: torch.zeros_like(noise)  # noqa: E731  the starting generator
    policy = PolicyObjective(Rewards([(Brighter(), Scoring())]), Identity(), cfg, reference=reference)
    if objective == "prdp":
        acts = policy.actions(torch.zeros(2, 3, 1, 2, 2))
        assert torch.allclose(acts[:, :2], -acts[:, 2:])  # antithetic pairs
    sample = torch.zeros(8, 3, 1, 2, 2, requires_grad=True)
    metrics = StepMetrics(1)
    policy.loss(sample, ["p"] * 8, metrics, noise=torch.randn(8, 3, 1, 2, 2), text=None).backward()
    assert all(k in metrics for k in ("reward", "reward_bright", "policy_loss"))
    assert ("policy_kl" in metrics) == (objective == "grpo")
    assert sample.grad.mean() < 0  # descent raises the brightness: the reward's direction, found without its gradient


def test_policy_configs_are_checked_at_start_up():
    base = ["adv.rewards=[{kind: toy, options: {score: read_caption}}]"]
    for bad, match in (("adv.policy.objective=ppo", "objective"), ("adv.policy.group=1", "group"),
                       ("adv.policy.sigma=0", "sigma")):
        with pytest.raises(ConfigError, match=match):
            load_config(APTConfig, TOY, [*base, "adv.policy.objective=grpo", bad])
    with pytest.raises(ConfigError, match="even"):
        load_config(APTConfig, TOY, [*base, "adv.policy.objective=prdp", "adv.policy.group=3"])
    with pytest.raises(ConfigError, match="list at least one"):
        load_config(APTConfig, TOY, ["adv.policy.objective=grpo"])


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["grpo", "prdp"])
def test_stage_two_with_a_policy_objective_trains_g_on_rewards_without_gradients(objective, tmp_path, tiny_model_dir,
                                                                                monkeypatch):
    from apt.cli.train import main as train
    from apt.training.run_folder import read_metrics

    monkeypatch.setenv("APT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / objective
    train(["--config", str(ROOT / f"configs/toy/reward-{objective}.yaml"), f"model.path={tiny_model_dir}",
           "adv.generator_init=teacher", "adv.discriminator_init=", "data.num_clips=8", "train.micro_batch_size=4",
           "train.global_batch_size=0", "train.steps=2", "train.sample_every=0", f"train.out_dir={out}"])
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert 0 <= row["reward_read_caption"] <= 1 and 0 <= row["reward_read_every_window"] <= 1
        assert row["g_grad_norm"] > 0 and "g_loss" in row and "policy_loss" in row


SEEN_PROMPTS: list[str] = []


class RecordingReward(torch.nn.Module):
    """A differentiable reward that records the prompts it is asked about."""

    name = "recording"

    def forward(self, videos, prompts):
        SEEN_PROMPTS.extend(prompts)
        return videos.mean((1, 2, 3, 4))


@pytest.mark.slow
def test_the_rewards_can_score_prompts_of_their_own_that_have_no_video(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from apt.cli.train import main as train
    from apt.training.run_folder import read_metrics

    monkeypatch.setenv("APT_CACHE_DIR", str(tmp_path / "cache"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# reward prompts\na purple elephant dancing\n\na green kite over the sea\n")
    SEEN_PROMPTS.clear()
    out = tmp_path / "run"
    train(["--config", str(ROOT / "configs/toy/reward.yaml"), f"model.path={tiny_model_dir}",
           "adv.generator_init=teacher", "adv.discriminator_init=", "data.num_clips=8", "train.micro_batch_size=4",
           "train.global_batch_size=0", "train.steps=2", "train.sample_every=0", f"train.out_dir={out}",
           f"adv.reward_prompts={prompts}", f"adv.rewards=[{{kind: python, target: '{__name__}:RecordingReward'}}]"])
    assert set(SEEN_PROMPTS) == {"a purple elephant dancing", "a green kite over the sea"} and len(SEEN_PROMPTS) == 8
    rows = read_metrics(out)
    assert all(r["g_grad_norm"] > 0 and "reward_recording" in r and "sample_grad_reward" in r for r in rows)
    with pytest.raises(SystemExit):  # before anything is loaded, with one line naming the option
        train(["--config", str(ROOT / "configs/toy/reward.yaml"), f"model.path={tiny_model_dir}",
               "adv.generator_init=teacher", "adv.discriminator_init=", f"train.out_dir={tmp_path / 'x'}",
               f"adv.reward_prompts={tmp_path / 'none.txt'}"])
    assert "adv.reward_prompts: no prompts file" in capsys.readouterr().err


def test_a_group_is_scored_on_one_window_of_frames():
    """With adv.reward_window the window's place is drawn once per update: a group's actions are compared on
    the same frames (a different window per action would credit the window, not the action)."""
    class Recording(Identity):
        def __init__(self):
            self.starts = []

        def decode_with_grad(self, latent, frames=0, checkpointing=False, start=0):
            self.starts.append(start)
            return latent[:, :, start : start + frames]

    decoder = Recording()
    policy = PolicyObjective(Rewards([(Brighter(), Scoring())]), decoder, PolicyConfig(objective="grpo", group=4),
                             window=1)
    torch.manual_seed(0)
    for _ in range(5):
        policy.loss(torch.zeros(2, 3, 6, 2, 2, requires_grad=True), ["p", "q"], StepMetrics(1))
    groups = [decoder.starts[i : i + 4] for i in range(0, 20, 4)]
    assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) > 1
