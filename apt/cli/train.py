"""Stage 2: adversarial post-training of the one-step generator (apt/adversarial/).

    apt-train --config configs/toy/apt.yaml adv.generator_init=outputs/quickstart/cd
    torchrun --nproc_per_node 2 scripts/train_apt.py --config configs/toy/apt.yaml adv.generator_init=runs/toy-distill
"""

from __future__ import annotations

from apt.adversarial.build import build_stage, check_inputs
from apt.adversarial.config import APTConfig
from apt.core.command import console_script
from apt.training.launch import run_training


def main(argv=None) -> dict:
    return run_training(APTConfig, __doc__, argv, build_stage, prog="apt-train", preflight=check_inputs)


cli = console_script(main, distributed=True)  # exits without interpreter teardown
