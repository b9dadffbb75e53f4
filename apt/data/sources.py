"""Where training data comes from: `data.source` names a registered source.

Built in: `shards`, latent shard sets written by apt-preprocess (apt/data/latents.py). Plugins add
sources through the `seaweed_apt.data_sources` entry point group (apt/core/plugins.py), as the toy
world adds `toy`: a function (data config, model components, model folder, rank info) -> a dataset of
{"latent", "text", "caption"} items, called on every rank.
"""

from __future__ import annotations

from pathlib import Path

from apt.core import plugins

BUILT_IN = ("shards",)


def data_sources() -> tuple[str, ...]:
    """Every source a config may name (imports nothing)."""
    return (*BUILT_IN, *sorted(plugins.registered("data_sources")))


def training_dataset(data_cfg, components, model_dir: Path, dist):
    """The dataset `data.source` names, checked against the model."""
    if data_cfg.source == "shards":
        from apt.data.latents import open_shard_dataset

        return open_shard_dataset(data_cfg, components)
    return plugins.load("data_sources", data_cfg.source)(data_cfg, components, model_dir, dist)
