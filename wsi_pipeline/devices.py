"""The compute a stage runs on: the torch device named in its config, checked before any work starts, and
its CPU threads (`--threads` of every stage)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from wsi_pipeline.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; a named device that does not exist here is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} requested but no CUDA device is available")
    return device


def default_threads() -> int:
    """Torch CPU threads for one process: the physical cores this process may run on, shared among the
    processes torchrun started on this machine. Hyper-threads and oversubscription only add hand-offs: on a
    busy 2-core machine, training with torch's default thread count ran 20x slower than with one thread."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = _physical_cores(cpus) or len(cpus)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def _physical_cores(cpus: set[int]) -> int:
    """Distinct (package, core) pairs among `cpus` from /proc/cpuinfo; 0 where that is unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return 0
    cores = set()
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if int(fields.get("processor", -1)) in cpus and "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with `threads` torch CPU threads (None: `default_threads()`), then restore the caller's
    setting: a library call leaves the process as it found it."""
    before = torch.get_num_threads()
    chosen = threads or default_threads()
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(before)
