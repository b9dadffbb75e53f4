"""Thin entry point for stage 1; see distill/train.py. Works under torchrun and as plain python."""

import os
import sys

# Python puts this file's folder first on sys.path, and this file's name would shadow the
# `distill` package: drop it.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from apt.distributed import exit_cleanly  # noqa: E402
from distill.train import main  # noqa: E402

if __name__ == "__main__":
    main()
    exit_cleanly(0)
