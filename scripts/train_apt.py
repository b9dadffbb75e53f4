"""Stage 2 (adversarial post-training), under torchrun or as plain python; = apt-train. See apt/cli/train.py."""

from apt.cli.train import cli

if __name__ == "__main__":
    cli()
