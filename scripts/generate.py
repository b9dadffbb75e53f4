"""Thin entry point: see apt/cli/generate.py (also installed as `apt-generate`)."""

from apt.cli.generate import main

if __name__ == "__main__":
    main()
