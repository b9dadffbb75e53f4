"""The README and the user guide (docs/*.md; the dated logs in docs/experiments/ are frozen): the two
commands, every path a command names, every link, the serving snippet run as written."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


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


# -- every README and user-guide flow runs as written ----------------------------------------------------

QUICKSTART_WRITES = {"outputs/quickstart", "outputs/quickstart/cd", "outputs/quickstart/apt",
                     "outputs/quickstart/reward"}
WRITTEN = re.compile(r"(?:outputs|runs|exports)/[\w.-]+(?:/[\w.-]+)?")
IN_REPO = re.compile(r"\b(?:configs|scripts|docs)/[\w./-]*[\w-]")


def _code_blocks(lang: str | None = None, page: Path = ROOT / "README.md") -> list[str]:
    blocks = re.findall(r"```(\w*)\n(.*?)```", page.read_text(), flags=re.S)
    return [body for kind, body in blocks if lang is None or kind == lang]


def _config_out_dirs() -> set[str]:
    from omegaconf import OmegaConf

    dirs = set()
    for path in (ROOT / "configs").rglob("*.yaml"):
        out = OmegaConf.select(OmegaConf.load(path), "train.out_dir")
        if out:
            dirs.add(out)
    return dirs


def test_commands_name_files_that_exist_or_that_an_earlier_step_writes():
    """A path a command of the README or a guide page reads is in the repository, or written by the
    quickstart, by a shipped config (its train.out_dir) or by an earlier command of the same page
    (--out, train.out_dir=)."""
    missing = []
    for page in GUIDE:
        written = QUICKSTART_WRITES | _config_out_dirs()
        for block in _code_blocks(page=page):
            if "import " in block or block.lstrip().startswith(("[", "|", "12 ", "apt/cli/", "AdversarialPost")):
                continue  # python (test_serving_snippet_runs_on_an_export), ini and diagrams
            for line in block.splitlines():
                for path in IN_REPO.findall(line):
                    if not (ROOT / path).exists():
                        missing.append(f"{page.name}: {path} (in: {line.strip()})")
                outs = set(re.findall(r"(?:--out|train\.out_dir=)\s*(\S+)", line))
                for path in WRITTEN.findall(line):
                    if path not in written and path not in outs:
                        missing.append(f"{page.name}: {path} (in: {line.strip()})")
                written |= outs
    assert not missing, "commands name paths nothing creates:\n" + "\n".join(missing)


def test_links_of_the_guide_resolve():
    broken = []
    for page in [*GUIDE, *sorted((ROOT / "docs" / "experiments").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith("http") and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_configs_start_from_runs_that_another_config_writes():
    from omegaconf import OmegaConf

    written = _config_out_dirs() | {"teacher", ""}
    for path in (ROOT / "configs").rglob("*.yaml"):
        cfg = OmegaConf.load(path)
        for key in ("adv.generator_init", "adv.discriminator_init"):
            value = OmegaConf.select(cfg, key)
            assert value is None or value in written, f"{path}: {key}={value} is no config's train.out_dir"


def test_serving_snippet_runs_on_an_export(tmp_path):
    """docs/serving.md's WanPipeline block, verbatim, in a folder holding exports/toy-apt."""
    import subprocess
    import sys

    from tiny import write_tiny_run

    from apt.core.video import read_mp4
    from apt.inference.export import export_checkpoint
    from apt.models.model_folder import resolve_model_dir

    [snippet] = [b for b in _code_blocks("python", ROOT / "docs" / "serving.md") if "WanPipeline" in b]
    run = tmp_path / "run"
    write_tiny_run(run, resolve_model_dir("toy"))  # a checkpoint of the toy's shape
    export_checkpoint(run, tmp_path / "exports" / "toy-apt")
    out = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Warning" not in out.stderr, out.stderr[-3000:]  # nothing known to be harmless reaches the user
    assert read_mp4(tmp_path / "red-seven.mp4").shape == (9, 128, 128, 3)  # 9 frames of 32x32, upscaled 4x


def test_the_configuration_reference_is_current():
    """docs/configuration.md is what scripts/config_reference.py writes from the config dataclasses, and
    every key there says what it does."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    undocumented = [line for line in (ROOT / "docs" / "configuration.md").read_text().splitlines()
                    if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert not undocumented, undocumented
