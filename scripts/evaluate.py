"""= apt-evaluate; see apt/cli/evaluate.py."""

from apt.cli.evaluate import cli

if __name__ == "__main__":
    raise SystemExit(cli())
