from collections.abc import Iterator

import pytest
import torch

from tests.threads import single_thread


@pytest.fixture(autouse=True)
def _seeded_single_thread() -> Iterator[None]:
    """Fixed seed; one intra-op thread, because on a shared 2-core machine thread hand-offs dominate the
    tiny tensors of unit tests. The previous thread count is restored for other test folders."""
    torch.manual_seed(0)
    with single_thread():
        yield
