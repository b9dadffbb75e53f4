"""Stage 2 (adversarial post-training), under torchrun or as plain python; = apt-train. See apt/adversarial/train.py."""

from apt.adversarial.train import cli

if __name__ == "__main__":
    cli()
