"""= apt-quickstart; see apt/cli/quickstart.py."""

from apt.cli.quickstart import cli

if __name__ == "__main__":
    raise SystemExit(cli())
