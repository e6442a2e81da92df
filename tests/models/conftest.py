from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded_single_thread() -> Iterator[None]:
    """Fixed seed; one intra-op thread, because on a shared 2-core machine thread hand-offs dominate the
    tiny tensors of unit tests. The previous thread count is restored for other test folders."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
