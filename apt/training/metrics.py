"""A training step's metrics, kept on the device as the step computes them and synced once at its end."""

from __future__ import annotations

import torch

from apt.core.collectives import mean_over_ranks


class StepMetrics:
    """Scalars of one update: `add` averages a value over the update's micro-batches, `set` records a
    value of the whole update. Values stay float64 tensors on their device (no host sync inside the
    step); `synced()` is the one transfer: the mean over ranks, as host floats, keys sorted."""

    def __init__(self, micro_batches: int = 1):
        self.micro_batches = micro_batches
        self.values: dict[str, torch.Tensor | float] = {}

    @staticmethod
    def _float64(value) -> torch.Tensor | float:
        return value.detach().to(torch.float64) if torch.is_tensor(value) else float(value)

    def add(self, key: str, value) -> None:
        """Accumulate `value` / micro_batches under `key` (the mean over the update's micro-batches)."""
        self.values[key] = self.values.get(key, 0.0) + self._float64(value) / self.micro_batches

    def set(self, key: str, value) -> None:
        self.values[key] = self._float64(value)

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __getitem__(self, key: str) -> float:
        """One value on the host (a sync: for tests and diagnostics, not inside a step)."""
        return float(self.values[key])

    def synced(self) -> dict[str, float]:
        return mean_over_ranks(self.values)
