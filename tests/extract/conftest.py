import shutil
from pathlib import Path

import pytest
import torch

from tests.extract.helpers import torchvision_resnet50_state


@pytest.fixture(scope="session")
def retccl_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-init weights saved once per session exactly as the RetCCL checkpoint is laid out."""
    path = tmp_path_factory.mktemp("weights") / "retccl_random.pth"
    state = torchvision_resnet50_state()
    assert len(state) == 318
    torch.save(state, path)
    return path


@pytest.fixture
def copy_slide(tmp_path: Path):
    """Copy a real slide into a folder of the test's own, so the test may move or damage it."""

    def copy(slide: Path, folder: str = "slides", name: str | None = None) -> Path:
        target = tmp_path / folder / (name or slide.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(slide, target)
        return target

    return copy
