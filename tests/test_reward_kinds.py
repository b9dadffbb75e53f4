"""Reward kinds beyond a plain CLIP: the video-text interface on a tiny random model, the HPS v2.1
(open_clip) and LAION aesthetic converters on tiny checkpoints written in the tests, and a
non-differentiable reward stopping reward gradients with a clear error."""

import json

import pytest
import torch
from test_rewards import TOY, _tiny_clip_folder
from torch import nn

from apt.adversarial.config import APTConfig
from apt.core.config import ConfigError, load_config
from apt.rewards.registry import build_rewards
from apt.rewards.video_text import VideoTextReward, even_frames


class TinyVideoText(nn.Module):
    """A random video-text model with the interface apt/rewards/video_text.py asks for."""

    num_frames, image_size, logit_scale = 4, 16, 10.0

    def __init__(self, dim: int = 8, path: str = ""):
        super().__init__()
        torch.manual_seed(0)
        self.video = nn.Conv3d(3, dim, (2, 4, 4), stride=(2, 4, 4))
        self.words = nn.EmbeddingBag(128, dim)
        self.frames_seen = None

    def embed_video(self, pixels):
        self.frames_seen = pixels.shape
        return self.video(pixels).mean((2, 3, 4))

    def embed_text(self, prompts):
        ids = [torch.tensor([ord(c) % 128 for c in p]) for p in prompts]
        return self.words(torch.cat(ids), torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0))


def test_even_frames_spread_over_the_clip():
    assert even_frames(49, 4) == [0, 16, 32, 48] and even_frames(9, 1) == [4] and even_frames(2, 3) == [0, 0, 1]


def test_a_video_text_model_scores_clips_against_prompts_with_gradients():
    cfg = load_config(APTConfig, TOY, [f"adv.rewards=[{{kind: video_text, target: '{__name__}:TinyVideoText', "
                                       f"options: {{dim: 8}}, dtype: float32, name: vt}}]"])
    rewards = build_rewards(cfg.adv.rewards)
    reward = rewards.rewards[0]
    assert isinstance(reward, VideoTextReward) and not any(p.requires_grad for p in reward.model.parameters())
    videos = (torch.rand(2, 3, 9, 24, 40) * 2 - 1).requires_grad_(True)
    total, each = rewards(videos, ["a red seven", "a dog running"])
    assert reward.model.frames_seen == (2, 3, 4, 16, 16)  # 4 frames evenly over 9, resized and cropped
    assert total.shape == (2,) and torch.all(total.abs() <= 10 + 1e-4) and list(each) == ["vt"]
    total.sum().backward()
    assert videos.grad.abs().sum() > 0
    again, _ = rewards(videos.detach()[:1].expand(2, -1, -1, -1, -1), ["a red seven", "a dog running"])
    assert again[0] != again[1]
    with pytest.raises(ConfigError, match="needs `num_frames`"):
        VideoTextReward(nn.Linear(1, 1))


def _as_open_clip(model) -> dict[str, torch.Tensor]:
    """transformers CLIPModel weights in open_clip's (OpenAI) layout, as HPS v2.1's checkpoint holds them."""
    s = model.state_dict()
    out = {"token_embedding.weight": s["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": s["text_model.embeddings.position_embedding.weight"],
           "ln_final.weight": s["text_model.final_layer_norm.weight"], "ln_final.bias": s["text_model.final_layer_norm.bias"],
           "text_projection": s["text_projection.weight"].T, "logit_scale": s["logit_scale"],
           "visual.class_embedding": s["vision_model.embeddings.class_embedding"],
           "visual.positional_embedding": s["vision_model.embeddings.position_embedding.weight"],
           "visual.conv1.weight": s["vision_model.embeddings.patch_embedding.weight"],
           "visual.ln_pre.weight": s["vision_model.pre_layrnorm.weight"], "visual.ln_pre.bias": s["vision_model.pre_layrnorm.bias"],
           "visual.ln_post.weight": s["vision_model.post_layernorm.weight"],
           "visual.ln_post.bias": s["vision_model.post_layernorm.bias"], "visual.proj": s["visual_projection.weight"].T}
    for hf, oc in (("text_model.encoder.layers", "transformer.resblocks"),
                   ("vision_model.encoder.layers", "visual.transformer.resblocks")):
        n = len({k.split(".")[3] for k in s if k.startswith(hf + ".")})
        for i in range(n):
            a, b = f"{hf}.{i}", f"{oc}.{i}"
            out[f"{b}.attn.in_proj_weight"] = torch.cat([s[f"{a}.self_attn.{p}_proj.weight"] for p in "qkv"])
            out[f"{b}.attn.in_proj_bias"] = torch.cat([s[f"{a}.self_attn.{p}_proj.bias"] for p in "qkv"])
            for x, y in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                for p in ("weight", "bias"):
                    out[f"{b}.{y}.{p}"] = s[f"{a}.{x}.{p}"]
    return {k: v.clone() for k, v in out.items()}


def test_an_open_clip_checkpoint_converts_to_a_clip_folder_that_scores_as_the_original(tmp_path):
    from transformers import CLIPModel

    from apt.rewards.clip import CLIPReward
    from apt.rewards.convert import convert_open_clip

    folder = _tiny_clip_folder(tmp_path / "original")
    original = CLIPModel.from_pretrained(folder)
    torch.save({"state_dict": {f"module.{k}": v for k, v in _as_open_clip(original).items()}}, tmp_path / "hps.pt")
    config = json.loads((folder / "config.json").read_text())
    out = convert_open_clip(tmp_path / "hps.pt", folder, tmp_path / "converted",
                            {k: config[k] for k in ("text_config", "vision_config", "projection_dim")})
    videos = torch.rand(2, 3, 2, 32, 32) * 2 - 1
    a = CLIPReward(folder, dtype=torch.float32)(videos, ["a red seven", "a cat"])
    b = CLIPReward(out, dtype=torch.float32)(videos, ["a red seven", "a cat"])
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="does not fit the CLIP config"):
        convert_open_clip(tmp_path / "hps.pt", folder, tmp_path / "wrong")  # ViT-H-14 shapes: nothing fits


def test_the_laion_aesthetic_mlp_converts_to_a_head_that_scores_as_the_mlp(tmp_path):
    from apt.rewards.clip import CLIPReward, load_head
    from apt.rewards.convert import convert_aesthetic

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.2), nn.Linear(16, 4), nn.Dropout(0.1), nn.Linear(4, 1)).eval()
    torch.save({f"layers.{k}": v for k, v in mlp.state_dict().items()}, tmp_path / "aesthetic.pth")
    head = convert_aesthetic(tmp_path / "aesthetic.pth", tmp_path / "aesthetic.safetensors")
    x = torch.randn(5, 8)
    assert torch.allclose(load_head(head)(x), mlp(x), atol=1e-6)
    folder = _tiny_clip_folder(tmp_path / "clip")
    reward = CLIPReward(folder, head=head, dtype=torch.float32)
    assert reward(torch.rand(2, 3, 1, 32, 32) * 2 - 1, ["x", "y"]).shape == (2,)


def test_reward_gradients_from_a_reward_without_one_stop_with_the_way_out():
    from apt.adversarial.reward_feedback import RewardFeedback
    from apt.rewards.base import Rewards, Scoring
    from apt.training.metrics import StepMetrics

    class Judge(nn.Module):
        name = "judge"

        def forward(self, videos, prompts):
            return (videos.detach().mean((1, 2, 3, 4)) > 0).float()

    class Decoder:
        def decode_with_grad(self, latent, frames, checkpointing, start=0):
            return latent

    feedback = RewardFeedback(Rewards([(Judge(), Scoring())]), Decoder(), 0, False)
    with pytest.raises(ValueError, match="adv.policy.objective=grpo or prdp"):
        feedback.loss(torch.rand(2, 3, 1, 4, 4, requires_grad=True), ["a", "b"], StepMetrics(1))
