"""Named parts that installed packages register: data sources, reward kinds and shipped models.

A package registers them as Python entry points in its metadata (setup.cfg), one group per kind:

    [options.entry_points]
    seaweed_apt.data_sources =
        mine = mypackage.data:training_dataset
    seaweed_apt.rewards =
        mine = mypackage.rewards:build

The core never names a plugin: it asks here for the names and loads one when a config picks it. The
toy world registers itself this way (this package's setup.cfg), like any other plugin would.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points

GROUPS = ("data_sources", "rewards", "models")


@functools.cache
def registered(group: str) -> dict[str, EntryPoint]:
    """The installed plugins of a group, by name (reads package metadata only: imports nothing)."""
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; known: {', '.join(GROUPS)}")
    return {ep.name: ep for ep in entry_points(group=f"seaweed_apt.{group}")}


def load(group: str, name: str):
    """The object a plugin registered under `name` (its module imported now)."""
    found = registered(group)
    if name not in found:
        raise KeyError(name)
    return found[name].load()
