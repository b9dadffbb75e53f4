"""A folder of videos (and images) with captions -> fixed-size clips in [-1, 1].

Discovery: every video (.mp4 .webm .mov .mkv .avi) and image (.jpg .jpeg .png .webp) under a root,
captioned by a CSV (`path,caption` header) or JSONL (`{"path": ..., "caption": ...}`) file, or by a
sidecar `<name>.txt` next to the file. Paths in a caption file are relative to the root.

Decoding (PyAV): frames are resampled to the target fps by timestamp (the nearest earlier source
frame), starting at the first frame; the short side is resized (antialiased) to cover the target
size, then centre-cropped. No aspect-ratio buckets: one size per shard set. An image is a 1-frame
clip; a video in a 1-frame set gives its first frame.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from apt.core.config import ConfigError

VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


class ClipError(ValueError):
    """A source that cannot give a clip (unreadable, too short, wrong kind): skipped, never fatal."""


@dataclass(frozen=True)
class SourceItem:
    key: str  # path relative to the root (posix), "@<start>s" added for a later clip: the identity used to resume
    path: Path
    caption: str
    start: float = 0.0  # seconds after the video's first frame where the clip starts

    @property
    def is_image(self) -> bool:
        return self.path.suffix.lower() in IMAGE_EXTS


@dataclass(frozen=True)
class ClipSpec:
    frames: int
    height: int
    width: int
    fps: float

    def __post_init__(self):
        if self.frames < 1 or self.height < 1 or self.width < 1 or self.fps <= 0:
            raise ValueError(f"clip spec must be positive, got {self}")


NOT_UTF8 = "caption is not valid UTF-8"


def _utf8(text: str) -> bool:
    """False for text read with errors="surrogateescape" that held bytes UTF-8 cannot decode."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _read_caption_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """({path: caption}, [paths whose caption is not valid UTF-8]). Undecodable bytes spoil only their
    own row (read with surrogateescape, then checked); a file whose header or structure cannot be
    read stops preprocessing with the file named."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as err:
        raise ConfigError(f"caption file {path} cannot be read: {err}") from None
    out, bad = {}, []
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}:{n}: not a JSON object ({err.msg}){'' if _utf8(line) else ' (and not UTF-8)'}") from None
            if not isinstance(row, dict) or "path" not in row or "caption" not in row:
                raise ConfigError(f"{path}:{n}: each line needs 'path' and 'caption'")
            out[str(row["path"])] = str(row["caption"])
        bad = [k for k, v in out.items() if not (_utf8(k) and _utf8(v))]
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames or not {"path", "caption"} <= set(reader.fieldnames):
            hint = "" if _utf8(text[:200]) else " (the file is not UTF-8: save it as UTF-8)"
            raise ConfigError(f"{path}: a CSV caption file needs a 'path,caption' header{hint}")
        for row in reader:
            if row["path"] is None or row["caption"] is None:
                continue
            out[row["path"]] = row["caption"]
            if not (_utf8(row["path"]) and _utf8(row["caption"])):
                bad.append(row["path"])
    return {k: v for k, v in out.items() if k not in set(bad)}, bad


def discover(root: str | Path, captions: str | Path | None = None) -> tuple[list[SourceItem], list[dict]]:
    """(captioned items sorted by key, skipped [{"path", "reason"}]). Sorted, so every rank agrees."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist")
    table, not_utf8 = None, set()
    if captions:
        rows, bad = _read_caption_file(Path(captions).expanduser())
        table = {Path(k).as_posix(): v for k, v in rows.items()}
        not_utf8 = {Path(k.encode("utf-8", "surrogateescape").decode("utf-8", "replace")).as_posix() for k in bad}
    items, skipped = [], []
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS + IMAGE_EXTS)
    for path in files:
        key = path.relative_to(root).as_posix()
        if table is not None:
            caption = table.get(key)
            if caption is None and key in not_utf8:
                skipped.append({"path": key, "reason": NOT_UTF8})
                continue
        else:
            side = path.with_suffix(".txt")
            try:
                caption = side.read_text(encoding="utf-8") if side.is_file() else None
            except UnicodeDecodeError:
                skipped.append({"path": key, "reason": NOT_UTF8})
                continue
        if caption is None or not caption.strip():
            skipped.append({"path": key, "reason": "no caption"})
            continue
        items.append(SourceItem(key, path, caption.strip()))
    if table is not None:
        found = {it.key for it in items} | {s["path"] for s in skipped}
        skipped += [{"path": k, "reason": "listed in the caption file but not found"} for k in sorted(set(table) - found)]
        skipped += [{"path": k, "reason": NOT_UTF8} for k in sorted(not_utf8 - found)]
    return items, skipped


def video_duration(path: Path) -> float | None:
    """Seconds of a video from its container header (no decoding); None if unknown or unreadable."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return container.duration / av.time_base if container.duration else None
    except Exception:  # an unreadable file is reported when its clip is loaded
        return None


def cut_clips(items: list[SourceItem], spec: ClipSpec, per_video: int, stride: float = 0.0) -> list[SourceItem]:
    """Up to `per_video` clips of each video, starting every `stride` seconds (0 = the clip's length: back
    to back), as many as fit in the video; the first keeps the file's key, so a set cut before with one
    clip per video resumes. Images stay one item."""
    if per_video <= 1:
        return items
    stride = stride or spec.frames / spec.fps
    span = (spec.frames - 1) / spec.fps  # first to last sampled frame
    out = []
    for item in items:
        duration = None if item.is_image else video_duration(item.path)
        count = 1 if duration is None else max(1, min(per_video, int((duration - span) // stride) + 1))
        for k in range(count):
            start = round(k * stride, 6)
            key = item.key if k == 0 else f"{item.key}@{start:g}s"
            out.append(SourceItem(key, item.path, item.caption, start))
    return out


def _decode_video(path: Path, spec: ClipSpec, start: float = 0.0) -> np.ndarray:
    """(F, H, W, 3) uint8 sampled at spec.fps by timestamp, from `start` seconds after the first frame."""
    import av

    try:
        container = av.open(str(path))
    except Exception as err:  # PyAV raises many error types for bad input
        raise ClipError(f"unreadable: {type(err).__name__}: {err}") from None
    with container:
        if not container.streams.video:
            raise ClipError("unreadable: no video stream")
        stream = container.streams.video[0]
        want = [start + k / spec.fps for k in range(spec.frames)]  # seconds after the first frame
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        picked: list[np.ndarray] = []
        start, last, last_t = None, None, 0.0
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else 0.0
                start = t if start is None else start
                t -= start
                # the latest frame at or before each wanted time is shown then
                while last is not None and len(picked) < spec.frames and want[len(picked)] < t - 1e-6:
                    picked.append(last)
                if len(picked) == spec.frames:
                    break
                last, last_t = frame.to_ndarray(format="rgb24"), t
        except Exception as err:
            raise ClipError(f"unreadable: {type(err).__name__}: {err}") from None
    if last is None:
        raise ClipError("unreadable: no decodable frames")
    # the final frame is shown for one source frame period
    end = last_t + (1.0 / rate if rate else 0.0)
    while len(picked) < spec.frames and want[len(picked)] < end - 1e-6:
        picked.append(last)
    if len(picked) < spec.frames:
        raise ClipError(f"too short: {end:.2f} s gives {len(picked)} of {spec.frames} frames at {spec.fps:g} fps"
                        + (f" from {start:g} s" if start else ""))
    return np.stack(picked)


def _decode_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))[None]
    except Exception as err:
        raise ClipError(f"unreadable: {type(err).__name__}: {err}") from None


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(F, H0, W0, 3) uint8 -> (3, F, height, width) float in [-1, 1]: cover, then centre-crop."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (F, 3, H0, W0)
    h0, w0 = video.shape[-2:]
    scale = max(height / h0, width / w0)
    h1, w1 = max(height, round(h0 * scale)), max(width, round(w0 * scale))
    if (h1, w1) != (h0, w0):
        video = F.interpolate(video, size=(h1, w1), mode="bilinear", antialias=True, align_corners=False)
    top, left = (h1 - height) // 2, (w1 - width) // 2
    video = video[..., top:top + height, left:left + width]
    return (video.clamp(0, 255) / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()


def load_clip(item: SourceItem, spec: ClipSpec, max_upscale: float = 0.0) -> torch.Tensor:
    """(3, F, H, W) in [-1, 1], or ClipError with the reason it was skipped. A source smaller than the
    clip is scaled up to cover it (then centre-cropped), unless that takes more than `max_upscale` x."""
    if item.is_image:
        if spec.frames != 1:
            raise ClipError(f"image, but this shard set holds {spec.frames}-frame clips")
        frames = _decode_image(item.path)
    else:
        frames = _decode_video(item.path, spec, item.start)
    h0, w0 = frames.shape[1:3]
    scale = max(spec.height / h0, spec.width / w0)
    if max_upscale and scale > max_upscale:
        raise ClipError(f"too small: {w0}x{h0} needs {scale:.2f}x upscaling to cover {spec.width}x{spec.height} "
                        f"(max_upscale {max_upscale:g})")
    return resize_center_crop(frames, spec.height, spec.width)
