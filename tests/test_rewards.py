"""Rewards: one interface (scores of decoded frames and prompts), gradients to the pixels, the CLIP
loader on a tiny local model, a user's own class (kind: python), a weighted sum, and bad reward
configs stopping at start-up."""

import json
from pathlib import Path

import pytest
import torch

from apt.adversarial.config import APTConfig
from apt.core.config import ConfigError, load_config
from apt.rewards.base import Rewards, pick_frames
from apt.rewards.clip import CLIPReward
from apt.rewards.registry import build_rewards, reward_kinds

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs/toy/apt.yaml"


def _tiny_clip_folder(path, image_size: int = 32):
    """A random transformers CLIP with a character-level BPE tokenizer, saved as a local folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=image_size, patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return _tiny_clip_folder(tmp_path_factory.mktemp("clip"))


def test_clip_reward_scores_each_clip_against_its_prompt_with_gradients(clip_folder):
    clip = CLIPReward(clip_folder, dtype=torch.float32)
    reward = Rewards([(clip, 1.0, [0, -1])])  # the first and the last frame only
    videos = (torch.rand(3, 3, 5, 24, 40) * 2 - 1).requires_grad_(True)  # not square: resized and centre-cropped
    scores, _ = reward(videos, ["a red seven", "a blue two", "a cat"])
    scale = clip.model.logit_scale.exp()  # the model's own temperature (PickScore's score), not a bare cosine
    assert scores.shape == (3,) and torch.all(scores.abs() <= scale + 1e-4) and scores.abs().max() > 1
    scores.sum().backward()
    assert videos.grad.abs().sum() > 0
    assert videos.grad[:, :, 1:4].abs().sum() == 0  # only the scored frames get gradients
    # a prompt changes the score of the same clip
    again, _ = reward(videos.detach()[:1].expand(2, -1, -1, -1, -1), ["a red seven", "a cat"])
    assert again[0] != again[1]


def test_clip_reward_with_an_aesthetic_head_ignores_the_prompt(clip_folder, tmp_path):
    from safetensors.torch import save_file

    save_file({"weight": torch.randn(1, 8), "bias": torch.zeros(1)}, str(tmp_path / "head.safetensors"))
    reward = CLIPReward(clip_folder, head=tmp_path / "head.safetensors", name="aesthetic")
    assert reward.model.dtype == torch.bfloat16  # reward models are frozen bf16 unless the entry says float32
    videos = torch.rand(2, 3, 2, 32, 32) * 2 - 1
    assert torch.allclose(reward(videos, ["x", "y"]), reward(videos, ["a", "b"]))


def test_toy_reward_prefers_the_true_caption_and_is_differentiable():
    pytest.importorskip("apt.toy.reward")
    from apt.toy.reward import REWARD_DIR, ToyAlignmentReward
    from apt.toy.world import MovingDigits

    if not (REWARD_DIR / "model.safetensors").exists():
        pytest.skip("the toy reward model is not built")
    data = MovingDigits("eval", 24, seed=5)
    items = [data[i] for i in range(len(data))]
    videos = torch.stack([it["video"] for it in items]).requires_grad_(True)
    reward = ToyAlignmentReward()
    own = reward(videos, [it["caption"] for it in items])
    wrong = reward(videos.detach(), [items[(i + 1) % len(items)]["caption"] for i in range(len(items))])
    assert (own.detach() > wrong).float().mean() >= 0.8
    own.sum().backward()
    assert videos.grad.abs().sum() > 0


def test_weighted_sum_logs_each_reward():
    class Constant(torch.nn.Module):
        def __init__(self, name, value):
            super().__init__()
            self.name, self.value = name, value

        def forward(self, videos, prompts):
            return videos.mean((1, 2, 3, 4)) * 0 + self.value

    rewards = Rewards([(Constant("a", 1.0), 2.0), (Constant("b", 3.0), 0.5)])
    total, each = rewards(torch.zeros(4, 3, 1, 8, 8), ["p"] * 4)
    assert torch.allclose(total, torch.full((4,), 3.5)) and set(each) == {"a", "b"}
    with pytest.raises(ConfigError, match="share a name"):
        Rewards([(Constant("a", 1.0), 1.0), (Constant("a", 2.0), 1.0)])


def test_pick_frames_counts_from_the_end_and_names_impossible_picks():
    videos = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(1, 3, 5, 1, 1)
    assert pick_frames(videos, [0, -1])[0, 0, :, 0, 0].tolist() == [0.0, 4.0]
    assert pick_frames(videos, []).shape == videos.shape
    with pytest.raises(ValueError, match="none of the reward's frames"):
        pick_frames(videos, [9])


def test_bad_reward_configs_stop_at_start_up_with_the_entry_named(tmp_path, clip_folder):
    with pytest.raises(ConfigError, match=r"adv.rewards\[0\].kind"):
        load_config(APTConfig, TOY, ["adv.rewards=[{kind: pickscore}]"])
    with pytest.raises(ConfigError, match=r"adv.rewards\[1\].weight"):
        load_config(APTConfig, TOY, ["adv.rewards=[{kind: toy}, {kind: clip, path: x, weight: -1}]"])
    with pytest.raises(ConfigError, match="adv.rewards: .*wieght"):
        load_config(APTConfig, TOY, ["adv.rewards=[{kind: toy, wieght: 1}]"])
    missing = load_config(APTConfig, TOY, [f"adv.rewards=[{{kind: clip, path: {tmp_path / 'nope'}}}]"])
    with pytest.raises(ConfigError, match=r"adv.rewards\[0\].path: .*does not exist"):
        build_rewards(missing.adv.rewards)
    no_path = load_config(APTConfig, TOY, ["adv.rewards=[{kind: clip}]"])
    with pytest.raises(ConfigError, match=r"adv.rewards\[0\].path"):
        build_rewards(no_path.adv.rewards)
    ok = load_config(APTConfig, TOY, [f"adv.rewards=[{{kind: clip, path: {clip_folder}, weight: 0.5, name: c}}]"])
    built = build_rewards(ok.adv.rewards)
    assert [r.name for r in built.rewards] == ["c"] and built.weights == [0.5]
    for bad, key in (("{kind: python}", "target"), ("{kind: python, target: nosuchmodule:Reward}", "target"),
                     ("{kind: toy, options: {a: 1}}", "options")):
        with pytest.raises(ConfigError, match=rf"adv.rewards\[0\].{key}"):
            build_rewards(load_config(APTConfig, TOY, [f"adv.rewards=[{bad}]"]).adv.rewards)


class Brightness:
    """A user's own reward (not a module): the mean brightness of the frames, scaled."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def __call__(self, videos, prompts):
        return self.scale * videos.mean((1, 2, 3, 4))


def test_a_python_reward_plugs_in_by_its_import_path():
    """kind: python builds the class at `target` with `options`; it is scored on its `frames`, named by
    `name` (or its class) and weighted like any reward; the registered kinds include the toy's plugin."""
    assert {"clip", "python", "toy"} <= set(reward_kinds())
    cfg = load_config(APTConfig, TOY, [
        f"adv.rewards=[{{kind: python, target: '{__name__}:Brightness', options: {{scale: 2.0}}, weight: 3.0, "
        f"frames: [-1]}}]"])
    rewards = build_rewards(cfg.adv.rewards)
    videos = torch.zeros(2, 3, 4, 8, 8, requires_grad=True)
    with torch.no_grad():
        videos[:, :, -1] = 0.5  # only the last frame is bright
    total, each = rewards(videos, ["a", "b"])
    assert list(each) == ["Brightness"] and torch.allclose(each["Brightness"], torch.full((2,), 1.0))
    assert torch.allclose(total, torch.full((2,), 3.0))
    total.sum().backward()
    assert videos.grad[:, :, :-1].abs().sum() == 0 and videos.grad[:, :, -1].abs().sum() > 0


def test_vae_decode_with_grad_equals_the_decode_and_checkpointing_changes_no_gradient():
    from apt.models.loading import load_components
    from apt.models.model_folder import resolve_model_dir

    vae = load_components(resolve_model_dir("toy"), parts=("vae",)).vae
    latent = torch.randn(2, 8, 3, 8, 8)
    full = vae.decode(latent)
    grads = []
    for checkpointing in (False, True):
        x = latent.clone().requires_grad_(True)
        videos = vae.decode_with_grad(x, checkpointing=checkpointing)
        assert torch.equal(videos.detach(), full)
        (videos * torch.linspace(-1, 1, videos.numel()).view_as(videos)).sum().backward()
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[0].abs().sum() > 0
    # the first k latent frames decode to the first 1 + 4 (k - 1) frames of the whole clip (causal VAE)
    assert torch.equal(vae.decode_with_grad(latent, latent_frames=2).detach(), full[:, :, :5])


def test_decode_with_grad_and_refine_take_wan22s_patchified_vae():
    """Wan 2.2's VAE (TI2V-5B: residual blocks, 2x2 pixel patches as channels, 16x spatial) at tiny widths."""
    from diffusers import AutoencoderKLWan
    from tiny import TINY_WAN22_VAE

    from apt.models.vae import VideoVAE

    torch.manual_seed(0)
    vae = VideoVAE(AutoencoderKLWan(**TINY_WAN22_VAE).eval().requires_grad_(False))
    video = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    latent = vae.encode(video)
    full = vae.decode(latent)
    x = latent.clone().requires_grad_(True)
    out = vae.decode_with_grad(x)
    assert out.shape == video.shape and torch.equal(out.detach(), full)
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    # equal to the rounding of convolutions over fewer frames (exact with torch's default threads, not with one)
    assert torch.allclose(vae.decode_with_grad(latent, latent_frames=2).detach(), full[:, :, :5], atol=1e-5)
    error = lambda z: float((vae.decode(z) - video).square().mean())  # noqa: E731
    assert error(vae.refine(video, 3, 0.05, latent=latent)) < error(latent)


def _have_toy_reward() -> bool:
    from apt.toy.reward import REWARD_DIR

    return (REWARD_DIR / "model.safetensors").exists()


def test_stage_two_with_a_reward_logs_it_and_updates_g_by_both_gradients(tmp_path, tiny_model_dir, monkeypatch):
    """A world-of-one stage-2 run with the toy reward: the reward and its parts are logged; with the
    adversarial term off (the reward-hacking ablation) G still trains, by the reward alone."""
    if not _have_toy_reward():
        pytest.skip("the toy reward model is not built")
    from apt.cli.train import main as train
    from apt.training.run_folder import read_metrics

    monkeypatch.setenv("APT_CACHE_DIR", str(tmp_path / "cache"))
    base = ["--config", str(ROOT / "configs/toy/reward.yaml"), f"model.path={tiny_model_dir}", "adv.generator_init=teacher",
            "adv.discriminator_init=", "data.num_clips=8", "train.micro_batch_size=4", "train.global_batch_size=0",
            "train.steps=2", "train.sample_every=0", "adv.rewards=[{kind: toy, weight: 2.0}]"]
    for weight in (1.0, 0.0):
        out = tmp_path / f"adv{weight}"
        train([*base, f"adv.adversarial_weight={weight}", f"train.out_dir={out}"])
        rows = read_metrics(out)
        assert [r["step"] for r in rows] == [1, 2]
        for row in rows:
            # the toy reward is log p(caption | clip) among the toy world's 540 captions
            assert row["reward_toy_alignment"] <= 0
            assert row["reward"] == pytest.approx(2.0 * row["reward_toy_alignment"])  # the weighted total
            assert row["g_grad_norm"] > 0
            assert ("g_loss" in row) == (weight > 0)


@pytest.mark.slow
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalised"])
def test_torchrun_two_process_reward_phase_resumes_to_identical_losses(tmp_path, tiny_model_dir, normalize):
    """The running moments of a normalised reward are checkpointed with the stage: the resumed run's
    rewards are normalised by the same statistics as the straight run's."""
    if not _have_toy_reward():
        pytest.skip("the toy reward model is not built")
    from tiny import straight_and_resumed_runs

    from apt.training.run_folder import read_metrics

    straight_and_resumed_runs(ROOT / "scripts" / "train_apt.py", ROOT / "configs/toy/reward.yaml", [
        f"model.path={tiny_model_dir}", "adv.generator_init=teacher", "adv.discriminator_init=",
        "data.num_clips=32", "train.micro_batch_size=4", "train.global_batch_size=8",
        "train.checkpoint_every=2", "adv.r1_every=2",
        *(["adv.rewards=[{kind: toy, weight: 1.0, normalize: true}]"] if normalize else [])], tmp_path)
    keys = ("d_loss", "g_loss", "reward", "aR1")  # aR1 only on penalised steps (1 and 3)
    straight = {m["step"]: [m.get(k) for k in keys] for m in read_metrics(tmp_path / "straight")}
    split = {m["step"]: [m.get(k) for k in keys] for m in read_metrics(tmp_path / "split")}
    assert sorted(straight) == sorted(split) == [1, 2, 3, 4]
    assert straight[3][3] is not None and straight[4][3] is None
    assert split[3] == straight[3] and split[4] == straight[4]
