"""Sample-quality metrics of any video set, with no learned model of their own:

- Frechet distance between Gaussians fitted to features of two sets (FVD-like, on whatever feature
  network the caller uses; lower is better; biased upwards at small n, so compare at equal n);
- sharpness: Laplacian energy, compared as a ratio against real clips;
- edge sharpness: Laplacian energy per unit of gradient energy. Laplacian energy alone also grows with
  the amount of ink (a bigger or brighter blurry blob scores higher); the ratio of the two depends on
  how wide the edges are, not on how much edge there is, but it also falls when strokes get fatter
  with no blur at all (a stroke's two edges stop interfering);
- edge steepness: the brightness slope across the edges of the ink, per unit of the frame's peak
  brightness, measured only in the band where brightness crosses from 25% to 75% of the peak. Moving
  an edge outwards (a fatter stroke) keeps its slope; blurring it lowers the slope. It separates edge
  width from stroke width.
The toy world's evaluation (apt/toy/evaluation.py) reads attributes and features with its evaluator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

# 4-neighbour discrete Laplacian: zero on flat regions, large on edges and fine texture.
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def check_videos(videos: torch.Tensor) -> None:
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected videos (B, 3, F, H, W), got shape {tuple(videos.shape)}")


def _frames(videos: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) clips in [-1, 1] -> (B*F*3, 1, H, W) frames, clamped as they are shown."""
    check_videos(videos)
    return rearrange(videos.detach().float().clamp(-1, 1), "b c f h w -> (b f c) 1 h w")


def _laplacian_energy(frames: torch.Tensor) -> float:
    return float(F.conv2d(frames, _LAPLACIAN.to(frames.device).view(1, 1, 3, 3)).pow(2).mean())


def sharpness(videos: torch.Tensor) -> float:
    """Mean squared spatial Laplacian (Laplacian energy) of clips in [-1, 1].

    Every frame of every channel is filtered with the 4-neighbour Laplacian [[0,1,0],[1,-4,1],[0,1,0]]
    (valid region only, so borders add nothing), squared, and averaged over pixels, channels, frames and
    clips. Values are clamped to [-1, 1] first, as the clips are shown. Blur removes high frequencies,
    so a blurrier set scores lower; the score is in pixel units (range 2 per channel), not normalised.
    """
    return _laplacian_energy(_frames(videos))


def edge_sharpness(videos: torch.Tensor) -> float:
    """Laplacian energy / gradient energy of clips in [-1, 1], in 1 / pixel^2.

    Gradient energy is the mean of squared horizontal plus vertical forward differences. Both energies
    scale with contrast squared and with the length of the edges, so their ratio does not: it falls
    as edges widen (about 1 / width^2 for a blurred step). It tells a blurry big blob from a sharp
    thin stroke, which Laplacian energy alone can rank the other way round.
    """
    frames = _frames(videos)
    dx, dy = frames[..., 1:] - frames[..., :-1], frames[..., 1:, :] - frames[..., :-1, :]
    gradient = float(dx.pow(2).mean() + dy.pow(2).mean())
    if gradient <= 0:
        raise ValueError("the clips are flat (zero gradient energy): edge sharpness is undefined")
    return _laplacian_energy(frames) / gradient


def edge_steepness(videos: torch.Tensor, low: float = 0.25, high: float = 0.75, min_peak: float = 0.1) -> float:
    """Mean brightness gradient (central differences, 1 / pixel) over the pixels whose brightness lies
    between `low` and `high` of their frame's peak, with brightness the max over RGB in [0, 1] and each
    frame divided by its peak; frames darker than `min_peak` (nothing drawn) are left out. A step
    blurred to width w scores about 0.8 / w."""
    check_videos(videos)
    b, c, f, h, w = videos.shape
    frames = ((videos.detach().float().clamp(-1, 1) + 1) / 2).amax(1).reshape(b * f, h, w)
    peak = frames.amax((1, 2))
    lit = peak > min_peak
    if not lit.any():
        raise ValueError("the clips are dark (no frame reaches the minimum peak brightness): no edges to measure")
    norm = frames[lit] / peak[lit].view(-1, 1, 1)
    gx = (norm[:, 1:-1, 2:] - norm[:, 1:-1, :-2]) / 2
    gy = (norm[:, 2:, 1:-1] - norm[:, :-2, 1:-1]) / 2
    inner = norm[:, 1:-1, 1:-1]
    band = (inner > low) & (inner < high)
    return float((gx.square() + gy.square()).sqrt()[band].mean())


def sharpness_ratio(videos: torch.Tensor, real_videos: torch.Tensor) -> float:
    """sharpness(videos) / sharpness(real_videos): 1.0 = as sharp as real data, < 1 blurrier, > 1 noisier."""
    real = sharpness(real_videos)
    if real <= 0:
        raise ValueError("the real clips are flat (zero Laplacian energy); a ratio against them is undefined")
    return sharpness(videos) / real


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of (N, D) features, in float64."""
    x = features.detach().double()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {tuple(x.shape)}")
    return x.mean(0), torch.cov(x.T)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2).

    tr((C1 C2)^1/2) is computed through the symmetric form with eigh (no scipy; C1^1/2 C2 C1^1/2 is
    symmetric PSD, so no complex parts from round-off); tiny negative eigenvalues are clamped to 0.
    """
    root1 = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross)
