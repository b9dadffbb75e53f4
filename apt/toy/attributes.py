"""Read digit, colour and direction off a toy clip without any trained video model.

Colour: the palette entry nearest the brightness-weighted mean colour of the glyph pixels.
Direction: the displacement of the brightness centroid from first to last frame.
Digit: a logistic regression on bounding-box crops, fitted on rendered training glyphs.

Used to check teacher samples (and later as a sanity reference for the learned evaluator).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from apt.toy.world import COLOUR_NAMES, COLOURS, DIRECTION_NAMES, DIRECTIONS, MovingDigits, ToyWorldConfig

_PALETTE = torch.tensor([COLOURS[c] for c in COLOUR_NAMES])
CROP = 12


def _intensity(video: torch.Tensor) -> torch.Tensor:
    """(3, F, H, W) in [-1, 1] -> (F, H, W) brightness in [0, 1]."""
    return ((video.float() + 1) / 2).clamp(0, 1).amax(0)


def read_colour(video: torch.Tensor) -> int:
    rgb = ((video.float() + 1) / 2).clamp(0, 1)
    inten = rgb.amax(0)
    w = (inten > 0.3 * inten.max()).float() * inten
    mean = (rgb * w).sum((1, 2, 3)) / w.sum().clamp_min(1e-6)
    mean = mean / mean.max().clamp_min(1e-6)
    return int(torch.cdist(mean[None], _PALETTE).argmin())


def centroids(video: torch.Tensor) -> torch.Tensor:
    """(F, 2) brightness centroid (x, y) of each frame, in pixels."""
    inten = _intensity(video)
    inten = inten * (inten > 0.3 * inten.amax((1, 2), keepdim=True))
    f, h, w = inten.shape
    ys, xs = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
    mass = inten.sum((1, 2)).clamp_min(1e-6)
    return torch.stack([(inten.sum(1) * xs).sum(1) / mass, (inten.sum(2) * ys).sum(1) / mass], dim=1)


def read_direction(video: torch.Tensor, min_move: float = 3.0) -> int | None:
    """Index into DIRECTION_NAMES, or None if the glyph did not move min_move pixels."""
    c = centroids(video)
    d = c[-1] - c[0]
    sx = 0 if abs(d[0]) < min_move else int(torch.sign(d[0]))
    sy = 0 if abs(d[1]) < min_move else int(torch.sign(d[1]))
    if sx == 0 and sy == 0:
        return None
    # a clearly dominant axis means the other one is jitter
    if sx and sy and min(abs(d[0]), abs(d[1])) < 0.35 * max(abs(d[0]), abs(d[1])):
        sx, sy = (sx, 0) if abs(d[0]) > abs(d[1]) else (0, sy)
    for k, name in enumerate(DIRECTION_NAMES):
        if DIRECTIONS[name] == (sx, sy):
            return k
    return None


def glyph_crops(video: torch.Tensor) -> torch.Tensor:
    """(F, CROP*CROP) bounding-box crops of the glyph in each frame, resized, max-normalised."""
    inten = _intensity(video)
    out = []
    for frame in inten:
        mask = frame > 0.25 * frame.max()
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(ys) == 0:
            out.append(torch.zeros(CROP * CROP))
            continue
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        side = int(max(y1 - y0, x1 - x0))
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        pad = F.pad(frame, (side, side, side, side))
        crop = pad[cy + side - side // 2 : cy + side - side // 2 + side, cx + side - side // 2 : cx + side - side // 2 + side]
        crop = F.interpolate(crop[None, None], size=(CROP, CROP), mode="area")[0, 0]
        out.append((crop / crop.max().clamp_min(1e-6)).flatten())
    return torch.stack(out)


@functools.lru_cache(maxsize=1)
def digit_classifier(num_clips: int = 1500, seed: int = 123):
    """Logistic regression on crops of rendered training clips (training glyphs only)."""
    from sklearn.linear_model import LogisticRegression

    data = MovingDigits("train", num_clips, seed, ToyWorldConfig())
    xs, ys = [], []
    for i in range(len(data)):
        item = data[i]
        crops = glyph_crops(item["video"])
        xs.append(crops[:: 4].numpy())
        ys += [item["digit"]] * len(crops[:: 4])
    clf = LogisticRegression(max_iter=2000, C=2.0)
    clf.fit(np.concatenate(xs), np.array(ys))
    return clf


def frame_digits(videos) -> np.ndarray:
    """(B, F) digit read off each frame of each clip on its own."""
    clf = digit_classifier()
    return np.stack([clf.predict(glyph_crops(v).numpy()) for v in videos])


def same_digit_per_clip(digits: np.ndarray) -> np.ndarray:
    """(B,) whether each clip's per-frame digit readings (frame_digits) all agree."""
    return (digits == digits[:, :1]).all(1)


def same_digit_rate(digits: np.ndarray) -> float:
    """Fraction of clips whose per-frame digit readings (frame_digits) all agree."""
    return float(same_digit_per_clip(digits).mean())


def paired_same_digit_difference(digits: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of (same digit in all frames) minus the reference's, clip by clip: both
    read off clips of the same prompts and noise, so the pairing removes the prompts' own spread."""
    if digits.shape[0] != reference.shape[0] or digits.shape[0] < 2:
        raise ValueError(f"need the same number (>= 2) of clips, got {digits.shape[0]} and {reference.shape[0]}")
    diff = same_digit_per_clip(digits).astype(float) - same_digit_per_clip(reference).astype(float)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def same_digit_in_every_frame(videos) -> float:
    """Fraction of clips whose per-frame digit readings all agree (0.98 on real held-out clips)."""
    return same_digit_rate(frame_digits(videos))


def digit_by_frame(digits: np.ndarray, asked: list[int]) -> list[float]:
    """For each frame index, the fraction of clips whose frame shows the asked digit (from frame_digits):
    where in the clip a generator loses the digit."""
    return [round(float(a), 4) for a in (digits == np.asarray(asked)[:, None]).mean(0)]


def read_digit(video: torch.Tensor) -> int:
    probs = digit_classifier().predict_proba(glyph_crops(video).numpy())
    return int(np.log(probs + 1e-9).sum(0).argmax())


def read_attributes(video: torch.Tensor) -> dict:
    return {"digit": read_digit(video), "colour": read_colour(video), "direction": read_direction(video)}


def attribute_accuracy(videos, labels: list[dict]) -> dict[str, float]:
    """Fraction of clips whose read attribute equals the asked one, per attribute and all three."""
    hits = {"digit": 0, "colour": 0, "direction": 0, "all": 0}
    for video, want in zip(videos, labels):
        got = read_attributes(video)
        ok = [got[k] == want[k] for k in ("digit", "colour", "direction")]
        for k, o in zip(("digit", "colour", "direction"), ok):
            hits[k] += o
        hits["all"] += all(ok)
    return {k: v / max(1, len(labels)) for k, v in hits.items()}
