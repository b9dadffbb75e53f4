"""The whole method on the toy world, on a CPU: stage 1 (consistency distillation) -> stage 2
(adversarial post-training) -> reward feedback on the one-step generator -> evaluation against the
25-step teacher.

    apt-quickstart                                    # everything into outputs/quickstart/
    apt-quickstart --nproc 1 --out outputs/qs --apt train.steps=50

Each training stage runs as its own torchrun job (FSDP2 over --nproc ranks, gloo on CPU) with the
configs in configs/toy/, so what the quickstart does is exactly what the README's stage commands
do. Running it again resumes: a finished stage is only reloaded, an interrupted one continues
from its last checkpoint. Writes, under --out: cd/, apt/ and reward/ (run folders: metrics.jsonl,
sample mp4s, checkpoints), table.md and metrics.json (the results table), grid.png (frames, one row
per model and prompt), losses.png (training curves) and timings.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from apt.core.command import console_script, run_command
from apt.core.config import ConfigError, option, parse_command


@dataclass
class QuickstartConfig:
    out: str = option("outputs/quickstart", "folder for the runs and the report")
    nproc: int = option(min(2, os.cpu_count() or 1), "ranks per training stage (torchrun; 1 = a plain process)")
    cd: list[str] = option(help="KEY=VALUE overrides for configs/toy/distill.yaml", many=True, default_factory=list)
    apt: list[str] = option(help="KEY=VALUE overrides for configs/toy/apt.yaml", many=True, default_factory=list)
    reward: list[str] = option(help="KEY=VALUE overrides for configs/toy/reward.yaml", many=True,
                               default_factory=list)
    # 384: the size at which the project calls a difference real (one clip is 0.26 points, not 1 as at 96)
    n: int = option(384, "evaluation prompts (held-out combinations)")
    seed: int = option(0, "evaluation seed")
    # the table's numbers depend on the thread count (float sums): the training stages run one thread per
    # rank, the evaluation this many; 2 gives the README's table
    threads: int = option(2, "evaluation threads (the training stages: one per rank)")

    def validate(self):
        if self.nproc < 1 or self.threads < 1:
            raise ConfigError(f"nproc and threads must be at least 1, got {self.nproc} and {self.threads}")


def main(argv=None) -> dict:
    from apt.toy.quickstart import quickstart

    return run_command(lambda: quickstart(parse_command(QuickstartConfig, argv, __doc__, prog="apt-quickstart")))


if __name__ == "__main__":
    main()


cli = console_script(main)
