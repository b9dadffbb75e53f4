"""Videos + captions -> latent/text shards, under torchrun or as plain python; = apt-preprocess.
See apt/cli/preprocess.py."""

from apt.cli.preprocess import cli

if __name__ == "__main__":
    cli()
