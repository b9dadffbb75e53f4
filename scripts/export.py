"""= apt-export; see apt/cli/export.py."""

from apt.cli.export import cli

if __name__ == "__main__":
    raise SystemExit(cli())
