"""= apt-train-decoder; see apt/cli/train_decoder.py."""

from apt.cli.train_decoder import cli

if __name__ == "__main__":
    raise SystemExit(cli())
