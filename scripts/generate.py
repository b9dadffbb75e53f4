"""= apt-generate; see apt/cli/generate.py."""

from apt.cli.generate import cli

if __name__ == "__main__":
    raise SystemExit(cli())
