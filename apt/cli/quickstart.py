"""The whole method on the toy world, on a CPU: stage 1 (consistency distillation) -> stage 2
(adversarial post-training) -> evaluation against the 25-step teacher.

    python scripts/quickstart.py                      # everything into outputs/quickstart/
    python scripts/quickstart.py --nproc 1 --out outputs/qs --apt train.steps=50

Each training stage runs as its own torchrun job (FSDP2 over --nproc ranks, gloo on CPU) with the
configs in configs/toy/, so what the quickstart does is exactly what the README's stage commands
do. Running it again resumes: a finished stage is only reloaded, an interrupted one continues
from its last checkpoint. Writes, under --out: cd/ and apt/ (run folders: metrics.jsonl, sample
mp4s, checkpoints), table.md and metrics.json (the results table), grid.png (frames, one row per
model and prompt), losses.png (training curves) and timings.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def launcher(nproc: int) -> list[str]:
    """torchrun for several ranks; a plain interpreter (a world of one) otherwise."""
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return [sys.executable]


def repo_file(relative: str) -> Path:
    path = REPO / relative
    if not path.exists():
        raise SystemExit(f"error: {path} not found: run the quickstart from a clone of the repository "
                         f"(pip install -e . keeps the package pointing at it)")
    return path


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def run_stage(title: str, cmd: list[str], timings: dict) -> None:
    banner(title)
    print(" ".join(str(c) for c in cmd), flush=True)
    start = time.perf_counter()
    # the stage's own progress bar and messages go straight to this terminal
    result = subprocess.run([str(c) for c in cmd], env=dict(os.environ, PYTHONUNBUFFERED="1"))
    timings[title] = round(time.perf_counter() - start, 1)
    if result.returncode != 0:
        raise SystemExit(f"error: {title} failed (exit {result.returncode}); fix the cause and run the same "
                         f"command again: finished work is kept and the stage resumes from its last checkpoint")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/quickstart"))
    p.add_argument("--nproc", type=int, default=min(2, os.cpu_count() or 1), help="ranks per training stage")
    p.add_argument("--cd", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for configs/toy/distill.yaml")
    p.add_argument("--apt", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for configs/toy/apt.yaml")
    p.add_argument("--n", type=int, default=96, help="evaluation prompts (held-out combinations)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed")
    args = p.parse_args(argv)
    if args.nproc < 1:
        raise SystemExit("error: --nproc must be at least 1")

    from apt.cli import evaluate
    from apt.plots import plot_losses

    out = args.out
    cd_dir, apt_dir = out / "cd", out / "apt"
    timings: dict[str, float] = {}
    total_start = time.perf_counter()
    run_stage("1/3 stage 1: consistency distillation", launcher(args.nproc) + [
        repo_file("scripts/distill.py"), "--config", repo_file("configs/toy/distill.yaml"),
        f"train.out_dir={cd_dir}", *args.cd], timings)
    run_stage("2/3 stage 2: adversarial post-training", launcher(args.nproc) + [
        repo_file("scripts/train_apt.py"), "--config", repo_file("configs/toy/apt.yaml"),
        f"adv.generator_init={cd_dir}", f"train.out_dir={apt_dir}", *args.apt], timings)

    banner("3/3 evaluation: teacher 25-step vs CD and APT one-step (and APT 2-step)")
    start = time.perf_counter()
    report = evaluate.main(["--run", f"CD={cd_dir}", "--run", f"APT={apt_dir}", "--two-step", "APT",
                            "--n", str(args.n), "--seed", str(args.seed), "--out", str(out)])
    plot_losses({"CD": cd_dir, "APT": apt_dir}, out / "losses.png")
    timings["3/3 evaluation"] = round(time.perf_counter() - start, 1)
    timings["total"] = round(time.perf_counter() - total_start, 1)
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")

    banner("done")
    for name, seconds in timings.items():
        print(f"  {name:<45} {seconds:8.1f} s")
    print(f"\nresults: {out / 'table.md'}  frames: {out / 'grid.png'}  curves: {out / 'losses.png'}")
    print(f"samples during training: {cd_dir / 'samples'}  {apt_dir / 'samples'}")
    return {"timings": timings, **report}


if __name__ == "__main__":
    main()
