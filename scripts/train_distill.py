"""Stage 1 (consistency distillation), under torchrun or as plain python; = apt-distill. See distill/train.py."""

from distill.train import cli

if __name__ == "__main__":
    cli()
