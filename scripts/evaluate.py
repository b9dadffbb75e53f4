"""Thin entry point: see apt/cli/evaluate.py."""

from apt.cli.evaluate import main

if __name__ == "__main__":
    main()
