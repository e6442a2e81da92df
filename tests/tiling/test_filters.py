"""The white and blur filters on real labelled tiles, resized to 224 px exactly as the pipeline does.

The labelled tiles are 512 px crops of 0.5 µm/px scans (tests/data/SOURCES.md), so as 256 µm tiles at
224 px they are at the pipeline's default 1.14 µm/px.
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.synthetic import blurred
from wsi_pipeline.slides.reader import resize_tile
from wsi_pipeline.tiling.config import TileConfig
from wsi_pipeline.tiling.filters import (
    edge_fraction,
    focus_score,
    judge_tile,
    laplacian_variance,
    to_gray,
)

DEFAULTS = TileConfig()
TILE_MPP = DEFAULTS.tile_um / DEFAULTS.tile_px


def pipeline_tile(path: Path, tile_px: int = DEFAULTS.tile_px) -> np.ndarray:
    """A labelled PNG as the pipeline would see it: a square read, resized with `resize_tile`."""
    image = Image.open(path).convert("RGB")
    side = min(image.size)
    return np.asarray(resize_tile(image.crop((0, 0, side, side)), tile_px))


def judge(rgb: np.ndarray, tile_mpp: float = TILE_MPP):
    """The pipeline's verdict on a tile at the default thresholds."""
    return judge_tile(
        rgb,
        tile_mpp=tile_mpp,
        white_gray=DEFAULTS.white_gray,
        max_white_fraction=DEFAULTS.max_white_fraction,
        min_edge_fraction=DEFAULTS.min_edge_fraction,
        min_focus=DEFAULTS.min_focus,
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("almost-white-1.png", "white"),
        ("almost-white-2.png", "white"),
        ("no-tissue.png", "white"),
        ("no-tissue2.png", "white"),
        ("no-tissue-red-pen.png", "blur"),  # the out-of-focus pen mark (also ink: see test_tissue.py)
        ("no-tissue-line.png", "white"),  # grey glass (gray 224-240) with one dark line
        ("tcga-lung-rgb.png", None),
        ("tissue-level0-4302-10273-4814-10785.png", None),
        ("tissue-level0-7352-11762-7864-12274.png", None),
        ("high-nuclei-score-level0.png", None),
    ],
)
def test_labelled_tiles(labelled_tiles: Path, name: str, reason: str | None) -> None:
    verdict = judge(pipeline_tile(labelled_tiles / name))
    assert verdict.reason == reason
    if reason is None:  # far from the thresholds, not luck
        assert verdict.edge_fraction >= DEFAULTS.min_edge_fraction * 5
        assert verdict.blur_score >= 1.1 * DEFAULTS.min_focus


@pytest.mark.parametrize(
    "name",
    [
        "tcga-lung-rgb.png",
        "tissue-level0-4302-10273-4814-10785.png",
        "tissue-level0-7352-11762-7864-12274.png",
        "high-nuclei-score-level0.png",
    ],
)
@pytest.mark.parametrize("sigma_um", [1.0, 2.0, 3.0])
def test_sharp_tissue_blurred_by_1_to_3_um_is_rejected(
    labelled_tiles: Path, name: str, sigma_um: float
) -> None:
    """The focus rule's validation on the labelled tiles: blurred at scan resolution (0.5 µm/px), then
    resized as the pipeline does. STAMP's edge rule alone keeps most of these."""
    image = np.asarray(Image.open(labelled_tiles / name).convert("RGB"))
    side = min(image.shape[:2])
    soft = blurred(np.ascontiguousarray(image[:side, :side]), sigma_um / 0.5)
    verdict = judge(np.asarray(resize_tile(Image.fromarray(soft), DEFAULTS.tile_px)))
    assert verdict.reason == "blur" and verdict.blur_score < DEFAULTS.min_focus


def test_focus_score_does_not_depend_on_contrast(labelled_tiles: Path) -> None:
    """A faint stain has a small Laplacian, not a blurry one: the score is a ratio."""
    gray = to_gray(pipeline_tile(labelled_tiles / "tissue-level0-4302-10273-4814-10785.png")).astype(float)
    faint = (128 + (gray - gray.mean()) * 0.4).round().astype(np.uint8)
    assert laplacian_variance(faint) < laplacian_variance(gray.astype(np.uint8)) / 4
    assert focus_score(faint, TILE_MPP) == pytest.approx(
        focus_score(gray.astype(np.uint8), TILE_MPP), rel=0.1
    )


def test_sharp_tissue_turns_blurry_when_blurred(labelled_tiles: Path) -> None:
    sharp = pipeline_tile(labelled_tiles / "tcga-lung-rgb.png")
    soft = blurred(sharp, 5)  # 5 px at 1.14 µm/px: clearly out of focus; STAMP's rule lets milder blur pass
    assert judge(sharp).reason is None
    assert judge(soft).reason == "blur"
    assert judge(soft).blur_score < judge(sharp).blur_score / 2


@pytest.mark.parametrize("name", ["tissue-level0-4302-10273-4814-10785.png", "high-nuclei-score-level0.png"])
def test_sharp_tissue_at_a_coarse_tile_scale_is_kept(labelled_tiles: Path, name: str) -> None:
    """256 µm at 112 px (2.3 µm/px): the 1 µm focus probe is under half a pixel there and sharp tissue
    scores low, so only the edge rule may judge blur at that scale."""
    coarse_px = 112
    coarse_mpp = DEFAULTS.tile_um / coarse_px
    rgb = pipeline_tile(labelled_tiles / name, coarse_px)
    assert focus_score(to_gray(rgb), coarse_mpp) < DEFAULTS.min_focus  # what the gate guards against
    assert judge(rgb, coarse_mpp).reason is None


def test_white_rule_is_a_share_of_pixels_at_or_above_white_gray() -> None:
    tile = np.full((224, 224, 3), 200, np.uint8)
    rows = round(224 * DEFAULTS.max_white_fraction) + 2  # just over the share, at exactly white_gray
    tile[:rows] = DEFAULTS.white_gray
    assert judge(tile).reason == "white"
    tile[:rows] = DEFAULTS.white_gray - 1
    assert judge(tile).reason != "white"


def test_flat_tile_has_no_edges() -> None:
    verdict = judge(np.full((224, 224, 3), (200, 120, 180), np.uint8))
    assert verdict.reason == "blur" and verdict.edge_fraction == 0 and verdict.blur_score == 0


def test_gray_is_pil_luma() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert to_gray(rgb).tolist() == [[76, 150, 29]]


def test_laplacian_variance_of_a_checkerboard() -> None:
    board = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)
    # Every interior Laplacian is +-4 * 255 with mean 0, so the variance is (4 * 255) ** 2.
    assert laplacian_variance(board) == pytest.approx((4 * 255) ** 2)
    assert laplacian_variance(np.full((32, 32), 128, np.uint8)) == 0


@pytest.mark.parametrize(
    "name",
    [
        "tcga-lung-rgb.png",
        "no-tissue-red-pen.png",
        "no-tissue-line.png",
        "tissue-level0-4302-10273-4814-10785.png",
        "high-nuclei-score-level0.png",
    ],
)
def test_opencv_canny_agrees_with_an_independent_canny(labelled_tiles: Path, name: str) -> None:
    """scikit-image's Canny (L2 gradient, same thresholds, no smoothing) is an independent implementation:
    both must give the same keep/reject verdict at STAMP's 0.02 and similar edge fractions."""
    from skimage.feature import canny

    gray = to_gray(pipeline_tile(labelled_tiles / name))
    reference = float(canny(gray.astype(float), sigma=0, low_threshold=40, high_threshold=100).mean())
    ours = edge_fraction(gray)
    assert (ours < 0.02) == (reference < 0.02)
    assert ours == pytest.approx(reference, rel=0.35, abs=0.005)
