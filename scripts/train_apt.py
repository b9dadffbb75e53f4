"""Thin entry point for stage 2; see apt/train.py. Works under torchrun and as plain python."""

from apt.distributed import exit_cleanly
from apt.train import main

if __name__ == "__main__":
    main()
    exit_cleanly(0)
