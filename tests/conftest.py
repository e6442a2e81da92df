"""Fixtures shared by every stage's tests: the real slides and tiles in tests/data, and synthetic slides.

Real data first: `cmu_slide` (Aperio, 2220 x 2967 px, mpp 0.499, one level), `cmu_pyramid_slide` (the same
pixels as a 4-level pyramid), `tcga_slide` (2 levels, no mpp and no objective power), `labelled_tiles`
(a folder of PNG tiles named by what they show; see tests/data/SOURCES.md), `slides_dir` (all three),
`tcga_pixels` (the TCGA level 0 as an array, to derive synthetic slides from). `slide_factory` writes
synthetic slides into the test's temporary folder (see tests/synthetic.py for the layouts).

The tests folder is a package (`tests/__init__.py`, and one in each `tests/<stage>/`), so same-named test
files in different stages do not clash and helpers import as `from tests.synthetic import ...`.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.synthetic import read_level0, write_slide

DATA_DIR = Path(__file__).parent / "data"
SLIDES_DIR = DATA_DIR / "slides"
CMU_SLIDE = SLIDES_DIR / "CMU-1-Small-Region.svs"
CMU_PYRAMID_SLIDE = SLIDES_DIR / "CMU-1-Small-Region_pyramid4.svs"
TCGA_SLIDE = SLIDES_DIR / "tcga-cr-7395-01a-01-ts1.svs"
LABELLED_TILES_DIR = DATA_DIR / "tiles"


def _data_path_fixture(name: str, path: Path) -> Callable[[], Path]:
    """A session fixture called `name` that gives `path` (the module constant, for tests that take fixtures)."""

    @pytest.fixture(scope="session", name=name)
    def fixture() -> Path:
        return path

    return fixture


slides_dir = _data_path_fixture("slides_dir", SLIDES_DIR)
cmu_slide = _data_path_fixture("cmu_slide", CMU_SLIDE)
cmu_pyramid_slide = _data_path_fixture("cmu_pyramid_slide", CMU_PYRAMID_SLIDE)
tcga_slide = _data_path_fixture("tcga_slide", TCGA_SLIDE)
labelled_tiles = _data_path_fixture("labelled_tiles", LABELLED_TILES_DIR)


@pytest.fixture(scope="session")
def tcga_pixels() -> np.ndarray:
    """Level 0 of the TCGA slide as an RGB array (read once per session; do not modify)."""
    pixels = read_level0(TCGA_SLIDE)
    pixels.flags.writeable = False
    return pixels


@pytest.fixture
def slide_factory(tmp_path: Path) -> Callable[..., Path]:
    """`make(name, image, **write_slide_options) -> path` of a synthetic slide under `tmp_path/slides`."""

    def make(name: str, image: np.ndarray, **options: object) -> Path:
        return write_slide(tmp_path / "slides" / name, image, **options)

    return make
