"""Rank-0 run log: metrics.jsonl (one JSON object per logged step, flushed at every write, so a crash
loses nothing already logged), TensorBoard scalars and preview images when the tensorboard package
is installed, and messages through Python logging without breaking the progress bar."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from tqdm import tqdm

from apt.core.files import append_text, write_atomically
from apt.training.run_folder import METRICS, TENSORBOARD, parse_metrics

logger = logging.getLogger("apt")


class _TqdmHandler(logging.Handler):
    def emit(self, record):
        tqdm.write(self.format(record))  # prints above a running tqdm bar instead of through it


def setup_logging(rank: int = 0) -> None:
    """Rank 0 logs INFO and above to the terminal; other ranks only errors (each rank would repeat it)."""
    if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if rank == 0 else logging.ERROR)


def _tensorboard_writer(out_dir: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the tensorboard package is an extra: pip install -e ".[tensorboard]"
        return None
    return SummaryWriter(str(out_dir / TENSORBOARD), purge_step=purge_step)


class RunLog:
    """resume_step=None starts a fresh file; an int keeps the lines up to that step (resume)."""

    def __init__(self, out_dir: str | Path, rank: int = 0, resume_step: int | None = None,
                 tensorboard: bool = False):
        self.rank = rank
        self.path = Path(out_dir) / METRICS
        self.tb = None
        if rank != 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # drop what was logged after the checkpoint we resume from (those steps run again) and
            # a line cut short by a crash; replace the file in one rename
            kept = [r for r in parse_metrics(self.path.read_text()) if r.get("step", 0) <= resume_step]
            write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif resume_step is None:
            # a fresh run in a used folder: nothing of the earlier run may mix into its curves
            self.path.unlink(missing_ok=True)
            for old in (self.path.parent / TENSORBOARD).glob("events.out.tfevents.*"):
                old.unlink()
        if tensorboard:
            # purge_step drops events past the resumed step, as metrics.jsonl does
            self.tb = _tensorboard_writer(self.path.parent, None if resume_step is None else resume_step + 1)

    def write(self, record: dict) -> None:
        if self.rank != 0:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        append_text(self.path, json.dumps(clean) + "\n")
        if self.tb is not None and "step" in record:
            for key, value in clean.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    self.tb.add_scalar(key, value, record["step"])
            self.tb.flush()

    def video(self, tag: str, gif_path: str | Path, step: int) -> None:
        """A preview (an animated GIF, apt/core/video.py) in TensorBoard's image tab, where it plays."""
        if self.rank != 0 or self.tb is None:
            return
        from PIL import Image
        from torch.utils.tensorboard.summary import Summary

        gif = Path(gif_path).read_bytes()
        with Image.open(gif_path) as im:
            width, height = im.size
        # what SummaryWriter.add_video writes, without its moviepy dependency: a GIF image summary
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
        self.tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self.tb.flush()

    def message(self, text: str) -> None:
        if self.rank == 0:
            logger.info(text)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
