"""A distributed, resumable sampler: each epoch a seeded permutation split across ranks, started at
any position inside the epoch so a resumed run reads exactly the batches the interrupted one would have.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Indices of this rank's share of epoch `epoch`, from item `start` of that share on.

    Every rank gets ``len(dataset) // world_size`` items per epoch (the remainder is dropped so all ranks
    take the same number of steps). The order depends on `seed` and `epoch` only.
    """

    def __init__(self, num_items: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        if num_items < world_size:
            raise ValueError(f"{num_items} training windows cannot be shared by {world_size} processes; "
                             "collect more data or use fewer processes")
        self.num_items = num_items
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    @property
    def per_rank(self) -> int:
        return self.num_items // self.world_size

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Continue at epoch `epoch`, skipping the first `start` items of this rank's share."""
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"start {start} outside this rank's {self.per_rank} items")
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        """This rank's whole share of the current epoch."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(self.num_items, generator=g).tolist()
        else:
            perm = list(range(self.num_items))
        used = self.per_rank * self.world_size
        return perm[self.rank:used:self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start
