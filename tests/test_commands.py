"""First contact with every command: --help parses without the heavy imports (torch, diffusers),
every option says what it does, and a user error is one line with exit status 2."""

import configparser
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("*.py"))


def _console_scripts() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines() if line.strip()]
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def _help_without_heavy_imports(call: str) -> tuple[str, list[str]]:
    """(the help text, options with no help line) of a command's --help, run in a fresh interpreter
    that must not have imported torch, diffusers or transformers by the time the help is printed."""
    code = f"""
import argparse, contextlib, io, json, sys
undocumented = []
format_help = argparse.ArgumentParser.format_help
def recording(parser):
    undocumented.extend(a.option_strings[-1] for a in parser._actions if a.option_strings and not a.help)
    return format_help(parser)
argparse.ArgumentParser.format_help = recording
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    try:
        {call}
    except SystemExit as e:
        assert e.code in (0, None), e.code
heavy = [m for m in ("torch", "diffusers", "transformers") if m in sys.modules]
assert not heavy, heavy
print(json.dumps([buf.getvalue(), undocumented]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    text, undocumented = json.loads(out.stdout.strip().splitlines()[-1])
    return text, undocumented


@pytest.mark.parametrize("name", sorted(_console_scripts()))
def test_console_script_help_needs_no_torch_and_documents_every_option(name):
    module, func = _console_scripts()[name].split(":")
    text, undocumented = _help_without_heavy_imports(f"import {module} as m; m.main(['--help'])")
    assert text.startswith(f"usage: {name}") and not undocumented, undocumented


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_help_needs_no_torch_and_documents_every_option(script):
    text, undocumented = _help_without_heavy_imports(f"import runpy; sys.argv = [{str(script)!r}, '--help']; "
                                                     f"runpy.run_path({str(script)!r}, run_name='__main__')")
    assert text.startswith("usage:") and not undocumented, undocumented


@pytest.mark.parametrize("script, args, message", [
    ("train_distill.py", ["train.stepz=3"], "train.stepz: Key 'stepz' not in 'TrainConfig'"),
    ("train_apt.py", ["--config", "configs/toy/apt.yaml", "adv.lr_generator=-1"], "adv.lr_generator must be positive"),
    ("generate.py", ["--prompt", "a", "--frames", "-1"], "frames must be positive"),
    ("export.py", ["--checkpoint", "no/such/run", "--out", "x"], "checkpoint no/such/run does not exist"),
])
def test_a_user_error_is_one_line_and_exit_status_2(script, args, message, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith(f"error: {message}") and out.stderr.count("\n") == 1, out.stderr
