"""Crash-safe progress of a long single-process training (the fast decoder's, the toy components'): a
state file written atomically every few hundred steps and read back by a re-run of the same command;
a re-run with other settings is refused, naming them. (The stages' runs have apt/training/checkpoint.py.)

A training's state is its stateful parts (modules, optimisers, schedulers, torch or numpy generators:
`snapshot`, `resume`), torch's global RNG (dropout and samplers draw from it) and whatever running
values it logs; a resumed run then continues bit for bit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


class BuildState:
    def __init__(self, path: str | Path, settings: dict, every: int = 200):
        self.path, self.every = Path(path), every
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))

    def load(self, map_location=None) -> dict | None:
        """The saved state (with its 'step'), or None to start from scratch."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, weights_only=True, map_location=map_location)
        saved = state["settings"]
        changed = sorted(k for k in set(saved) | set(self.settings) if saved.get(k) != self.settings.get(k))
        if changed:
            from apt.core.config import ConfigError

            raise ConfigError(f"{self.path} holds a build with other settings ({', '.join(changed)}): run it again "
                             "with the same ones to resume, or delete the file to start over")
        print(f"resuming {self.path} at step {state['step']}")
        return state

    def save_if_due(self, step: int, state) -> None:
        """state() -> dict of what resumes the training after `step` steps; called only when due."""
        if step % self.every:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        torch.save({**state(), "step": step, "settings": self.settings}, tmp)
        os.replace(tmp, self.path)

    def resume(self, parts: dict) -> dict | None:
        """The saved state (its 'step' and running values) with `parts` and torch's global RNG restored from
        it, or None to start from scratch."""
        saved = self.load()
        if saved is not None:
            self.restore(saved, parts)
        return saved

    @staticmethod
    def snapshot(parts: dict) -> dict:
        """The state of each part, and torch's global RNG (as "rng")."""
        return {**{name: _state_of(part) for name, part in parts.items()}, "rng": torch.get_rng_state()}

    @staticmethod
    def restore(saved: dict, parts: dict) -> None:
        """Each part, and torch's global RNG where the state has it, as `snapshot` saved them."""
        for name, part in parts.items():
            if isinstance(part, torch.Generator):
                part.set_state(saved[name])
            elif hasattr(part, "bit_generator"):  # numpy.random.Generator
                part.bit_generator.state = saved[name]
            else:
                part.load_state_dict(saved[name])
        if "rng" in saved:
            torch.set_rng_state(saved["rng"])

    def finish(self) -> None:
        """The build is complete and saved: a later run starts over."""
        self.path.unlink(missing_ok=True)


def _state_of(part):
    if isinstance(part, torch.Generator):
        return part.get_state()
    if hasattr(part, "bit_generator"):  # numpy.random.Generator: a dict of ints
        return part.bit_generator.state
    return part.state_dict()
