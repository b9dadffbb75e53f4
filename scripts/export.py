"""Thin entry point: see apt/cli/export.py (also installed as `apt-export`)."""

import sys

from apt.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
