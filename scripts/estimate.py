"""= apt-estimate; see apt/cli/estimate.py."""

from apt.cli.estimate import cli

if __name__ == "__main__":
    raise SystemExit(cli())
