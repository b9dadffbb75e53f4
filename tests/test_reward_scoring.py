"""How a reward is applied (apt/rewards/base.py Scoring): per frame or per clip, pooled by mean or min, a
temporal term, VADER's frame subsampling, running normalisation; the decode of a window of latent frames
anywhere in the clip; the toy's scores."""

import pytest
import torch
from test_rewards import TOY

from apt.adversarial.config import APTConfig
from apt.core.config import ConfigError, load_config
from apt.rewards.base import Rewards, RunningMoments, Scoring
from apt.rewards.registry import build_rewards


class FrameBrightness(torch.nn.Module):
    """Mean brightness of what it is given; records the clip lengths it saw."""

    name = "bright"

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, videos, prompts):
        self.seen.append((videos.shape[2], len(prompts)))
        return videos.mean((1, 2, 3, 4))


def test_per_frame_scores_each_frame_on_its_own_and_pools_by_mean_or_min():
    videos = torch.zeros(2, 3, 4, 2, 2)
    videos[:, :, 2] = 1.0  # frame 2 is bright
    videos[1, :, 0] = -1.0  # clip 1's frame 0 is dark
    for pool, want in (("mean", [0.25, 0.0]), ("min", [0.0, -1.0])):
        reward = FrameBrightness()
        total, each = Rewards([(reward, Scoring(2.0, per_frame=pool))])(videos, ["a", "b"])
        assert reward.seen == [(1, 8)]  # 2 clips x 4 one-frame clips, each with its prompt
        assert torch.allclose(each["bright"], torch.tensor(want)) and torch.allclose(total, 2 * torch.tensor(want))
    runs = FrameBrightness()
    total, _ = Rewards([(runs, Scoring(per_frame="min", window=3))])(videos, ["a", "b"])
    assert runs.seen == [(3, 4)] and torch.allclose(total, torch.tensor([1 / 3, 0.0]))  # 2 runs of 3 frames a clip
    with pytest.raises(ConfigError, match="window"):
        Scoring(window=3)
    whole = FrameBrightness()
    Rewards([(whole, Scoring())])(videos, ["a", "b"])
    assert whole.seen == [(4, 2)]


def test_the_temporal_term_takes_the_spread_of_the_per_frame_scores_off():
    videos = torch.zeros(1, 3, 4, 2, 2)
    videos[:, :, 1] = 1.0
    plain, _ = Rewards([(FrameBrightness(), Scoring(per_frame="mean"))])(videos, ["a"])
    steady, _ = Rewards([(FrameBrightness(), Scoring(per_frame="mean", temporal=1.0))])(videos, ["a"])
    assert torch.allclose(plain - steady, torch.tensor([0.5]))  # std of (0, 1, 0, 0)
    with pytest.raises(ConfigError, match="temporal"):
        Scoring(temporal=1.0)


def test_subsampling_scores_k_frames_in_time_order():
    videos = torch.arange(6.0).view(1, 1, 6, 1, 1).expand(1, 3, 6, 1, 1)

    class Order(torch.nn.Module):
        name = "order"

        def forward(self, v, prompts):
            self.frames = v[0, 0, :, 0, 0].tolist()
            return v.mean((1, 2, 3, 4))

    reward = Order()
    torch.manual_seed(0)
    Rewards([(reward, Scoring(subsample=3))])(videos, ["a"])
    assert len(reward.frames) == 3 and reward.frames == sorted(reward.frames) and len(set(reward.frames)) == 3


def test_running_moments_are_the_exact_moments_of_everything_seen_and_normalise():
    moments, seen = RunningMoments(), []
    torch.manual_seed(0)
    for n in (3, 5, 8):
        batch = torch.randn(n) * 3 + 7
        seen.append(batch)
        moments.update(batch)
    every = torch.cat(seen).double()
    assert moments.count == 16 and torch.allclose(moments.mean, every.mean())
    assert torch.allclose(moments.m2 / (moments.count - 1), every.var())
    z = moments.normalise(torch.tensor([7.0]))
    assert torch.allclose(z, ((7.0 - every.mean()) / every.std()).float())
    rewards = Rewards([(FrameBrightness(), Scoring(normalize=True))])
    total, each = rewards(torch.rand(4, 3, 2, 2, 2), list("abcd"))
    assert abs(float(total.mean())) < 1e-5 and "bright" in rewards.moments  # z-scores of their own batch


def test_config_entries_map_onto_scoring_and_bad_ones_stop_at_start_up():
    cfg = load_config(APTConfig, TOY, ["adv.rewards=[{kind: toy, per_frame: min, temporal: 0.5, subsample: 4, "
                                       "normalize: true, weight: 2}]"])
    built = build_rewards(cfg.adv.rewards)
    assert built.scorings[0] == Scoring(2.0, (), 4, "min", 0.5, True, 1)
    for bad, key in (("{kind: toy, per_frame: max}", "per_frame"), ("{kind: toy, temporal: 1}", "temporal"),
                     ("{kind: toy, dtype: float16}", "dtype"), ("{kind: video_text}", "target")):
        with pytest.raises(ConfigError, match=rf"adv.rewards\[0\].{key}"):
            load_config(APTConfig, TOY, [f"adv.rewards=[{bad}]"])
    with pytest.raises(ConfigError, match=r"adv.rewards\[0\].options: a toy reward takes score, pool"):
        build_rewards(load_config(APTConfig, TOY, ["adv.rewards=[{kind: toy, options: {a: 1}}]"]).adv.rewards)
    with pytest.raises(ConfigError, match=r"adv.rewards\[0\].options: .*score is one of"):
        build_rewards(load_config(APTConfig, TOY, ["adv.rewards=[{kind: toy, options: {score: nope}}]"]).adv.rewards)
    with pytest.raises(ConfigError, match="reward_latent_frames .* and adv.reward_window"):
        load_config(APTConfig, TOY, ["adv.reward_latent_frames=1", "adv.reward_window=1"])


def test_a_window_of_latent_frames_anywhere_decodes_exactly_that_part_of_the_clip():
    from apt.models.loading import load_components
    from apt.models.model_folder import resolve_model_dir

    vae = load_components(resolve_model_dir("toy"), parts=("vae",)).vae
    torch.manual_seed(0)
    latent = torch.randn(2, 8, 3, 8, 8)
    full = vae.decode(latent)
    for start, k, frames in ((1, 1, slice(1, 5)), (1, 2, slice(1, 9)), (2, 1, slice(5, 9)), (0, 1, slice(0, 1))):
        x = latent.clone().requires_grad_(True)
        window = vae.decode_with_grad(x, k, start=start)
        assert torch.equal(window.detach(), full[:, :, frames])
        window.sum().backward()
        assert x.grad[:, :, :start].abs().sum() == 0  # the warm-up frames get no gradient
        assert x.grad[:, :, start : start + k].abs().sum() > 0


@pytest.mark.parametrize("score", ["digit_colour", "frame_consistency", "read_caption", "read_every_window"])
def test_toy_scores_prefer_the_true_clip_and_the_read_scores_have_no_gradient(score):
    from apt.toy.reward import ToyAlignmentReward
    from apt.toy.world import MovingDigits

    data = MovingDigits("eval", 32, seed=5)
    items = [data[i] for i in range(len(data))]
    videos = torch.stack([it["video"] for it in items]).requires_grad_(True)
    captions = [it["caption"] for it in items]
    reward = ToyAlignmentReward(score=score)
    if score == "frame_consistency":  # prompt-free: frames of two clips spliced hold two glyphs
        spliced = videos.detach().clone()
        spliced[:, :, 5:] = videos.detach().roll(1, 0)[:, :, 5:]
        own, other = reward(videos, captions), reward(spliced, captions)
    else:
        own, other = reward(videos, captions), reward(videos.detach(), captions[1:] + captions[:1])
    assert own.mean() > other.mean()
    assert own.requires_grad == (score in ("digit_colour", "frame_consistency"))
    if score.startswith("read"):
        assert set(own.tolist()) <= {0.0, 1.0}
    if score == "frame_consistency":  # the worst frame's cosine, not their mean
        assert torch.all(ToyAlignmentReward(score=score, pool="min")(videos.detach(), captions) <= own.detach() + 1e-6)
