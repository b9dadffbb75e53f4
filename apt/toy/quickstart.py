"""The quickstart's run: the whole method on the toy world as the README's commands run it, each training
phase its own torchrun job with the configs in configs/toy/, then the evaluation and the report
(the command and its options: apt/cli/quickstart.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from apt.core.config import ConfigError
from apt.toy.evaluate import EvaluateConfig, evaluate

REPO = Path(__file__).resolve().parents[2]


def launcher(nproc: int) -> list[str]:
    """torchrun for several ranks; a plain interpreter (a world of one) otherwise."""
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return [sys.executable]


def repo_file(relative: str) -> Path:
    path = REPO / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the quickstart from a clone of the repository "
                                f"(pip install -e . keeps the package pointing at it)")
    return path


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


STAGE_ENV = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # one thread per rank, whatever the caller's env


def forward_output(cmd: list[str]) -> tuple[int, str | None]:
    """Run a stage with its output going straight to this terminal (progress bars included), except
    what follows a rank's one-line user error ("error: ..."): torchrun's failure report, which would
    bury it. Returns the exit status and that line, if any."""
    proc = subprocess.Popen([str(c) for c in cmd], env=dict(os.environ, **STAGE_ENV),
                            stderr=subprocess.PIPE)
    error, pending = None, b""
    for chunk in iter(lambda: proc.stderr.read1(65536), b""):
        if error is not None:
            continue  # held back
        pending += chunk
        cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1  # progress bars end in \r
        ready, pending = pending[:cut], pending[cut:]
        found = re.search(rb"(?:^|[\r\n])(error: [^\r\n]*)", ready)
        if found:
            error, ready = found.group(1).decode(errors="replace").strip(), ready[: found.start(1)]
        sys.stderr.buffer.write(ready)
        sys.stderr.flush()
    if error is None and pending:
        sys.stderr.buffer.write(pending)
    return proc.wait(), error


def run_stage(title: str, cmd: list[str], timings: dict) -> None:
    banner(title)
    print(" ".join(str(c) for c in cmd), flush=True)
    start = time.perf_counter()
    status, error = forward_output(cmd)
    timings[title] = round(time.perf_counter() - start, 1)
    if error is not None:  # the stage's own message, once
        raise ConfigError(f"{title}: {error.removeprefix('error: ')}")
    if status != 0:
        raise SystemExit(f"error: {title} failed (exit {status}); fix the cause and run the same "
                         f"command again: finished work is kept and the stage resumes from its last checkpoint")


def stages(args, runs: dict[str, Path]) -> list[tuple[str, str, type, Path, Path, list[str]]]:
    """(title, the flag of its overrides, config schema, script, config file, overrides) of each training phase."""
    from apt.adversarial.config import APTConfig
    from distill.config import DistillConfig

    cd_dir, apt_dir, reward_dir = runs.values()
    return [
        ("1/4 stage 1: consistency distillation", "--cd", DistillConfig, repo_file("scripts/train_distill.py"),
         repo_file("configs/toy/distill.yaml"), [f"train.out_dir={cd_dir}", *args.cd]),
        ("2/4 stage 2: adversarial post-training", "--apt", APTConfig, repo_file("scripts/train_apt.py"),
         repo_file("configs/toy/apt.yaml"), [f"adv.generator_init={cd_dir}", f"train.out_dir={apt_dir}", *args.apt]),
        ("3/4 reward feedback on the one-step generator", "--reward", APTConfig, repo_file("scripts/train_apt.py"),
         repo_file("configs/toy/reward.yaml"), [f"adv.generator_init={apt_dir}", f"adv.discriminator_init={apt_dir}",
                                                f"train.out_dir={reward_dir}", *args.reward]),
    ]


def quickstart(args) -> dict:
    """Run the phases of `args` (apt.cli.quickstart.QuickstartConfig) and evaluate; returns timings and the report."""
    from apt.core.config import load_config
    from apt.training.plots import plot_losses

    out = Path(args.out)
    runs = {"CD": out / "cd", "APT": out / "apt", "APT+reward": out / "reward"}  # the table's names
    phases = stages(args, runs)
    for _, flag, schema, _, config, overrides in phases:  # a typo in --reward fails now, not 10 minutes later
        try:
            load_config(schema, config, overrides)
        except ConfigError as err:
            raise ConfigError(f"{flag}: {err}") from None
    timings: dict[str, float] = {}
    total_start = time.perf_counter()
    for title, _, _, script, config, overrides in phases:
        run_stage(title, launcher(args.nproc) + [script, "--config", config, *overrides], timings)

    banner("4/4 evaluation: teacher 25-step vs CD, APT and APT+reward one-step (and APT 2-step)")
    start = time.perf_counter()
    report = evaluate(EvaluateConfig(runs=[f"{name}={path}" for name, path in runs.items()], two_step=["APT"],
                                     n=args.n, seed=args.seed, out=str(out), threads=args.threads))
    plot_losses(runs, out / "losses.png")
    timings["4/4 evaluation"] = round(time.perf_counter() - start, 1)
    timings["total"] = round(time.perf_counter() - total_start, 1)
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")

    banner("done")
    for name, seconds in timings.items():
        print(f"  {name:<45} {seconds:8.1f} s")
    print(f"\nresults: {out / 'table.md'}  frames: {out / 'grid.png'}  curves: {out / 'losses.png'}")
    print(f"samples during training: {'  '.join(str(path / 'samples') for path in runs.values())}")
    return {"timings": timings, **report}
