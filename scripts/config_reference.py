"""Write docs/configuration.md: every option of every command, from the config dataclasses themselves
(a field's `option(help=...)`, or the comments on and above its line).

    python scripts/config_reference.py          # rewrite docs/configuration.md
    python scripts/config_reference.py --check  # exit 1 when the file is stale (tests/test_docs.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "configuration.md"


def field_comments(cls) -> dict[str, str]:
    """{field: its comment}: the comment lines right above the field and the one at the end of its line."""
    lines, _ = inspect.getsourcelines(cls)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO("".join(lines)).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0] - 1] = tok.string.lstrip("#").strip()
    found = {}
    for i, line in enumerate(lines):
        name = line.strip().split(":", 1)[0]
        if not (line.startswith("    ") and not line.startswith("     ") and name.isidentifier() and ":" in line):
            continue
        above, j = [], i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            above.insert(0, comments[j])
            j -= 1
        trailing = [comments[i]] if i in comments and not line.strip().startswith("#") else []
        found[name] = " ".join(above + trailing)
    return found


def _type_name(hint) -> str:
    if typing.get_origin(hint) is list:
        return f"list[{_type_name(typing.get_args(hint)[0])}]"
    if typing.get_origin(hint) is dict:
        return "dict"
    return getattr(hint, "__name__", str(hint))


def _default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return value if not dataclasses.is_dataclass(value) else None
    return None if f.default is dataclasses.MISSING else f.default


def _shown(value) -> str:
    text = repr(value)
    return "`" + (text if len(text) <= 60 else text[:57] + "...") + "`"


def rows(cls, prefix: str = "") -> list[str]:
    """Markdown table rows of cls's fields; nested dataclass sections recurse with their key as prefix."""
    hints, comments, out = typing.get_type_hints(cls), field_comments(cls), []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            continue
        doc = f.metadata.get("help") or comments.get(f.name, "")
        if typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            item = typing.get_args(hint)[0]
            out.append(f"| `{prefix}{f.name}` | list of entries, each below | `[]` | {doc} |")
            out += rows(item, f"{prefix}{f.name}[i].")
            continue
        flag = f.metadata.get("flag")
        key = f"`{prefix}{f.name}`" + (f" (`{flag}`)" if flag else "")
        out.append(f"| {key} | {_type_name(hint)} | {_shown(_default(f))} | {doc.replace('|', '/')} |")
    return out


def sections(cls) -> list[tuple[str, type]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])]


HEADER = """# Configuration reference

Every option of every command, generated from the config dataclasses by `python
scripts/config_reference.py` (a test fails when this file is stale). Training commands take
`--config YAML` (a file may name others in `base:`, merged first: configs/base/) and dotted
`key=value` overrides; the other commands take the same keys as `--flags` too. `--print-config`
prints what a command would run with. A misspelt key or an impossible value stops the command at
start-up with the key named.

"""


def render() -> str:
    from apt.adversarial.config import APTConfig
    from apt.cli.estimate import EstimateConfig
    from apt.cli.export import ExportConfig
    from apt.cli.generate import GenerateConfig
    from apt.cli.preprocess import PreprocessConfig
    from apt.cli.quickstart import QuickstartConfig
    from apt.cli.train_decoder import TrainDecoderConfig
    from apt.toy.evaluate import EvaluateConfig
    from distill.config import DistillConfig

    parts = [HEADER]
    table = "| key | type | default | what it does |\n|---|---|---|---|\n"
    parts.append("## Training runs: `apt-distill` (stage 1) and `apt-train` (stage 2, reward feedback)\n\n"
                 "Both take the sections below; stage 1 adds `cd`, stage 2 `adv`. Source: apt/training/config.py, "
                 "distill/config.py, apt/adversarial/config.py, apt/rewards/config.py.\n")
    seen = set()
    for schema in (DistillConfig, APTConfig):
        for name, section in sections(schema):
            if name in seen:
                continue
            seen.add(name)
            which = {"cd": " (apt-distill)", "adv": " (apt-train)"}.get(name, "")
            parts.append(f"\n### `{name}`{which}\n\n" + table + "\n".join(rows(section, f"{name}.")) + "\n")
    commands = [("apt-generate", GenerateConfig), ("apt-export", ExportConfig), ("apt-evaluate", EvaluateConfig),
                ("apt-preprocess", PreprocessConfig), ("apt-estimate", EstimateConfig),
                ("apt-train-decoder", TrainDecoderConfig), ("apt-quickstart", QuickstartConfig)]
    parts.append("\n## The other commands\n\nEach key is also a flag (`--key-name`, underscores as dashes).\n")
    for command, schema in commands:
        parts.append(f"\n### `{command}`\n\n" + table + "\n".join(rows(schema)) + "\n")
    return "".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"error: {OUT.relative_to(ROOT)} is stale: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
