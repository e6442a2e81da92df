"""Where tiles are and how they are read: a grid of `tile_um` squares in level-0 pixels.

The grid starts at the slide's top-left corner and holds only whole tiles, so every tile lies inside the
scanned image (no padded edge tiles whose white border would bias both the filters and the features).
Each tile is read from the coarsest pyramid level that is not coarser than the target resolution and
resized to `tile_px`: reading a level nearer the target is the largest speed-up tiling has.
"""

from dataclasses import dataclass

import numpy as np

from wsi_pipeline.errors import SlideError
from wsi_pipeline.slides.reader import SlideReader


@dataclass(frozen=True)
class TileGeometry:
    tile_um: float
    tile_px: int
    mpp_level0: float
    tile_px_level0: int  # side of a tile in level-0 pixels
    read_level: int
    read_downsample: float  # level-0 pixels per pixel of `read_level`
    read_px: int  # side of the square read at `read_level`, before resizing to `tile_px`

    @property
    def target_downsample(self) -> float:
        """Level-0 pixels per output pixel."""
        return self.tile_px_level0 / self.tile_px


def plan_geometry(reader: SlideReader, mpp_level0: float, tile_um: float, tile_px: int) -> TileGeometry:
    tile_px_level0 = round(tile_um / mpp_level0)
    if tile_px_level0 < 1:
        raise SlideError(
            f"{reader.path.name}: a {tile_um} µm tile is smaller than one pixel at {mpp_level0} µm/px"
        )
    level = reader.best_level_for_downsample(tile_px_level0 / tile_px)
    downsample = reader.level_downsamples[level]
    return TileGeometry(
        tile_um=tile_um,
        tile_px=tile_px,
        mpp_level0=mpp_level0,
        tile_px_level0=tile_px_level0,
        read_level=level,
        read_downsample=downsample,
        read_px=max(1, round(tile_px_level0 / downsample)),
    )


def grid_coords(level0_px: tuple[int, int], tile_px_level0: int) -> np.ndarray:
    """(N, 2) int64 top-left (x, y) of every whole tile, row by row."""
    width, height = level0_px
    xs = np.arange(width // tile_px_level0, dtype=np.int64) * tile_px_level0
    ys = np.arange(height // tile_px_level0, dtype=np.int64) * tile_px_level0
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def tissue_fractions(
    mask: np.ndarray, level0_px: tuple[int, int], coords: np.ndarray, tile_px_level0: int
) -> np.ndarray:
    """Fraction of each tile's area that the thumbnail mask calls tissue, exact for any tile/mask scale.

    A tile rarely covers whole thumbnail pixels, so the mask is integrated over the tile's real footprint:
    the integral of a pixelwise-constant image is bilinear inside each pixel, so bilinear interpolation of
    its summed-area table gives the exact covered area, also for tiles a few thumbnail pixels wide.
    """
    if coords.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    mask_h, mask_w = mask.shape
    width, height = level0_px
    scale_x, scale_y = mask_w / width, mask_h / height
    table = np.zeros((mask_h + 1, mask_w + 1), dtype=np.float64)
    table[1:, 1:] = mask.astype(np.float64).cumsum(axis=0).cumsum(axis=1)

    x0 = np.clip(coords[:, 0] * scale_x, 0, mask_w)
    x1 = np.clip((coords[:, 0] + tile_px_level0) * scale_x, 0, mask_w)
    y0 = np.clip(coords[:, 1] * scale_y, 0, mask_h)
    y1 = np.clip((coords[:, 1] + tile_px_level0) * scale_y, 0, mask_h)
    area = (
        _interpolate(table, x1, y1)
        - _interpolate(table, x0, y1)
        - _interpolate(table, x1, y0)
        + _interpolate(table, x0, y0)
    )
    footprint = (x1 - x0) * (y1 - y0)
    return np.clip(area / np.maximum(footprint, 1e-12), 0.0, 1.0).astype(np.float32)


def _interpolate(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ix = np.minimum(np.floor(x).astype(np.int64), table.shape[1] - 2)
    iy = np.minimum(np.floor(y).astype(np.int64), table.shape[0] - 2)
    fx, fy = x - ix, y - iy
    return (
        (1 - fx) * (1 - fy) * table[iy, ix]
        + fx * (1 - fy) * table[iy, ix + 1]
        + (1 - fx) * fy * table[iy + 1, ix]
        + fx * fy * table[iy + 1, ix + 1]
    )
