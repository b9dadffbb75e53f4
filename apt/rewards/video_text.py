"""The `video_text` reward kind: a video-text model of yours (ViCLIP, InternVideo2 and the like) scores
a clip's frames, as a whole, against the prompt: logit_scale x cosine of the two embeddings.

What the model must provide (its class at `target`, built with `options`, and `path=` when the entry
names one):

    num_frames: int            frames the video encoder takes (sampled evenly over the decoded clip)
    image_size: int            their side (short side resized, centre crop)
    mean, std: 3 floats        the pixel normalisation (optional: CLIP's)
    logit_scale: float         the score's temperature (optional: 1)
    embed_video(pixels (B, 3, T, S, S)) -> (B, D)
    embed_text(prompts: list[str]) -> (B, D)

The adapter samples, resizes and normalises, so the model sees what it was trained on; the model's
weights are frozen and cast to the entry's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from apt.core.config import ConfigError
from apt.rewards.clip import CLIP_MEAN, CLIP_STD, resize_and_crop


def even_frames(n: int, k: int) -> list[int]:
    """k frame indices spread evenly over n frames (the first and the last included; repeats if k > n)."""
    if k == 1:
        return [n // 2]
    return [round(i * (n - 1) / (k - 1)) for i in range(k)]


class VideoTextReward(nn.Module):
    def __init__(self, model, name: str = "video_text"):
        super().__init__()
        for needed in ("num_frames", "image_size", "embed_video", "embed_text"):
            if not hasattr(model, needed):
                raise ConfigError(f"target: a video_text model needs `{needed}` (apt/rewards/video_text.py)")
        self.model, self.name = model, name
        self.num_frames, self.size = int(model.num_frames), int(model.image_size)
        self.register_buffer("mean", torch.tensor(getattr(model, "mean", CLIP_MEAN)).view(1, 3, 1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(getattr(model, "std", CLIP_STD)).view(1, 3, 1, 1, 1),
                             persistent=False)

    def pixels(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> (B, 3, T, S, S) normalised, T frames evenly over F."""
        b = videos.shape[0]
        clips = videos[:, :, even_frames(videos.shape[2], self.num_frames)]
        frames = resize_and_crop(rearrange(clips, "b c t h w -> (b t) c h w"), self.size)
        return (rearrange(frames, "(b t) c h w -> b c t h w", b=b) - self.mean) / self.std

    def forward(self, videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        dtype = next((p.dtype for p in self.model.parameters()), torch.float32) if isinstance(
            self.model, nn.Module) else torch.float32
        video = self.model.embed_video(self.pixels(videos).to(dtype)).float()
        text = self.model.embed_text(list(prompts)).float()
        scale = torch.as_tensor(getattr(self.model, "logit_scale", 1.0), dtype=torch.float32, device=video.device)
        return scale * (F.normalize(video, dim=-1) * F.normalize(text, dim=-1)).sum(-1)


def build(spec) -> VideoTextReward:
    """kind video_text: the class at spec.target, built with spec.options (and path=spec.path if set)."""
    from apt.rewards.config import import_target

    cls = import_target(spec.target)
    kwargs = {**spec.options, **({"path": spec.path} if spec.path else {})}
    try:
        model = cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"options: {spec.target} does not take {kwargs}: {err}") from None
    if isinstance(model, nn.Module):
        dtype = torch.float32 if spec.dtype == "float32" else torch.bfloat16
        model = model.to(dtype).eval().requires_grad_(False)
    return VideoTextReward(model, name=spec.name or "video_text")
