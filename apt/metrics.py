"""Sample-quality metrics for generated clips (issue #6).

Sharpness is measured without any learned model so that it stays comparable across evaluator versions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# 4-neighbour discrete Laplacian: zero on flat regions, large on edges and fine texture.
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _check_videos(videos: torch.Tensor) -> None:
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected videos (B, 3, F, H, W), got shape {tuple(videos.shape)}")


def sharpness(videos: torch.Tensor) -> float:
    """Mean squared spatial Laplacian (Laplacian energy) of clips in [-1, 1].

    Every frame of every channel is filtered with the 4-neighbour Laplacian [[0,1,0],[1,-4,1],[0,1,0]]
    (valid region only, so borders add nothing), squared, and averaged over pixels, channels, frames and
    clips. Values are clamped to [-1, 1] first, as the clips are shown. Blur removes high frequencies,
    so a blurrier set scores lower; the score is in pixel units (range 2 per channel), not normalised.
    """
    _check_videos(videos)
    b, c, f, h, w = videos.shape
    frames = videos.detach().float().clamp(-1, 1).permute(0, 2, 1, 3, 4).reshape(b * f * c, 1, h, w)
    lap = F.conv2d(frames, _LAPLACIAN.to(frames.device).view(1, 1, 3, 3))
    return float(lap.pow(2).mean())


def sharpness_ratio(videos: torch.Tensor, real_videos: torch.Tensor) -> float:
    """sharpness(videos) / sharpness(real_videos): 1.0 = as sharp as real data, < 1 blurrier, > 1 noisier."""
    real = sharpness(real_videos)
    if real <= 0:
        raise ValueError("the real clips are flat (zero Laplacian energy); a ratio against them is undefined")
    return sharpness(videos) / real
