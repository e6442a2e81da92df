"""Tiling one slide end to end: the store (docs/ARCHITECTURE.md, "Tile store"), the QC image, and what
the filters remove."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.synthetic import blank_glass, blurred, read_level0
from wsi_pipeline.errors import SlideError
from wsi_pipeline.slides.reader import OpenSlideReader
from wsi_pipeline.stores.tile_store import read_tile_store, store_path
from wsi_pipeline.tiling.config import TileConfig
from wsi_pipeline.tiling.geometry import grid_coords
from wsi_pipeline.tiling.qc import INK
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
    assert store.tissue_fraction.dtype == np.float32 and (store.tissue_fraction >= 0.2).all()
    assert store.blur_score.dtype == np.float32 and (store.blur_score >= TileConfig().min_focus).all()
    assert store.thumbnail.dtype == np.uint8 and store.thumbnail.shape[2] == 3
    assert store.tissue_mask.dtype == bool and store.tissue_mask.shape == store.thumbnail.shape[:2]
    assert set(meta.rejected) == {"tissue", "ink", "white", "blur"}
    assert meta.n_kept + sum(meta.rejected.values()) == meta.model_extra["n_grid"]
    assert meta.n_candidates == meta.n_kept + meta.rejected["white"] + meta.rejected["blur"]
    assert outcome.fields["recall"] == f"{meta.tissue_recall:.2f}"


def test_cmu_keeps_as_many_tiles_as_stamp_and_most_of_the_tissue(cmu_result) -> None:
    """STAMP v2.5 keeps 18 tiles of this slide at the same geometry (measured for issue 15); the grid at
    (0, 0) with whole tiles and min_tissue 0.5 kept 6 and covered 54 % of the tissue."""
    meta = cmu_result[1].meta
    assert meta.n_kept >= 18
    assert meta.tissue_recall >= 0.8


def test_cmu_coords_are_whole_tiles_inside_the_slide(cmu_result) -> None:
    """Tiles overlap only where an edge tile was moved inward to end at the slide's edge."""
    store = cmu_result[1]
    coords, side = store.coords, store.meta.tile_px_level0
    assert (coords >= 0).all() and (coords[:, 0] + side <= 2220).all() and (coords[:, 1] + side <= 2967).all()
    assert len({tuple(c) for c in coords}) == len(coords)
    at_edge = (
        (coords[:, 0] == 0)
        | (coords[:, 1] == 0)
        | (coords[:, 0] == 2220 - side)
        | (coords[:, 1] == 2967 - side)
    )
    for i, j in zip(*np.triu_indices(len(coords), 1), strict=True):
        overlaps = (np.abs(coords[i] - coords[j]) < side).all()
        assert not overlaps or at_edge[i] or at_edge[j]


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
    # The outline is yellow inside black, so it shows on white glass and on dark stain alike.
    assert np.all(pixels == (240, 228, 66), axis=2).sum() > 500
    assert np.all(pixels == (0, 0, 0), axis=2).sum() > 500
    assert not np.all(pixels[: store.thumbnail.shape[0]] == INK, axis=2).any()  # no ink on this slide


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


@pytest.mark.parametrize("sigma_um", [1.0, 3.0])
def test_blurred_copy_of_a_real_slide_keeps_at_most_30_percent(
    cmu_result, cmu_slide: Path, slide_factory, tmp_path: Path, sigma_um: float
) -> None:
    """Out of focus by a Gaussian of 1 or 3 µm at scan resolution (0.499 µm/px): STAMP's edge rule alone
    kept every tile of a 2 µm copy."""
    sharp = cmu_result[1].meta
    soft = slide_factory("soft.tif", blurred(read_level0(cmu_slide), sigma_um / 0.499), mpp=0.499)
    outcome, store = run(soft, tmp_path / "out")
    meta = store.meta
    assert meta.n_candidates >= 0.8 * sharp.n_candidates  # the tissue mask still finds the tissue
    assert meta.n_kept <= 0.3 * sharp.n_kept
    assert outcome.fields["blurry"] == meta.rejected["blur"] >= 0.7 * meta.n_candidates


def test_blank_slide_keeps_nothing_and_says_the_tissue_filter_did_it(slide_factory, tmp_path: Path) -> None:
    path = slide_factory("blank.tif", blank_glass(3000, 2400), mpp=0.5)
    outcome, store = run(path, tmp_path / "out")
    assert outcome.status == "done" and store.n_tiles == 0 and store.coords.shape == (0, 2)
    n_grid = store.meta.model_extra["n_grid"]
    assert store.meta.rejected["tissue"] == n_grid == len(grid_coords((3000, 2400), 512)) == 6 * 5
    assert store.meta.tissue_recall == 1.0  # nothing to cover
    assert "0 tiles kept" in outcome.reason and "tissue filter" in outcome.reason
    assert qc_path(tmp_path / "out", "blank").exists()


def test_blank_slide_without_tissue_filter_loses_everything_to_the_white_filter(
    slide_factory, tmp_path: Path
) -> None:
    path = slide_factory("blank.tif", blank_glass(3000, 2400), mpp=0.5)
    outcome, store = run(path, tmp_path / "out", min_tissue=0.0)
    assert store.n_tiles == 0 and store.meta.rejected["white"] == store.meta.n_candidates == 30
    assert "white filter removed 30" in outcome.reason and "--max-white-fraction" in outcome.reason


def test_slide_smaller_than_a_tile(slide_factory, tmp_path: Path) -> None:
    path = slide_factory("tiny.tif", blank_glass(400, 300), mpp=0.5)
    outcome, store = run(path, tmp_path / "out")
    assert store.n_tiles == 0 and "smaller than one 256 µm tile" in outcome.reason


def test_geometry_options_change_the_grid(cmu_slide: Path, tmp_path: Path) -> None:
    store = run(cmu_slide, tmp_path, tile_um=128, tile_px=112, min_tissue=0.25)[1]
    assert store.meta.tile_px_level0 == round(128 / 0.499) == 257
    assert store.meta.model_extra["n_grid"] >= (2220 // 257) * (2967 // 257)
    assert (store.coords[:, 0] + 257 <= 2220).all() and (store.coords[:, 1] + 257 <= 2967).all()
    assert (store.tissue_fraction >= 0.25).all()


def test_all_tissue_field_keeps_every_tile_that_is_not_glass(
    tcga_pixels: np.ndarray, slide_factory, tmp_path: Path
) -> None:
    """A crop of the TCGA slide that is tissue edge to edge (pale stroma and dense tumour): Otsu alone
    splits it into two classes of tissue (test_tissue.py) and dropped the pale half."""
    path = slide_factory("field.tif", np.ascontiguousarray(tcga_pixels[1000:2600, 1000:2600]), mpp=0.5)
    store = run(path, tmp_path / "out", tile_um=128)[1]
    meta = store.meta
    n_grid = meta.model_extra["n_grid"]
    assert n_grid >= 36 and meta.rejected["tissue"] == 0 and meta.rejected["ink"] == 0
    assert meta.n_kept == n_grid - meta.rejected["white"] and meta.rejected["white"] <= 2
    assert meta.tissue_recall >= 0.95


@pytest.mark.parametrize("ink", [(60, 170, 90), (40, 70, 200), (50, 50, 50)], ids=["green", "blue", "black"])
def test_no_kept_tile_lies_under_a_marker_stroke(
    cmu_result, cmu_slide: Path, slide_factory, tmp_path: Path, ink: tuple[int, int, int]
) -> None:
    """A translucent marker stroke (the ink multiplies the tissue's colour) across the middle of the
    tissue of the real slide: every tile it touches is dropped, the rest stay, and the QC shows the ink."""
    pixels = read_level0(cmu_slide).copy()
    stroke = np.zeros(pixels.shape[:2], bool)
    stroke[1300:1600, 500:1900] = True  # 150 µm wide, across the tissue strip
    pixels[stroke] = (pixels[stroke].astype(np.float32) * np.array(ink) / 255).astype(np.uint8)
    outcome, store = run(slide_factory("inked.tif", pixels, mpp=0.499), tmp_path / "out")
    side = store.meta.tile_px_level0
    for x, y in store.coords:
        assert not stroke[y : y + side, x : x + side].any(), f"kept tile at {(x, y)} is under the ink"
    assert store.meta.rejected["ink"] >= 3
    assert store.n_tiles >= cmu_result[1].n_tiles - store.meta.rejected["ink"] - 2
    assert not store.tissue_mask[
        1400 * store.tissue_mask.shape[0] // 2967, 1200 * store.tissue_mask.shape[1] // 2220
    ]
    with Image.open(outcome.fields["qc"]) as image:
        drawn = np.asarray(image.convert("RGB"))[: store.thumbnail.shape[0]]  # not the legend
    assert np.all(drawn == INK, axis=2).sum() > 100


def test_implausible_mpp_fails_before_any_pixel_is_read(
    tcga_slide: Path, tmp_path: Path, monkeypatch
) -> None:
    """--mpp 40 (an objective power typed as µm/px) once read 247,916 tiles of 6 px."""

    def no_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pixel was read before the resolution was checked")

    for method in ("read_region", "read_tile", "thumbnail"):
        monkeypatch.setattr(OpenSlideReader, method, no_reads)
    with pytest.raises(SlideError) as error:
        run(tcga_slide, tmp_path / "out", mpp=40)
    message = str(error.value)
    assert "40 µm/px" in message and "objective power" in message and "\n" not in message
    assert not list((tmp_path / "out").glob("*"))  # nothing written either


def test_mpp_contradicting_the_metadata_warns_and_override_makes_it_win(
    cmu_slide: Path, tmp_path: Path
) -> None:
    outcome, store = run(cmu_slide, tmp_path / "fallback", mpp=0.25)
    assert (store.meta.mpp_level0, store.meta.mpp_source) == (pytest.approx(0.499), "metadata")
    assert "--mpp 0.25 contradicts the 0.499 µm/px" in outcome.reason and "--mpp-override" in outcome.reason
    assert outcome.fields["warning"]
    outcome, store = run(cmu_slide, tmp_path / "override", mpp=0.25, mpp_override=True)
    assert (store.meta.mpp_level0, store.meta.mpp_source, store.meta.tile_px_level0) == (
        0.25,
        "mpp-override",
        1024,
    )
    assert "is used (--mpp-override)" in outcome.reason
    assert run(cmu_slide, tmp_path / "close", mpp=0.55)[0].reason == ""  # within 25 %: silent
