"""Loss curves of training runs from their metrics.jsonl (apt/run_log.py), as one PNG."""

from __future__ import annotations

from pathlib import Path

from apt.run_folder import read_metrics

# What each stage logs: CD runs 'loss'; APT runs the adversarial quantities and its diagnostics
# (margin and AUCs show what D ranks, which D(real), D(fake) and the accuracy at 0 hide) and the optional
# G-side terms it has on; reward runs 'reward'.
CURVES = ("loss", "d_loss", "g_loss", "d_margin", "d_auc", "caption_auc", "d_real", "d_fake", "aR1",
          "feature_matching", "distill", "reward")


def plot_losses(run_dirs: dict[str, Path], out_png: str | Path, curves: tuple[str, ...] = CURVES) -> Path:
    """One panel per logged quantity (of `curves`) against step, one line per run that logs it."""
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede pyplot
    import matplotlib.pyplot as plt

    series = {}  # quantity -> {run name: (steps, values)}
    for name, run_dir in run_dirs.items():
        records = read_metrics(run_dir)
        if not records:
            raise FileNotFoundError(f"run {name!r}: no metrics.jsonl records in {run_dir}")
        for key in curves:
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None and "step" in r]
            if points:
                series.setdefault(key, {})[name] = tuple(zip(*points))
    if not series:
        raise ValueError(f"none of {', '.join(curves)} is logged by runs {', '.join(run_dirs)}")
    cols = min(3, len(series))
    rows = -(-len(series) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, (key, runs) in zip(axes.flat, series.items()):
        for name, (steps, values) in runs.items():  # a run keeps its colour in every panel
            ax.plot(steps, values, label=name, linewidth=1, color=f"C{list(run_dirs).index(name) % 10}")
        ax.set_title(key)
        ax.set_xlabel("step")
        if key == "loss":
            ax.set_yscale("log")  # the CD loss falls by orders of magnitude
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
