"""Sample-quality metrics for generated toy clips (issue #6).

- attribute accuracy: digit / colour / direction read by the shipped evaluator (apt/toy/evaluator.py)
  against the attributes that were asked for;
- Frechet distance between Gaussians fitted to evaluator features of the generated clips and of
  real held-out clips (FVD-like; lower is better; it is biased upwards at small n, so compare at equal n);
- sharpness ratio: Laplacian energy against the same real clips (no learned model, so it stays
  comparable across evaluator versions);
- edge sharpness ratio: Laplacian energy per unit of gradient energy against the real clips. Laplacian
  energy alone also grows with the amount of ink (a bigger or brighter blurry blob scores higher); the
  ratio of the two depends on how wide the edges are, not on how much edge there is.
The real reference clips are the toy world's "eval" split (held-out glyphs and combinations).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

REFERENCE_CLIPS = 1000
REFERENCE_SEED = 0

# 4-neighbour discrete Laplacian: zero on flat regions, large on edges and fine texture.
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _check_videos(videos: torch.Tensor) -> None:
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected videos (B, 3, F, H, W), got shape {tuple(videos.shape)}")


def _frames(videos: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) clips in [-1, 1] -> (B*F*3, 1, H, W) frames, clamped as they are shown."""
    _check_videos(videos)
    b, c, f, h, w = videos.shape
    return videos.detach().float().clamp(-1, 1).permute(0, 2, 1, 3, 4).reshape(b * f * c, 1, h, w)


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


@dataclass(frozen=True)
class Reference:
    """Real clips and what the metrics need from them, computed once."""

    videos: torch.Tensor
    mu: torch.Tensor
    cov: torch.Tensor
    sharpness: float
    edge_sharpness: float


@functools.lru_cache(maxsize=2)
def real_reference(n: int = REFERENCE_CLIPS, seed: int = REFERENCE_SEED) -> Reference:
    """n real held-out clips (toy 'eval' split: held-out glyphs and combinations) at a fixed seed."""
    from apt.data.toy import MovingDigits
    from apt.toy.evaluator import score_clips

    data = MovingDigits("eval", length=n, seed=seed)
    videos = torch.stack([data[i]["video"] for i in range(n)])
    mu, cov = gaussian_stats(score_clips(videos)[1])
    return Reference(videos, mu, cov, sharpness(videos), edge_sharpness(videos))


def evaluate_videos(videos: torch.Tensor, requests: list[dict], reference: Reference | None = None) -> dict:
    """Metrics of clips (B, 3, F, H, W) in [-1, 1] generated for requests [{digit, colour, direction}, ...].

    Returns digit/colour/direction/all accuracy (evaluator), frechet_distance (evaluator features,
    against `reference`, by default REFERENCE_CLIPS real held-out clips), sharpness_ratio,
    edge_sharpness_ratio and n.
    """
    from apt.toy.evaluator import HEADS, score_clips

    _check_videos(videos)
    if len(videos) != len(requests):
        raise ValueError(f"{len(videos)} clips but {len(requests)} requests")
    reference = reference or real_reference()
    preds, feats = score_clips(videos)
    hits = {k: preds[k] == torch.tensor([int(r[k]) for r in requests]) for k in HEADS}
    out = {k: h.float().mean().item() for k, h in hits.items()}
    out["all"] = torch.stack(list(hits.values())).all(0).float().mean().item()
    out["frechet_distance"] = frechet_distance(*gaussian_stats(feats), reference.mu, reference.cov)
    out["sharpness_ratio"] = sharpness(videos) / reference.sharpness
    out["edge_sharpness_ratio"] = edge_sharpness(videos) / reference.edge_sharpness
    out["n"] = len(videos)
    return out
