"""Hooks the trainer calls around a stage's step: what every stage may want done after an update
(an EMA of the model) or decided on the synced metrics (stopping a run that has collapsed)."""

from __future__ import annotations


class Callback:
    """A stage returns its callbacks from `callbacks()`; the trainer calls them in that order."""

    def after_update(self, step: int) -> None:
        """The update of (0-based) `step` has stepped its optimisers."""

    def after_sync(self, step: int, metrics: dict[str, float]) -> None:
        """The update's metrics, averaged over ranks: the same on every rank, so a decision taken here
        (raising to stop the run) is every rank's."""

    def state_dict(self) -> dict:
        """What the callback must carry across a resume (checkpointed per rank); {} = nothing."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned."""
