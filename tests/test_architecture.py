"""The package's shape (docs/architecture.md): wings in layers, imports only downwards, no circles, no
module over 300 lines, the toy named only by the commands, and stage 2's step under 250 lines."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_architecture.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_architecture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_command_finds_no_circle_and_no_upward_import():
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no circles, no upward imports" in run.stdout


def test_the_checker_catches_circles_and_upward_imports():
    check = _checker()
    edges = {"apt.core.a": {"apt.training.b"}, "apt.training.b": {"apt.core.a"}, "apt.models.c": set(),
             "apt.inference.d": {"apt.models.c"}}
    problems = check.violations(edges)
    assert "circle: apt.core.a <-> apt.training.b" in problems
    assert any(p.startswith("upward import: apt.core.a (core) imports apt.training.b") for p in problems)
    assert not any("apt.inference.d" in p for p in problems)  # downwards is fine


def test_only_the_commands_import_the_toy():
    check = _checker()
    importers = {m for m, targets in check.graph().items() for t in targets if t.startswith("apt.toy")}
    assert {check.wing_of(m) for m in importers} <= {"toy", "cli"}, sorted(importers)


def test_modules_stay_small():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for pkg in ("apt", "distill", "discriminator") for p in (ROOT / pkg).rglob("*.py")}
    assert max(sizes.values()) <= 300, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    assert sizes["apt/adversarial/stage.py"] <= 250
