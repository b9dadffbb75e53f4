"""Plot apt-evaluate results against each other: a dot per model, one panel per --y column against --x.

    python scripts/plot_evaluations.py --x edge_sharpness_ratio --y frechet_distance \
        --y same_digit_all_frames --out tradeoff.png \
        "default/seed 0=outputs/eval_a/metrics.json" "CD/CD=outputs/eval_b/metrics.json:CD 1-step"

Each point is GROUP/LABEL=METRICS_JSON[:MODEL]: a group gets one colour and a legend entry, the label
is written beside the dot; MODEL is a model name of that metrics.json (needed when it holds several).
Columns are metrics.json's fields: all, digit, frechet_distance, same_digit_all_frames,
edge_sharpness_ratio, edge_steepness_ratio, sharpness_ratio, ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_point(text: str) -> tuple[str, str, str, str]:
    name, sep, where = text.partition("=")
    group, slash, label = name.partition("/")
    if not (sep and slash and group and label and where):
        from apt.core.config import ConfigError

        raise ConfigError(f"{text!r}: expected GROUP/LABEL=METRICS_JSON[:MODEL]")
    path, colon, model = where.partition(".json:")
    return group, label, path + ".json" if colon else where, model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("points", nargs="+", help="GROUP/LABEL=METRICS_JSON[:MODEL]")
    parser.add_argument("--x", required=True, help="the column on the horizontal axis")
    parser.add_argument("--y", action="append", required=True, help="a column on a vertical axis (repeat)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    from apt.core.command import run_command
    from apt.training.plots import plot_evaluations, read_evaluation_point

    def plot():
        points = []
        for text in args.points:
            group, label, path, model = parse_point(text)
            points.append((group, label, read_evaluation_point(path, model)))
        return plot_evaluations(points, args.x, tuple(args.y), args.out)

    print(run_command(plot))  # a bad point, column or path: one line, exit status 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
