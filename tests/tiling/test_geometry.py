"""Tile geometry: µm to level-0 pixels, the read level, the grid, and tissue fractions from the mask."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.synthetic import blank_glass
from wsi_pipeline.errors import SlideError
from wsi_pipeline.slides import open_slide
from wsi_pipeline.tiling.geometry import (
    grid_coords,
    place_grid,
    plan_geometry,
    tissue_fractions,
    tissue_recall,
)


def test_cmu_geometry(cmu_slide: Path) -> None:
    with open_slide(cmu_slide) as reader:
        geometry = plan_geometry(reader, 0.499, 256, 224)
    assert geometry.tile_px_level0 == round(256 / 0.499) == 513
    assert (geometry.read_level, geometry.read_px) == (0, 513)


def test_pyramid_reads_the_finest_level_not_coarser_than_the_target(cmu_pyramid_slide: Path) -> None:
    with open_slide(cmu_pyramid_slide) as reader:
        geometry = plan_geometry(reader, 0.499, 256, 224)
        target_downsample = geometry.tile_px_level0 / geometry.tile_px  # level-0 px per output px
        assert reader.level_downsamples[1] <= target_downsample < reader.level_downsamples[2]
    assert geometry.read_level == 1
    assert geometry.read_px == round(513 / geometry.read_downsample)


def test_40x_slide_reads_level_2_of_a_power_of_two_pyramid(slide_factory) -> None:
    path = slide_factory("x40.tif", blank_glass(2400, 1600), mpp=0.25, downsamples=(1, 2, 4, 8))
    with open_slide(path) as reader:
        geometry = plan_geometry(reader, 0.25, 256, 224)
    assert geometry.tile_px_level0 == 1024
    assert (geometry.read_level, geometry.read_px) == (2, 256)


def test_grid_covers_the_whole_slide_with_whole_tiles_inside_it() -> None:
    """STAMP's 5 x 6 = 30 tiles on CMU-1-Small-Region, but the edge tiles end at the edge instead of
    being padded with white: they overlap their neighbour."""
    coords = grid_coords((2220, 2967), 513)
    assert coords.dtype == np.int64 and coords.shape == (5 * 6, 2)
    assert (coords >= 0).all()
    assert (coords[:, 0] + 513 <= 2220).all() and (coords[:, 1] + 513 <= 2967).all()
    assert len({tuple(c) for c in coords}) == len(coords)
    assert sorted(set(coords[:, 0].tolist())) == [0, 513, 1026, 1539, 2220 - 513]
    assert sorted(set(coords[:, 1].tolist())) == [0, 513, 1026, 1539, 2052, 2967 - 513]
    assert coords[:, 1].tolist() == sorted(coords[:, 1].tolist())  # row by row
    covered = np.zeros((2967, 2220), bool)
    for x, y in coords:
        covered[y : y + 513, x : x + 513] = True
    assert covered.all()  # no strip of the slide is left out


def test_grid_offset_shifts_the_lattice_and_adds_edge_tiles() -> None:
    xs = sorted(set(grid_coords((2220, 600), 513, offset=(256, 0))[:, 0].tolist()))
    # The lattice at 256 + k * 513; the 256 px strip before it and the 425 px strip after it
    # (1282 + 513 = 1795) each get a tile that ends at the slide's edge.
    assert xs == [0, 256, 769, 1282, 2220 - 513]


def test_strips_thinner_than_a_quarter_tile_get_no_tile() -> None:
    xs = sorted(set(grid_coords((1100, 513), 513)[:, 0].tolist()))
    assert xs == [0, 513]  # 1100 - 1026 = 74 px < 513 / 4


def test_slide_smaller_than_a_tile_has_an_empty_grid() -> None:
    assert grid_coords((500, 400), 513).shape == (0, 2)


def test_place_grid_centres_the_lattice_on_a_small_piece_of_tissue() -> None:
    """A 512 px square of tissue that a grid at (0, 0) cuts into four quarters."""
    mask = np.zeros((64, 64), bool)  # 32 level-0 px per mask pixel
    mask[12:28, 12:28] = True  # level-0 384..896 on both axes
    at_origin = tissue_fractions(mask, (2048, 2048), grid_coords((2048, 2048), 512), 512)
    assert at_origin.max() < 0.6
    grid, fractions = place_grid(mask, (2048, 2048), 512, 0.5)
    assert [384, 384] in grid.tolist()
    assert fractions.max() == pytest.approx(1.0)
    assert tissue_recall(mask, (2048, 2048), grid[fractions >= 0.5], 512) == pytest.approx(1.0)


def test_tissue_recall_is_the_covered_share_of_the_mask() -> None:
    mask = np.zeros((10, 10), bool)
    mask[:, :4] = True  # level-0 x 0..400
    assert tissue_recall(mask, (1000, 1000), np.array([[0, 0]]), 1000) == 1.0
    assert tissue_recall(mask, (1000, 1000), np.array([[0, 0]]), 500) == pytest.approx(0.5)
    assert tissue_recall(mask, (1000, 1000), np.zeros((0, 2), np.int64), 500) == 0.0
    assert tissue_recall(np.zeros((10, 10), bool), (1000, 1000), np.zeros((0, 2), np.int64), 500) == 1.0


def test_a_tile_of_a_few_pixels_is_refused_naming_objective_power(cmu_slide: Path) -> None:
    """256 µm at "40 µm/px" (an objective power typed as µm/px) would be a 6 px tile."""
    with open_slide(cmu_slide) as reader, pytest.raises(SlideError) as error:
        plan_geometry(reader, 40.0, 256, 224)
    message = str(error.value)
    assert "only 6 level-0 px" in message and "objective power" in message and "\n" not in message


def _brute_force_fractions(
    mask: np.ndarray, level0_px: tuple[int, int], coords: np.ndarray, tile: int
) -> np.ndarray:
    """Upsample the mask to level 0 (an integer factor) and average each tile's pixels."""
    factor = level0_px[0] // mask.shape[1]
    full = np.kron(mask.astype(np.float64), np.ones((factor, factor)))
    return np.array([full[y : y + tile, x : x + tile].mean() for x, y in coords])


@settings(max_examples=40, deadline=None)
@given(
    mask_shape=st.tuples(st.integers(2, 12), st.integers(2, 12)),
    factor=st.integers(1, 9),
    tile=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_tissue_fraction_is_the_exact_covered_area(
    mask_shape: tuple[int, int], factor: int, tile: int, seed: int
) -> None:
    mask = np.random.default_rng(seed).random(mask_shape) > 0.5
    level0_px = (mask_shape[1] * factor, mask_shape[0] * factor)
    coords = grid_coords(level0_px, tile)
    expected = _brute_force_fractions(mask, level0_px, coords, tile)
    np.testing.assert_allclose(tissue_fractions(mask, level0_px, coords, tile), expected, atol=1e-5)


def test_tissue_fraction_of_full_and_empty_masks() -> None:
    coords = grid_coords((1000, 800), 100)
    assert (tissue_fractions(np.ones((80, 100), bool), (1000, 800), coords, 100) == 1).all()
    assert (tissue_fractions(np.zeros((80, 100), bool), (1000, 800), coords, 100) == 0).all()
    assert tissue_fractions(np.ones((8, 10), bool), (1000, 800), coords[:0], 100).shape == (0,)


def test_tissue_fraction_of_half_a_tile() -> None:
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True  # left half of the slide
    fractions = tissue_fractions(mask, (1000, 1000), np.array([[450, 0], [0, 0], [500, 0]]), 100)
    assert fractions == pytest.approx([0.5, 1.0, 0.0])
