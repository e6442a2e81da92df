"""Resolution order (README.md, `wsi tile`): metadata, else objective power, else --mpp, else a one-line
error."""

from pathlib import Path

import pytest

from tests.synthetic import blank_glass
from wsi_pipeline.errors import SlideError
from wsi_pipeline.slides import open_slide, resolve_mpp
from wsi_pipeline.slides.mpp import mpp_disagreement


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
        assert resolve_mpp(reader, 0.5) == (0.5, "fallback")
    message = str(error.value)
    assert "tcga-cr-7395-01a-01-ts1.svs" in message and "--mpp" in message and "\n" not in message


@pytest.mark.parametrize(
    ("mpp", "hint"), [(40.0, "objective power? At 40x a scan has about 0.25 µm/px"), (0.001, "mm or nm")]
)
def test_implausible_mpp_is_one_line_naming_the_likely_mistake(
    tcga_slide: Path, mpp: float, hint: str
) -> None:
    with open_slide(tcga_slide) as reader, pytest.raises(SlideError) as error:
        resolve_mpp(reader, mpp)
    message = str(error.value)
    assert f"{mpp:g} µm/px (from --mpp) is not a plausible resolution" in message and hint in message
    assert "tcga-cr-7395-01a-01-ts1.svs" in message and "\n" not in message


def test_implausible_metadata_is_refused_too(slide_factory) -> None:
    path = slide_factory("odd.svs", blank_glass(600, 400), layout="aperio", mpp=None, objective_power=0.2)
    with open_slide(path) as reader, pytest.raises(SlideError, match=r"50 µm/px .*objective power"):
        resolve_mpp(reader, None)


def test_override_makes_mpp_win_and_disagreement_is_reported(cmu_slide: Path) -> None:
    with open_slide(cmu_slide) as reader:
        assert resolve_mpp(reader, 0.25, override=True) == (0.25, "mpp-override")
        assert mpp_disagreement(reader, 0.55, override=False) == ""  # within 25 %
        warning = mpp_disagreement(reader, 0.25, override=False)
        assert "--mpp 0.25 contradicts the 0.499 µm/px from the file's metadata" in warning
        assert "add --mpp-override" in warning
        assert "is used (--mpp-override)" in mpp_disagreement(reader, 0.25, override=True)
