"""Tiling one slide end to end: the store (DESIGN §3), the QC image, and what the filters remove."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.synthetic import blank_glass, blurred
from wsi_pipeline.stores.tile_store import read_tile_store, store_path
from wsi_pipeline.tiling.config import TileConfig
from wsi_pipeline.tiling.slide import SlideJob, qc_path, tile_slide


def run(slide: Path, out: Path, threads: int = 1, **settings: object):
    outcome = tile_slide(SlideJob(slide, out, TileConfig(**settings), threads))
    return outcome, read_tile_store(store_path(out, outcome.slide_id))


@pytest.fixture(scope="module")
def cmu_result(cmu_slide: Path, tmp_path_factory: pytest.TempPathFactory):
    return run(cmu_slide, tmp_path_factory.mktemp("cmu"))


def test_cmu_store_follows_the_contract(cmu_result, cmu_slide: Path) -> None:
    outcome, store = cmu_result
    meta = store.meta
    assert outcome.status == "done" and outcome.reason == ""
    assert (meta.tile_px, meta.tile_um, meta.tile_px_level0, meta.read_level) == (224, 256.0, 513, 0)
    assert (meta.mpp_level0, meta.mpp_source) == (pytest.approx(0.499), "metadata")
    assert meta.slide_id == "CMU-1-Small-Region" and Path(meta.slide_path) == cmu_slide.resolve()
    assert (meta.slide_bytes, meta.slide_mtime) == (cmu_slide.stat().st_size, cmu_slide.stat().st_mtime)
    assert meta.thresholds == TileConfig().thresholds()
    assert meta.model_extra["config"] == TileConfig().model_dump(mode="json")

    n = store.n_tiles
    assert n > 0 and n == meta.n_kept
    assert store.coords.dtype == np.int64 and store.coords.shape == (n, 2)
    assert store.tissue_fraction.dtype == np.float32 and (store.tissue_fraction >= 0.5).all()
    assert store.blur_score.dtype == np.float32 and (store.blur_score > 0).all()
    assert store.thumbnail.dtype == np.uint8 and store.thumbnail.shape[2] == 3
    assert store.tissue_mask.dtype == bool and store.tissue_mask.shape == store.thumbnail.shape[:2]
    assert meta.n_kept + sum(meta.rejected.values()) == meta.model_extra["n_grid"] == 4 * 5
    assert meta.n_candidates == meta.n_kept + meta.rejected["white"] + meta.rejected["blur"]


def test_cmu_coords_are_whole_tiles_inside_the_slide_without_overlap(cmu_result) -> None:
    store = cmu_result[1]
    coords, side = store.coords, store.meta.tile_px_level0
    assert (coords >= 0).all() and (coords[:, 0] + side <= 2220).all() and (coords[:, 1] + side <= 2967).all()
    assert (coords % side == 0).all() and len({tuple(c) for c in coords}) == len(coords)


def test_cmu_qc_image(cmu_result) -> None:
    outcome, store = cmu_result
    path = Path(str(outcome.fields["qc"]))
    assert (
        path == qc_path(path.parent, "CMU-1-Small-Region") and store.meta.model_extra["qc_png"] == path.name
    )
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width == store.thumbnail.shape[1]
        assert image.height > store.thumbnail.shape[0]  # the legend strip
        pixels = np.asarray(image.convert("RGB"))
    kept_outline = np.all(pixels == (0, 158, 115), axis=2)
    assert kept_outline.any()


def test_pyramid_copy_reads_level_1_and_keeps_the_same_tiles(
    cmu_result, cmu_pyramid_slide: Path, tmp_path: Path
) -> None:
    store = run(cmu_pyramid_slide, tmp_path)[1]
    assert (store.meta.read_level, store.meta.model_extra["read_px"]) == (1, round(513 / 2))
    assert store.coords.tolist() == cmu_result[1].coords.tolist()


def test_threads_give_the_same_store(tcga_slide: Path, tmp_path: Path) -> None:
    one = run(tcga_slide, tmp_path / "one", threads=1, mpp=0.5)[1]
    two = run(tcga_slide, tmp_path / "two", threads=3, mpp=0.5)[1]
    assert one.n_tiles > 20
    np.testing.assert_array_equal(one.coords, two.coords)
    np.testing.assert_array_equal(one.blur_score, two.blur_score)


def test_blurred_copy_of_a_real_slide_loses_most_tiles_to_the_blur_filter(
    tcga_pixels: np.ndarray, slide_factory, tmp_path: Path
) -> None:
    sharp = slide_factory("tcga_copy.tif", tcga_pixels, mpp=0.5)
    # Gaussian sigma of 4 µm: a clearly out-of-focus scan (STAMP's rule lets milder blur through).
    soft = slide_factory("tcga_blurred.tif", blurred(tcga_pixels, 8), mpp=0.5)
    sharp_meta = run(sharp, tmp_path / "out")[1].meta
    soft_outcome, soft_store = run(soft, tmp_path / "out")
    assert sharp_meta.n_candidates > 20 and sharp_meta.rejected["blur"] <= 0.1 * sharp_meta.n_candidates
    meta = soft_store.meta
    assert meta.n_candidates >= 0.8 * sharp_meta.n_candidates  # the tissue mask still finds the tissue
    assert meta.rejected["blur"] >= 0.8 * meta.n_candidates
    assert soft_outcome.fields["blurry"] == meta.rejected["blur"]


def test_blank_slide_keeps_nothing_and_says_the_tissue_filter_did_it(slide_factory, tmp_path: Path) -> None:
    path = slide_factory("blank.tif", blank_glass(3000, 2400), mpp=0.5)
    outcome, store = run(path, tmp_path / "out")
    assert outcome.status == "done" and store.n_tiles == 0 and store.coords.shape == (0, 2)
    assert store.meta.rejected["tissue"] == store.meta.model_extra["n_grid"] == 5 * 4
    assert "0 tiles kept" in outcome.reason and "tissue filter" in outcome.reason
    assert qc_path(tmp_path / "out", "blank").exists()


def test_blank_slide_without_tissue_filter_loses_everything_to_the_white_filter(
    slide_factory, tmp_path: Path
) -> None:
    path = slide_factory("blank.tif", blank_glass(3000, 2400), mpp=0.5)
    outcome, store = run(path, tmp_path / "out", min_tissue=0.0)
    assert store.n_tiles == 0 and store.meta.rejected["white"] == store.meta.n_candidates == 20
    assert "white filter removed 20" in outcome.reason and "--max-white-fraction" in outcome.reason


def test_slide_smaller_than_a_tile(slide_factory, tmp_path: Path) -> None:
    path = slide_factory("tiny.tif", blank_glass(400, 300), mpp=0.5)
    outcome, store = run(path, tmp_path / "out")
    assert store.n_tiles == 0 and "smaller than one 256 µm tile" in outcome.reason


def test_geometry_options_change_the_grid(cmu_slide: Path, tmp_path: Path) -> None:
    store = run(cmu_slide, tmp_path, tile_um=128, tile_px=112, min_tissue=0.25)[1]
    assert store.meta.tile_px_level0 == round(128 / 0.499)
    assert store.meta.model_extra["n_grid"] == (2220 // 257) * (2967 // 257)
    assert (store.coords % 257 == 0).all() and (store.tissue_fraction >= 0.25).all()
