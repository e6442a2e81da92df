"""Where tiles are and how they are read: a grid of `tile_um` squares in level-0 pixels.

The grid is a lattice of the tile side whose offset is chosen per slide (`place_grid`): of `GRID_OFFSETS`
x `GRID_OFFSETS` offsets (steps of an eighth of a tile), the one whose tiles at or above `min_tissue`
cover the most tissue, then the one with the fewest such tiles. A lattice fixed at (0, 0) cuts small biopsies and tissue cores
badly and never sees the strip beyond the last whole tile. The grid covers the whole slide; a tile that
would cross the slide's edge is moved inward to end at it (when the strip it adds is at least a quarter
tile wide), so it overlaps its neighbour rather than being padded with white that would bias both the filters and the features. Every
tile lies inside the scanned image.

Each tile is read from the coarsest pyramid level that is not coarser than the target resolution and
resized to `tile_px`: reading a level nearer the target is the largest speed-up tiling has.
`tissue_recall` is the share of the tissue mask covered by kept tiles: how much of the evidence the
stores hold.
"""

from dataclasses import dataclass

import numpy as np

from wsi_pipeline.errors import SlideError
from wsi_pipeline.slides.reader import SlideReader

# A tile fewer level-0 pixels wide than this is upsampled noise: a wrong mpp or tile_um, refused early.
MIN_TILE_PX_LEVEL0 = 32
GRID_OFFSETS = 8  # offsets tried per axis, in steps of 1/GRID_OFFSETS of a tile
EDGE_STRIP = 0.25  # an edge strip at least this share of a tile wide gets its own (overlapping) tile


@dataclass(frozen=True)
class TileGeometry:
    tile_um: float
    tile_px: int
    mpp_level0: float
    tile_px_level0: int  # side of a tile in level-0 pixels
    read_level: int
    read_downsample: float  # level-0 pixels per pixel of `read_level`
    read_px: int  # side of the square read at `read_level`, before resizing to `tile_px`


def plan_geometry(reader: SlideReader, mpp_level0: float, tile_um: float, tile_px: int) -> TileGeometry:
    tile_px_level0 = round(tile_um / mpp_level0)
    if tile_px_level0 < MIN_TILE_PX_LEVEL0:
        raise SlideError(
            f"{reader.path.name}: a {tile_um:g} µm tile is only {tile_px_level0} level-0 px at "
            f"{mpp_level0:g} µm/px (at least {MIN_TILE_PX_LEVEL0} needed); is the µm/px an objective power, "
            "or --tile-um too small?"
        )
    read_level = reader.best_level_for_downsample(tile_px_level0 / tile_px)
    read_downsample = reader.level_downsamples[read_level]
    read_px = max(1, round(tile_px_level0 / read_downsample))
    return TileGeometry(tile_um, tile_px, mpp_level0, tile_px_level0, read_level, read_downsample, read_px)


def grid_coords(
    level0_px: tuple[int, int], tile_px_level0: int, offset: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """(N, 2) int64 top-left (x, y) of a lattice at `offset` covering the slide, row by row.

    Tiles crossing the right or bottom edge end at the edge instead (see the module docstring); a slide
    narrower or shorter than one tile has no grid.
    """
    xs = _axis(level0_px[0], tile_px_level0, offset[0])
    ys = _axis(level0_px[1], tile_px_level0, offset[1])
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def _axis(length_px: int, tile_px_level0: int, offset: int) -> np.ndarray:
    """Tile starts along one axis: the lattice, plus an edge tile where the lattice leaves a strip of at
    least `EDGE_STRIP` of a tile uncovered (a thinner strip is not worth a tile that mostly repeats)."""
    if length_px < tile_px_level0:
        return np.zeros(0, dtype=np.int64)
    first = offset % tile_px_level0
    starts = list(range(first, length_px - tile_px_level0 + 1, tile_px_level0))
    min_strip = int(EDGE_STRIP * tile_px_level0)
    if first >= min_strip or not starts:
        starts.insert(0, 0)
    if length_px - (starts[-1] + tile_px_level0) >= min_strip:
        starts.append(length_px - tile_px_level0)
    return np.unique(np.array(starts, dtype=np.int64))


def place_grid(
    mask: np.ndarray, level0_px: tuple[int, int], tile_px_level0: int, min_tissue: float
) -> tuple[np.ndarray, np.ndarray]:
    """The grid (and its tiles' tissue fractions) whose tiles at or above `min_tissue` cover the most
    tissue; of equal grids, the one with the fewest such tiles."""
    best: tuple[tuple[float, int], np.ndarray, np.ndarray] | None = None
    table = summed_area_table(mask)
    for step_x in range(GRID_OFFSETS):
        for step_y in range(GRID_OFFSETS):
            offset = (
                round(step_x * tile_px_level0 / GRID_OFFSETS),
                round(step_y * tile_px_level0 / GRID_OFFSETS),
            )
            grid = grid_coords(level0_px, tile_px_level0, offset)
            fractions = _fractions(table, level0_px, grid, tile_px_level0)
            on_tissue = (fractions >= min_tissue) & (fractions > 0)
            # Most tissue covered (to 1/1000 of a tile, so float noise cannot decide), then fewest tiles.
            score = (round(float(fractions[on_tissue].sum()), 3), -int(on_tissue.sum()))
            if best is None or score > best[0]:
                best = (score, grid, fractions)
    assert best is not None
    return best[1], best[2]


def tissue_recall(
    mask: np.ndarray, level0_px: tuple[int, int], coords: np.ndarray, tile_px_level0: int
) -> float:
    """Share of the mask's area that the tiles at `coords` cover (1.0 for a mask without tissue)."""
    if not mask.any():
        return 1.0
    covered = np.zeros(mask.shape, dtype=bool)
    scale_x, scale_y = mask.shape[1] / level0_px[0], mask.shape[0] / level0_px[1]
    for x, y in coords.tolist():
        covered[
            round(y * scale_y) : round((y + tile_px_level0) * scale_y),
            round(x * scale_x) : round((x + tile_px_level0) * scale_x),
        ] = True
    return float((mask & covered).sum() / mask.sum())


def tissue_fractions(
    mask: np.ndarray, level0_px: tuple[int, int], coords: np.ndarray, tile_px_level0: int
) -> np.ndarray:
    """Fraction of each tile's area that the thumbnail mask calls tissue, exact for any tile/mask scale.

    A tile rarely covers whole thumbnail pixels, so the mask is integrated over the tile's real footprint:
    the integral of a pixelwise-constant image is bilinear inside each pixel, so bilinear interpolation of
    its summed-area table gives the exact covered area, also for tiles a few thumbnail pixels wide.
    """
    return _fractions(summed_area_table(mask), level0_px, coords, tile_px_level0)


def summed_area_table(mask: np.ndarray) -> np.ndarray:
    """(h + 1, w + 1) cumulative sums of `mask`, computed once per mask (the grid search reuses it)."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.float64)
    table[1:, 1:] = mask.astype(np.float64).cumsum(axis=0).cumsum(axis=1)
    return table


def _fractions(
    table: np.ndarray, level0_px: tuple[int, int], coords: np.ndarray, tile_px_level0: int
) -> np.ndarray:
    if coords.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    mask_h, mask_w = table.shape[0] - 1, table.shape[1] - 1
    width, height = level0_px
    scale_x, scale_y = mask_w / width, mask_h / height
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
