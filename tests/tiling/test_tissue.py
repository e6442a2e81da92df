"""Tissue and ink masks on real thumbnails, an all-tissue field, the labelled pen tile and blank glass."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.synthetic import blank_glass
from wsi_pipeline.slides import open_slide
from wsi_pipeline.tiling.tissue import ink_mask, otsu_saturation_mask, smoothed_saturation, tissue_mask


@pytest.mark.parametrize(("slide", "low", "high"), [("cmu_slide", 0.25, 0.45), ("tcga_slide", 0.45, 0.70)])
def test_otsu_mask_covers_the_tissue(request, slide: str, low: float, high: float) -> None:
    """SOURCES.md: about 34 % (CMU) and 54 % (TCGA) tissue by tiatoolbox's Otsu mask."""
    with open_slide(request.getfixturevalue(slide)) as reader:
        thumbnail = reader.thumbnail(1024)
    mask = tissue_mask(thumbnail, "otsu", 1.5)
    assert mask.shape == thumbnail.shape[:2] and mask.dtype == bool
    assert low < mask.mean() < high
    # Tissue is coloured, glass is not: the mask must pick the saturated pixels.
    saturation = thumbnail.max(axis=2).astype(int) - thumbnail.min(axis=2)
    assert saturation[mask].mean() > 3 * saturation[~mask].mean()


def test_blank_glass_has_no_tissue() -> None:
    """Otsu splits any image in two; the saturation floor stops it calling half of empty glass tissue."""
    assert not otsu_saturation_mask(blank_glass(800, 600), 2.0).any()
    assert not otsu_saturation_mask(np.full((50, 50, 3), 255, np.uint8), 2.0).any()


def test_cmu_thumbnail_mask_is_stable_across_pyramid_copies(cmu_slide: Path, cmu_pyramid_slide: Path) -> None:
    masks = []
    for path in (cmu_slide, cmu_pyramid_slide):
        with open_slide(path) as reader:
            masks.append(tissue_mask(reader.thumbnail(1024), "otsu", 1.5))
    assert (masks[0] == masks[1]).mean() > 0.97


def test_all_tissue_field_is_all_tissue(tcga_pixels: np.ndarray) -> None:
    """A crop that is tissue edge to edge: Otsu alone calls the pale stroma background (its lower class
    is coloured, not glass), the fallback threshold keeps it."""
    from skimage.filters import threshold_otsu

    thumbnail = np.asarray(Image.fromarray(np.ascontiguousarray(tcga_pixels[1000:2600, 1000:2600])).reduce(4))
    saturation = smoothed_saturation(thumbnail, 2.0)
    assert (saturation > threshold_otsu(saturation)).mean() < 0.8  # what plain Otsu keeps
    assert tissue_mask(thumbnail, "otsu", 2.0).mean() > 0.98


def test_red_pen_tile_is_ink_and_tissue_is_not(
    labelled_tiles: Path, cmu_slide: Path, tcga_slide: Path
) -> None:
    """The labelled pen tile (red and black marker, tests/data/SOURCES.md) against real H&E."""
    pen = np.asarray(Image.open(labelled_tiles / "no-tissue-red-pen.png").convert("RGB"))
    assert ink_mask(pen, 0.5).mean() > 0.4
    for name in (
        "tcga-lung-rgb.png",
        "tissue-level0-4302-10273-4814-10785.png",
        "tissue-level0-7352-11762-7864-12274.png",
        "high-nuclei-score-level0.png",
    ):
        assert not ink_mask(np.asarray(Image.open(labelled_tiles / name).convert("RGB")), 0.5).any(), name
    for slide in (cmu_slide, tcga_slide):
        with open_slide(slide) as reader:
            assert not ink_mask(reader.thumbnail(1024), 1.5).any()


@pytest.mark.parametrize(
    "ink", [(60, 170, 90), (40, 70, 200), (50, 50, 50), (230, 30, 40)], ids=["green", "blue", "black", "red"]
)
def test_marker_colours_over_tissue_are_ink(tcga_pixels: np.ndarray, ink: tuple[int, int, int]) -> None:
    """Translucent ink (it multiplies the colour beneath) over the left 45 % of the real TCGA slide."""
    thumbnail = np.asarray(Image.fromarray(tcga_pixels).reduce(4)).copy()  # 2 µm/px at --mpp 0.5
    left = thumbnail.shape[1] * 45 // 100
    thumbnail[:, :left] = (thumbnail[:, :left].astype(np.float32) * np.array(ink) / 255).astype(np.uint8)
    inked = ink_mask(thumbnail, 2.0)
    assert inked[:, :left].mean() > 0.95
    assert inked[:, left + 40 :].mean() < 0.01  # beyond the 30 µm margin
