"""Loss curves of training runs from their metrics.jsonl (apt/training/run_log.py), as one PNG."""

from __future__ import annotations

from pathlib import Path

from apt.training.run_folder import read_metrics

# What each stage logs: CD runs 'loss'; APT runs the adversarial quantities and its diagnostics
# (margin and AUCs show what D ranks, which D(real), D(fake) and the accuracy at 0 hide) and the optional
# G-side terms it has on; reward runs 'reward'.
CURVES = ("loss", "d_loss", "g_loss", "d_margin", "d_auc", "caption_auc", "d_real", "d_fake", "aR1",
          "feature_matching", "distill", "reward")


def plot_losses(run_dirs: dict[str, Path], out_png: str | Path, curves: tuple[str, ...] = CURVES) -> Path:
    """One panel per logged quantity (of `curves`) against step, one line per run that logs it."""
    plt = _pyplot()
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
    return _save(fig, out_png, dpi=100)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_png: str | Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png


def read_evaluation_point(metrics_json: str | Path, model: str = "") -> dict:
    """One model's row of an apt-evaluate metrics.json; without `model`, the file's only generated model
    (the reference rows, real data and its VAE round trip, are never picked on their own)."""
    import json

    from apt.core.config import ConfigError

    path = Path(metrics_json)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such metrics.json (apt-evaluate --out writes one)")
    models = json.loads(path.read_text())["models"]
    if not model:
        generated = [m for m in models if not m.startswith("real data")]
        if len(generated) != 1:
            raise ConfigError(f"{path} holds {', '.join(models)}: name one as PATH:MODEL")
        model = generated[0]
    if model not in models:
        raise ConfigError(f"{path} has no model {model!r}; it holds {', '.join(models)}")
    return models[model]


def plot_evaluations(points: list[tuple[str, str, dict]], x: str, ys: tuple[str, ...], out_png: str | Path) -> Path:
    """One panel per column of `ys` against column `x`: a dot per (group, label, metrics row), one colour
    per group, each dot labelled: where runs sit on a trade-off is easier seen than read off tables."""
    from apt.core.config import ConfigError

    plt = _pyplot()
    for column in (x, *ys):
        missing = [f"{group}/{label}" for group, label, row in points if not isinstance(row.get(column), (int, float))]
        if missing:
            raise ConfigError(f"column {column!r} is not a number in {', '.join(missing)}")
    groups = list(dict.fromkeys(group for group, _, _ in points))
    fig, axes = plt.subplots(1, len(ys), figsize=(5.5 * len(ys), 4.5), squeeze=False)
    for ax, y in zip(axes.flat, ys):
        for group in groups:
            mine = [(label, row) for g, label, row in points if g == group]
            colour = f"C{groups.index(group) % 10}"
            ax.scatter([row[x] for _, row in mine], [row[y] for _, row in mine], color=colour, label=group, s=22)
            for label, row in mine:
                ax.annotate(label, (row[x], row[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    return _save(fig, out_png, dpi=110)
