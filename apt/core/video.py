"""Writing clips: H.264 mp4 through PyAV, and frame-grid PNGs for reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from apt.core.files import open_fresh


def to_uint8_frames(video: torch.Tensor | np.ndarray, upscale: int = 1) -> np.ndarray:
    """(3, F, H, W) tensor in [-1, 1], or diffusers' frames (F, H, W, 3) array in [0, 1] (a pipeline's
    output_type="np"), -> (F, H*upscale, W*upscale, 3) uint8."""
    if isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"expected frames (F, H, W, 3), got shape {video.shape}")
        video = rearrange(torch.from_numpy(np.ascontiguousarray(video)), "f h w c -> c f h w") * 2 - 1
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video (3, F, H, W), got shape {tuple(video.shape)}")
    frames = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    frames = rearrange(frames, "c f h w -> f h w c")
    if upscale > 1:
        frames = frames.repeat_interleave(upscale, 1).repeat_interleave(upscale, 2)
    return frames.cpu().numpy()


def write_mp4(video: torch.Tensor | np.ndarray, path: str | Path, fps: int = 24, crf: int = 18,
              upscale: int = 1) -> Path:
    """Encode with libx264 (yuv420p, so sides are padded to even sizes). `video` as to_uint8_frames takes it."""
    import av

    frames = to_uint8_frames(video, upscale)
    _, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.mp4")  # a crash never leaves a half-written file at `path`
    with open_fresh(tmp) as file, av.open(file, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


def read_mp4(path: str | Path) -> np.ndarray:
    """All frames of a video file as (F, H, W, 3) uint8."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def frame_grid(rows: list[torch.Tensor], labels: list[str] | None = None, upscale: int = 4, gap: int = 2,
               label_width: int = 0):
    """One row per clip (all frames left to right), optional text label left of each row. Returns a PIL image."""
    from PIL import Image, ImageDraw

    strips = [to_uint8_frames(v, upscale) for v in rows]
    f, h, w, _ = strips[0].shape
    if labels and not label_width:
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        label_width = int(max(measure.textlength(s) for s in labels)) + 10
    grid = Image.new("RGB", (label_width + f * (w + gap), len(strips) * (h + gap)), (40, 40, 40))
    draw = ImageDraw.Draw(grid)
    for r, strip in enumerate(strips):
        if strip.shape[1:] != (h, w, 3):
            raise ValueError("all clips in a grid need the same frame size")
        y = r * (h + gap)
        for c, frame in enumerate(strip):
            grid.paste(Image.fromarray(frame), (label_width + c * (w + gap), y))
        if labels:
            draw.text((4, y + h // 2 - 6), labels[r], fill=(235, 235, 235))
    return grid


def tiled_gif(videos: list[torch.Tensor], upscale: int = 1, fps: int = 8, gap: int = 2) -> bytes:
    """Clips side by side, playing together, as one looping animated GIF (TensorBoard plays GIFs)."""
    import io

    from PIL import Image

    strips = [to_uint8_frames(v, upscale) for v in videos]
    f, h, w, _ = strips[0].shape
    sheets = []
    for i in range(f):
        sheet = Image.new("RGB", (len(strips) * (w + gap) - gap, h), (40, 40, 40))
        for c, strip in enumerate(strips):
            sheet.paste(Image.fromarray(strip[i]), (c * (w + gap), 0))
        sheets.append(sheet)
    buf = io.BytesIO()
    sheets[0].save(buf, format="GIF", save_all=True, append_images=sheets[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()
