"""A private Ray on this machine for the whole folder (loopback only, 2 CPUs), started the way `wsi`
starts it, and random-init RetCCL weights made with the helper of tests/extract."""

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch

from tests.extract.helpers import torchvision_resnet50_state
from wsi_pipeline.backends import Backend, ray_session
from wsi_pipeline.errors import WsiError


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """The address of the running Ray; commands run in this process use its connection.

    Ray 2.59's raylet gives its Python agents 15 s to start; on a machine whose cores are all busy they can
    miss that window, so a failed start is tried once more before the error stands.
    """
    with ExitStack() as stack:
        try:
            ray = stack.enter_context(ray_session(Backend("ray", local_cpus=2)))
        except WsiError:
            ray = stack.enter_context(ray_session(Backend("ray", local_cpus=2)))
        yield ray.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def retccl_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "retccl_random.pth"
    torch.save(torchvision_resnet50_state(), path)
    return path
