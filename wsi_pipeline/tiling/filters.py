"""Tile filters, run on the resized `tile_px` tile that a feature extractor would see.

White (STAMP): a tile is background when more than `max_white_fraction` of its pixels have grayscale
(PIL "L", ITU-R 601 luma) >= `white_gray`. Blur (STAMP): a tile is blurry when fewer than
`min_edge_fraction` of its pixels are Canny edges, computed exactly as STAMP does (`cv2.Canny`, thresholds
40/100 on 0-255 grayscale, no pre-smoothing), so STAMP's 0.02 keeps its meaning. The Laplacian variance, the
usual focus measure, is recorded for every kept tile so blur can be re-judged later without re-reading.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

CANNY_LOW = 40
CANNY_HIGH = 100

FilterReason = Literal["white", "blur"]


@dataclass(frozen=True)
class TileVerdict:
    reason: FilterReason | None  # None: the tile is kept
    white_fraction: float
    edge_fraction: float | None  # None when the white filter already rejected the tile
    blur_score: float | None


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 grayscale as STAMP computes it (PIL "L")."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


def white_fraction(gray: np.ndarray, white_gray: int) -> float:
    return float(np.count_nonzero(gray >= white_gray)) / gray.size


def edge_fraction(gray: np.ndarray) -> float:
    """Fraction of Canny edge pixels: STAMP's exact call, `cv2.Canny(gray, 40, 100)`.

    OpenCV rather than scikit-image because this is the hot spot of tiling: 1.8 ms against 5.2 ms per
    224 px tile here, which is what keeps the filters within a quarter of the raw read time.
    """
    import cv2

    edges = cv2.Canny(np.ascontiguousarray(gray), CANNY_LOW, CANNY_HIGH)
    return float(np.count_nonzero(edges)) / edges.size


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the tile's interior (grayscale units squared)."""
    g = gray.astype(np.float32)
    laplacian = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(laplacian.var())


def judge_tile(
    rgb: np.ndarray, *, white_gray: int, max_white_fraction: float, min_edge_fraction: float
) -> TileVerdict:
    """Keep or reject one RGB uint8 tile; the white test runs first because it is ~100x cheaper."""
    gray = to_gray(rgb)
    white = white_fraction(gray, white_gray)
    if white > max_white_fraction:
        return TileVerdict("white", white, None, None)
    edges = edge_fraction(gray)
    score = laplacian_variance(gray)
    return TileVerdict("blur" if edges < min_edge_fraction else None, white, edges, score)
