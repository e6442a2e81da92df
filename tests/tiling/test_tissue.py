"""Tissue masks on real thumbnails and on blank glass."""

from pathlib import Path

import numpy as np
import pytest

from tests.synthetic import blank_glass
from wsi_pipeline.slides import open_slide
from wsi_pipeline.tiling.tissue import otsu_saturation_mask, tissue_mask


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
