"""Plugins (apt/core/plugins.py): the toy world registers its model folder, its data source and its reward
kind through entry points, as any package would; the core names only its built-ins."""

import pytest

from apt.core import plugins
from apt.core.config import ConfigError, load_config
from apt.data.sources import data_sources
from apt.models.model_folder import resolve_model_dir, shipped_models
from apt.rewards.registry import reward_kinds
from apt.training.config import DataConfig


def test_the_toy_registers_itself_in_every_group():
    assert "toy" in plugins.registered("models") and "toy" in plugins.registered("data_sources")
    assert data_sources()[0] == "shards" and "toy" in data_sources()
    assert {"clip", "python", "toy"} <= set(reward_kinds())
    assert "toy" in shipped_models() and (resolve_model_dir("toy") / "transformer").is_dir()
    assert str(resolve_model_dir("~/x")).endswith("/x")  # anything else is a folder path


def test_an_unknown_source_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError, match="data.source must be one of shards, toy"):
        load_config(DataConfig, None, ["source=webdataset"])
    with pytest.raises(ValueError, match="unknown plugin group"):
        plugins.registered("schedulers")
