"""Thin entry point: see apt/cli/quickstart.py (CD -> APT -> evaluation on the toy world)."""

from apt.cli.quickstart import main

if __name__ == "__main__":
    main()
