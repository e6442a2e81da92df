"""The pixels of one tile-store row, read the same way by every stage.

A tile covers `tile_px_level0` level-0 pixels. It is read from `read_level` (the level the tiler chose: the
coarsest one not coarser than the target scale), where it spans `round(tile_px_level0 / read_downsample)`
pixels, and resized to `tile_px` with the one shared resize (`SlideReader.read_tile` / `resize_tile`).
Tiling (filters, QC) and extraction (features) must see identical pixels, so a store row becomes an image
only here.
"""

from typing import Protocol

import numpy as np

from wsi_pipeline.slides.reader import SlideReader


class TileGeometry(Protocol):
    """What fixes a tile's pixels; `TileStoreMeta` and the tiler's geometry both have these attributes."""

    tile_px: int
    tile_px_level0: int
    read_level: int
    read_downsample: float


def read_px(geometry: TileGeometry) -> int:
    """Side of a tile in pixels at its read level (as recorded by the tiler when it recorded it)."""
    recorded = getattr(geometry, "read_px", None)
    return int(recorded) if recorded else max(1, round(geometry.tile_px_level0 / geometry.read_downsample))


def read_tile(reader: SlideReader, geometry: TileGeometry, x_level0: int, y_level0: int) -> np.ndarray:
    """RGB uint8 (tile_px, tile_px, 3) of the tile whose level-0 top-left is (x_level0, y_level0)."""
    return reader.read_tile(
        int(x_level0), int(y_level0), int(geometry.read_level), read_px(geometry), int(geometry.tile_px)
    )
