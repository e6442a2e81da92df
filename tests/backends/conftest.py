"""A private Ray on this machine for this folder (loopback only, 2 CPUs), started the way `wsi`
starts it, and random-init RetCCL weights made with the helper of tests/extract."""

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest
import torch

from tests.extract.helpers import torchvision_resnet50_state
from wsi_pipeline.backends import Backend, ray_session
from wsi_pipeline.errors import WsiError


@pytest.fixture(scope="package")
def ray_address() -> Iterator[str]:
    """The address of the running Ray; commands run in this process use its connection. Stopped when
    this folder's tests are done, so its idle processes do not sit through the rest of the suite.

    Ray 2.59's raylet gives its Python agents 15 s to start, which a machine with every core busy can
    miss; then the processes of that attempt are stopped (by pid: they are this process's children) and
    Ray is started once more before the error stands.
    """
    with ExitStack() as stack:
        for attempt in (1, 2):
            before = {child.pid for child in psutil.Process().children(recursive=True)}
            try:
                ray = stack.enter_context(ray_session(Backend("ray", local_cpus=2)))
                break
            except WsiError:
                if attempt == 2:
                    raise
                _stop_children_started_since(before)
        yield ray.get_runtime_context().gcs_address


def _stop_children_started_since(before: set[int]) -> None:
    started = [child for child in psutil.Process().children(recursive=True) if child.pid not in before]
    for child in started:
        child.terminate()
    _, alive = psutil.wait_procs(started, timeout=10)
    for child in alive:
        child.kill()


@pytest.fixture(scope="session")
def retccl_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "retccl_random.pth"
    torch.save(torchvision_resnet50_state(), path)
    return path
