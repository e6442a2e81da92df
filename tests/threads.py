"""One intra-op torch thread for the folders whose tests run many tiny steps.

On a shared 2-core machine, thread hand-offs make small training and inference steps about 10x slower.
The previous thread count is restored afterwards, so other test folders keep theirs.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch


@contextmanager
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Every test of a folder whose conftest imports this fixture runs with one intra-op thread."""
    with single_thread():
        yield
