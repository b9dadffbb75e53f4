"""What apt-generate writes, as it goes: each batch's clips as soon as they are decoded, a report
rewritten after every batch (it lists the finished clips, so a crash keeps them and says which), and
at the end a preview grid of the first clips (capped: a grid of hundreds of clips is no preview).

A folder output is claimed first: what an earlier apt-generate run wrote there (the files its report
lists) and a crash's half-written `.partial.mp4` files are removed, so two runs never mix their files;
anything else in the folder is left alone. Files are written atomically and never through a symlink.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from apt.core.files import write_atomically

GRID_CAP = 16  # clips in grid.png


def slug(text: str, limit: int = 60) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)[:limit].strip("_") or "clip"


def default_out(source: Path, mode: str, decoder: str) -> Path:
    """outputs/generate/<what was sampled>-<mode>-<decoder>: distinct for every source and decoder."""
    name = source.parent.parent.name if source.parent.name == "checkpoints" else source.name
    return Path("outputs/generate") / f"{slug(name, 40)}-{mode}-{decoder}"


class Outputs:
    def __init__(self, out: Path, grid: str, report: str, fps: int, upscale: int):
        self.out, self.fps, self.upscale = out, fps, upscale
        self.single = out.suffix == ".mp4"
        self.grid = Path(grid) if grid else (None if self.single else out / "grid.png")
        self.report = Path(report) if report else (None if self.single else out / "report.json")
        self.paths: list[str] = []
        self.preview: list[tuple] = []

    def claim(self) -> None:
        """Remove an earlier apt-generate run's files (listed by its report) and half-written clips."""
        if self.single or not self.out.is_dir():
            return
        for partial in self.out.glob("*.partial.mp4"):
            partial.unlink()
        if self.report is None or not self.report.is_file():
            return
        try:
            earlier = json.loads(self.report.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            earlier = {}
        for name in [*earlier.get("videos", []), earlier.get("grid") or ""]:
            path = self.out / Path(name).name  # what it wrote into this folder, whatever the folder was called
            if name and (path.is_file() or path.is_symlink()):
                path.unlink()

    def add(self, videos, prompts: list[str], start: int) -> None:
        """Write a batch's clips (their index in the whole request from `start`); keep the first few for the grid."""
        from apt.core.video import write_mp4

        for i, (prompt, video) in enumerate(zip(prompts, videos), start):
            path = self.out if self.single else self.out / f"{i:03d}_{slug(prompt)}.mp4"
            self.paths.append(str(write_mp4(video, path, fps=self.fps, upscale=self.upscale)))
            if len(self.preview) < GRID_CAP:
                self.preview.append((video, prompt))

    def write_report(self, report: dict) -> None:
        if self.report is not None:
            self.report.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.report, json.dumps({**report, "videos": self.paths,
                                                      "grid": str(self.grid) if self.grid else None}, indent=2))

    def write_grid(self) -> None:
        from apt.core.video import frame_grid

        if self.grid is None or not self.preview:
            return
        self.grid.parent.mkdir(parents=True, exist_ok=True)
        image = io.BytesIO()
        frame_grid([v for v, _ in self.preview], [p for _, p in self.preview], upscale=self.upscale).save(image, "PNG")
        write_atomically(self.grid, image.getvalue())


def write_videos(videos, prompts: list[str], out: Path, fps: int, upscale: int) -> list[str]:
    """One mp4 per clip into `out` (or `out` itself, an .mp4 path), nothing else (a benchmark's writes)."""
    outputs = Outputs(out, "", "", fps, upscale)
    outputs.add(videos, prompts, 0)
    return outputs.paths
