"""The order in which training data arrives: deterministic, disjoint across ranks, resumable."""

from __future__ import annotations

import torch


def collate(items: list[dict]) -> dict:
    """Stack tensors, list everything else (captions)."""
    return {k: torch.stack([it[k] for it in items]) if torch.is_tensor(items[0][k]) else [it[k] for it in items]
            for k in items[0]}


class DataStream:
    """A fresh permutation per epoch, seeded by (seed, epoch).

    `position` counts global samples consumed; each micro-batch advances it by mb * world_size and
    rank r takes slots [position + r*mb, position + (r+1)*mb). Resuming = restoring `position`.
    """

    def __init__(self, dataset, micro_batch_size: int, rank: int, world_size: int, seed: int, position: int = 0):
        if len(dataset) < micro_batch_size * world_size:
            raise ValueError(f"dataset has {len(dataset)} items, fewer than one global micro-batch "
                             f"({micro_batch_size} x {world_size} ranks)")
        self.dataset, self.mb, self.rank, self.world, self.seed = dataset, micro_batch_size, rank, world_size, seed
        self.position = position
        self._perm_epoch, self._perm = None, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.dataset), generator=g), epoch
        return self._perm

    def next_batch(self) -> dict:
        n, items = len(self.dataset), []
        start = self.position + self.rank * self.mb
        for k in range(start, start + self.mb):
            items.append(self.dataset[int(self._permutation(k // n)[k % n])])
        self.position += self.mb * self.world
        return collate(items)
