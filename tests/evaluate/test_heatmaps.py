"""Heatmap rasters, PNGs, GeoJSON polygons and top-k strips; bounded on 100k-tile slides."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.stores.helpers import make_meta
from wsi_pipeline.inference import heatmaps as hm
from wsi_pipeline.stores.tile_store import TileStore, store_path, write_tile_store

SLIDES = Path(__file__).resolve().parents[1] / "data" / "slides"


def test_each_tile_paints_its_own_footprint() -> None:
    coords = np.array([[0, 0], [16, 0], [32, 16]])
    raster = hm.paint_scores((10, 12), coords, 16, np.array([1.0, 2.0, 3.0]), downsample=4.0)
    assert raster.shape == (10, 12)
    assert (
        np.all(raster[0:4, 0:4] == 1.0)
        and np.all(raster[0:4, 4:8] == 2.0)
        and np.all(raster[4:8, 8:12] == 3.0)
    )
    assert (
        np.isnan(raster[4:8, 0:8]).all() and np.isnan(raster[8:, :]).all() and np.isnan(raster[0:4, 8:]).all()
    )


def test_tiles_smaller_than_a_canvas_pixel_still_show() -> None:
    raster = hm.paint_scores(
        (4, 4), np.array([[100, 100], [990, 990]]), 8, np.array([5.0, 6.0]), downsample=250.0
    )
    assert raster[0, 0] == 5.0 and raster[3, 3] == 6.0 and np.isnan(raster).sum() == 14


def test_100k_tiles_stay_on_a_thumbnail_sized_raster_and_stream_to_geojson(tmp_path: Path) -> None:
    side = 317
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:100_000] * 512
    scores = np.random.default_rng(0).random(len(grid)).astype(np.float32)
    canvas = hm.blank_canvas(grid, 512, max_px=1024)
    assert max(canvas.image.shape[:2]) == 1024 and canvas.source == "blank"
    raster = hm.paint_scores(canvas.image.shape[:2], grid, 512, scores, canvas.downsample)
    assert raster.shape == canvas.image.shape[:2] and np.isfinite(raster).mean() > 0.9
    path = tmp_path / "big.geojson"
    hm.write_tiles_geojson(path, grid, 512, scores, "attention")
    features = json.loads(path.read_text())["features"]
    assert len(features) == 100_000
    assert features[-1]["geometry"]["coordinates"][0][0] == [int(grid[-1, 0]), int(grid[-1, 1])]


def test_geojson_is_one_closed_square_per_tile_with_its_score(tmp_path: Path) -> None:
    coords = np.array([[0, 0], [512, 0], [1024, 2048]])
    scores = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    path = tmp_path / "s.geojson"
    hm.write_tiles_geojson(path, coords, 512, scores, "relevance")
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 3
    for (x, y), score, feature in zip(coords, scores, collection["features"], strict=True):
        ring = feature["geometry"]["coordinates"][0]
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        assert ring == [[x, y], [x + 512, y], [x + 512, y + 512], [x, y + 512], [x, y]]
        properties = feature["properties"]
        assert properties["objectType"] == "tile" and properties["score"] == pytest.approx(score)
        assert properties["measurements"]["relevance score"] == pytest.approx(score)
    assert [f["properties"]["rank"] for f in collection["features"]] == [2, 3, 1]
    assert not list(tmp_path.glob(".*"))


def _tile_store(path: Path, thumbnail: np.ndarray, downsample: float) -> None:
    meta = make_meta(slide_id=path.stem, thumbnail_downsample=downsample, n_candidates=0, n_kept=0)
    empty = np.zeros(0, np.float32)
    write_tile_store(
        path,
        TileStore(
            np.zeros((0, 2), np.int64), empty, empty, thumbnail, np.zeros(thumbnail.shape[:2], bool), meta
        ),
    )


def test_heatmap_png_over_a_tile_store_thumbnail(tmp_path: Path) -> None:
    thumbnail = np.full((60, 80, 3), 200, np.uint8)
    _tile_store(store_path(tmp_path, "slide"), thumbnail, downsample=32.0)
    canvas = hm.thumbnail_canvas(store_path(tmp_path, "slide"), max_px=1024)
    assert (
        canvas.source == "thumbnail" and canvas.downsample == 32.0 and np.array_equal(canvas.image, thumbnail)
    )
    shrunk = hm.thumbnail_canvas(store_path(tmp_path, "slide"), max_px=40)
    assert shrunk.image.shape == (30, 40, 3) and shrunk.downsample == 64.0
    coords = np.array([[0, 0], [512, 512], [1024, 0]])
    raster = hm.paint_scores(
        canvas.image.shape[:2], coords, 512, np.array([0.1, 0.5, 0.9]), canvas.downsample
    )
    assert raster[20, 20] == 0.5 and raster[0, 40] == 0.9
    png = tmp_path / "slide.png"
    hm.save_heatmap_png(png, canvas, raster, "slide: predicted b (p=0.90), true b", "attention", 0.5)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_tile_size_falls_back_to_the_grid_stride() -> None:
    coords = np.array([[0, 0], [448, 0], [896, 448]])
    assert hm.tile_px_level0_of({"tile_px_level0": None}, coords, Path("b.h5")) == 448
    assert hm.tile_px_level0_of({"tile_px_level0": 512}, coords, Path("b.h5")) == 512


def test_the_slide_is_found_under_slides_root() -> None:
    slide = hm.find_slide("CMU-1-Small-Region", "/elsewhere/CMU-1-Small-Region.svs", SLIDES)
    assert slide == SLIDES / "CMU-1-Small-Region.svs"
    assert hm.find_slide("CMU-1-Small-Region", None, SLIDES) == slide
    assert hm.find_slide("nope", "/elsewhere/nope.svs", SLIDES) is None


def test_the_strip_reads_the_k_best_tiles_best_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which tiles the strip shows: the regions read from the slide, recorded, are the top-k by score."""
    read_at: list[tuple[int, int]] = []
    open_slide = hm.open_slide

    def recording_open_slide(path: Path):
        context = open_slide(path)
        reader = context.__enter__()
        original = reader.read_region

        def read_region(x: int, y: int, *args: object, **kwargs: object) -> np.ndarray:
            read_at.append((x, y))
            return original(x, y, *args, **kwargs)

        monkeypatch.setattr(reader, "read_region", read_region)
        return _Entered(context, reader)

    monkeypatch.setattr(hm, "open_slide", recording_open_slide)  # the reader the strip opens slides with
    coords = np.array([[0, 0], [512, 512], [1024, 1024], [1536, 512]])
    png = tmp_path / "strip.png"
    scores = np.array([0.1, 0.9, 0.5, 0.7])
    shown = hm.save_top_tiles(png, SLIDES / "CMU-1-Small-Region.svs", coords, 512, scores, 3, 64, "top 3")
    assert shown == 3
    assert read_at == [(512, 512), (1536, 512), (1024, 1024)]  # scores 0.9, 0.7, 0.5; never 0.1
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]


class _Entered:
    """A context manager handing out an already-entered reader, and closing it on exit."""

    def __init__(self, context: object, reader: object) -> None:
        self._context, self._reader = context, reader

    def __enter__(self) -> object:
        return self._reader

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)  # type: ignore[attr-defined]
