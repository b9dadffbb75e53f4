import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    return re.findall(r"```(?:bash|sh)\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command_verbatim():
    test_cmds = [c.strip() for c in _readme_commands() if "pytest" in c]
    assert test_cmds, "README has no test command"
    assert test_cmds[0] in (ROOT / ".ci" / "run").read_text()


def test_readme_setup_is_two_commands_both_installing_cpu_torch_first():
    quick = [c.strip() for c in _readme_commands()[:2]]
    assert len(quick) == 2
    for cmd in quick:
        assert cmd.startswith("pip install torch==2.13.0 && pip install -e ")
