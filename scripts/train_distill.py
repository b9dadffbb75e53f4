"""Stage 1 (consistency distillation), under torchrun or as plain python; = apt-distill. See apt/cli/distill.py."""

from apt.cli.distill import cli

if __name__ == "__main__":
    cli()
