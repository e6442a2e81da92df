"""This process's part in a run: which bags it trains on, whether it writes, and how it agrees with the others.

A single process trains on every bag and writes every file. A torchrun run (DistributedDataParallel, one
process per GPU or CPU slot) changes exactly these answers: each rank trains on its share of the epoch's bag
order, gradients are averaged across ranks, validation predictions are gathered so every rank takes the same
early-stopping decision, and rank 0 writes. They are asked here and nowhere else; with one process every
collective is a no-op and `torch.distributed` is never imported.
"""

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from wsi_pipeline.errors import ConfigError

T = TypeVar("T")

# Set by torchrun (and torch.distributed.run) in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class ProcessRole:
    rank: int = 0
    world_size: int = 1

    @property
    def writes(self) -> bool:
        """Checkpoints, history, splits and progress come from one process only."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def my_bags(self, ordered: list[T]) -> list[T]:
        """This process's share of an epoch's (already shuffled, identically on every rank) bag order.

        Every rank gets the same number of steps, or the ranks with more would wait forever in the gradient
        all-reduce: the order is padded to a multiple of the world size by repeating its first bags.
        """
        if not ordered:
            return []
        padded = ordered + ordered[: -len(ordered) % self.world_size]
        return padded[self.rank :: self.world_size]

    def my_share(self, items: list[T]) -> list[T]:
        """For scoring, where ranks need no lockstep: a strided share without padding."""
        return items[self.rank :: self.world_size]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (pickled: for small per-epoch results)."""
        if not self.distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train through: DistributedDataParallel across ranks, else the model itself.

        Every aggregator uses all of its parameters on every bag (checked for all registered models at any
        bag length), so DDP needs no search for unused parameters and the graph is static.
        """
        if not self.distributed:
            return model
        return DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False,
            static_graph=True,
        )


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def torchrun_device(device: torch.device) -> torch.device:
    """Under torchrun each process on a node drives the GPU of its local rank (CUDA_VISIBLE_DEVICES picks
    which GPUs a node uses); an explicit GPU index would put several ranks on one GPU, which NCCL refuses."""
    if device.type != "cuda":
        return device
    if device.index is not None and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"device: {device} under torchrun; pass --device cuda (or auto): each process uses the GPU of "
            "its local rank, and CUDA_VISIBLE_DEVICES chooses the GPUs"
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.index is None and local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"device: local rank {local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
            "start at most one process per GPU (--nproc-per-node)"
        )
    return torch.device("cuda", local_rank if device.index is None else device.index)


@contextmanager
def torchrun_process(device: torch.device) -> Iterator[tuple[ProcessRole, torch.device]]:
    """Join the process group torchrun set up (gloo on CPU, NCCL on GPU) and leave it on exit, errors too.

    Leaving must free the group, which joins gloo's worker threads. A group still alive at interpreter
    shutdown kept them running there, and one still freeing the last `gather`'s tensors needs the GIL: the
    process aborted ("terminate called without an active exception"; a minimal two-process script, 3 runs in
    45 on a busy 2-core machine, seen in a core dump). Two things held it: the functions of `torch.distributed.nn`, which
    DistributedDataParallel imports, take `group=group.WORLD` as a default argument (so it is imported
    before the group exists, when that default is None), and a DistributedDataParallel wrapper is freed
    only by the cycle collector (so it runs before the group is destroyed).
    """
    import torch.distributed.nn  # before init_process_group: see above

    device = torchrun_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield ProcessRole(rank=dist.get_rank(), world_size=dist.get_world_size()), device
    finally:
        gc.collect()  # the DistributedDataParallel wrappers: see above
        dist.destroy_process_group()
