"""This process's part in a run: which bags it trains on and whether it writes.

A single process trains on every bag and writes every file. A torchrun/DDP run changes exactly these two
answers (bags split across ranks, rank 0 writes), so they are asked here and nowhere else.
"""

from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessRole:
    rank: int = 0
    world_size: int = 1

    @property
    def writes(self) -> bool:
        """Checkpoints, history, splits and progress come from one process only."""
        return self.rank == 0

    def my_bags(self, ordered: list[T]) -> list[T]:
        """This process's share of an epoch's (already shuffled, identically on every rank) bag order."""
        return ordered[self.rank :: self.world_size]
