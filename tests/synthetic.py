"""Synthetic whole-slide images for tests, built from real pixels (`read_level0` of a slide in tests/data) or
from scratch (`blank_glass`), so every stage's tests can build slides with exactly the property under test.

The writer itself is the library's (`wsi_pipeline.slides.writer`, which the demo cohort also uses; its
docstring lists the layouts and what OpenSlide makes of them); it is re-exported here so tests import
everything from one place: `from tests.synthetic import write_slide, read_level0, ...`.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from wsi_pipeline.slides.writer import Layout, pyramid, write_slide

__all__ = ["Layout", "blank_glass", "blurred", "pyramid", "read_level0", "write_slide"]


def read_level0(slide_path: Path) -> np.ndarray:
    """The full level-0 RGB image of a (small) real slide, to derive synthetic slides from real pixels."""
    import openslide

    with openslide.OpenSlide(str(slide_path)) as slide:
        region = slide.read_region((0, 0), 0, slide.dimensions)
    return np.asarray(region.convert("RGB"))


def blurred(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """A Gaussian-blurred copy: an out-of-focus scan of the same tissue."""
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma_px)))


def blank_glass(width: int, height: int, *, value: int = 243, noise: int = 4, seed: int = 0) -> np.ndarray:
    """Empty glass: near-white with a little sensor noise (a flat image would be unrealistically easy)."""
    rng = np.random.default_rng(seed)
    pixels = value + rng.integers(-noise, noise + 1, size=(height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)
