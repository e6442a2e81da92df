"""Resolution order (DESIGN §4): metadata, else objective power, else --mpp, else a one-line error."""

from pathlib import Path

import pytest

from tests.synthetic import blank_glass
from wsi_pipeline.errors import SlideError
from wsi_pipeline.slides import open_slide, resolve_mpp


def test_metadata_wins_over_the_fallback(cmu_slide: Path) -> None:
    with open_slide(cmu_slide) as reader:
        assert resolve_mpp(reader, 0.25) == (pytest.approx(0.499), "metadata")


def test_objective_power_when_no_mpp(slide_factory) -> None:
    path = slide_factory("power.svs", blank_glass(600, 400), layout="aperio", mpp=None, objective_power=40)
    with open_slide(path) as reader:
        assert resolve_mpp(reader, None) == (pytest.approx(0.25), "objective-power")


def test_tcga_without_resolution_names_the_slide_and_mpp(tcga_slide: Path) -> None:
    with open_slide(tcga_slide) as reader:
        with pytest.raises(SlideError) as error:
            resolve_mpp(reader, None)
        assert resolve_mpp(reader, 0.5) == (0.5, "override")
    message = str(error.value)
    assert "tcga-cr-7395-01a-01-ts1.svs" in message and "--mpp" in message and "\n" not in message
