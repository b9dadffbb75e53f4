"""Check the package's wings against docs/architecture.md: every import (function-level ones included)
goes down the layers or stays in its wing, and no modules import each other in a circle.

    python scripts/check_architecture.py            # prints each wing's imports; exit 1 on a violation

Layers, bottom to top; a wing may import its own modules and those of wings below it:
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("apt", "discriminator", "distill")
LAYERS = [
    ("core", "config, commands, flow math, collectives, video I/O, sampling parameters, plugins"),
    ("models", "the one diffusers adapter (backbone), VAE, text encoder, fast decoder, generator, loading"),
    ("data", "shards, video folders, preprocessing, data sources"),
    ("training", "the trainer, launch, run folder, checkpoints, run log, previews, EMA, distributed, FLOPs"),
    ("rewards", "the reward interface, its registry, the clip kind"),
    ("discriminator", "stage 2's discriminator: backbone copy, token heads (top-level package)"),
    ("distill", "stage 1: consistency distillation (top-level package)"),
    ("adversarial", "stage 2: the step and its loss terms"),
    ("inference", "sampler, decoders, generation engine, export, serving bundle"),
    ("planning", "the memory/FLOPs planner and its measured check"),
    ("toy", "the embedded toy world, a plugin like any other"),
    ("cli", "the commands: options and dispatch"),
]
RANK = {wing: i for i, (wing, _) in enumerate(LAYERS)}
__doc__ += "\n".join(f"    {i + 1:2d}. {wing:<14}{what}" for i, (wing, what) in enumerate(LAYERS)) + "\n"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] in ("discriminator", "distill"):
        return parts[0]
    if parts[0] == "apt" and len(parts) > 1 and parts[1] in RANK:
        return parts[1]
    return None  # apt itself (its __init__)


def imports(path: Path, module: str) -> set[str]:
    """Project modules `module` imports anywhere in its file (`from x import y` counts x.y where that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {m: {i for i in imports(p, m) if i in files and i != m} for m, p in files.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def violations(edges: dict[str, set[str]]) -> list[str]:
    problems = [f"circle: {' <-> '.join(c)}" for c in circles(edges)]
    for module, targets in sorted(edges.items()):
        src = wing_of(module)
        for target in sorted(targets):
            dst = wing_of(target)
            if src is None or dst is None or src == dst:
                continue
            if RANK[dst] > RANK[src]:
                problems.append(f"upward import: {module} ({src}) imports {target} ({dst})")
    return problems


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    edges = graph()
    uses = defaultdict(set)
    for module, targets in edges.items():
        for target in targets:
            if wing_of(module) and wing_of(target) and wing_of(module) != wing_of(target):
                uses[wing_of(module)].add(wing_of(target))
    for wing, _ in LAYERS:
        below = ", ".join(sorted(uses[wing], key=RANK.get)) or "-"
        print(f"{RANK[wing] + 1:2d}. {wing:<14} imports {below}")
    problems = violations(edges)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports: "
          + ("no circles, no upward imports" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
