"""Slide readers on real slides and synthetic TIFFs: levels, resolution metadata, reads, bad files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.synthetic import blank_glass
from wsi_pipeline.errors import SlideError
from wsi_pipeline.slides import open_slide
from wsi_pipeline.slides import reader as reader_module
from wsi_pipeline.slides.reader import OpenSlideReader, TiatoolboxReader, resize_tile


def test_cmu_metadata(cmu_slide: Path) -> None:
    with open_slide(cmu_slide) as reader:
        assert isinstance(reader, OpenSlideReader)
        assert reader.level0_px == (2220, 2967)
        assert reader.level_count == 1
        assert reader.mpp_from_metadata == pytest.approx(0.499)
        assert reader.objective_power == 20


def test_tcga_has_levels_but_no_resolution(tcga_slide: Path) -> None:
    with open_slide(tcga_slide) as reader:
        assert reader.level_dimensions == ((4443, 3567), (2221, 1783))
        assert reader.mpp_from_metadata is None
        assert reader.objective_power is None


def test_pyramid_levels_and_best_level(cmu_pyramid_slide: Path) -> None:
    with open_slide(cmu_pyramid_slide) as reader:
        assert reader.level_count == 4
        assert reader.level_downsamples[:3] == pytest.approx((1, 2, 4), rel=1e-3)
        # The coarsest level not coarser than the request (1% tolerance for stored 8.02 vs nominal 8).
        assert reader.best_level_for_downsample(1.0) == 0
        assert reader.best_level_for_downsample(1.9) == 0
        assert reader.best_level_for_downsample(513 / 224) == 1
        assert reader.best_level_for_downsample(7.99) == 3
        assert reader.best_level_for_downsample(100) == 3


@pytest.mark.parametrize("downsample", [1.0, 1.5, 2.29, 3.99, 4.0, 6.3, 8.0, 40.0])
def test_best_level_is_never_coarser_than_asked(cmu_pyramid_slide: Path, downsample: float) -> None:
    with open_slide(cmu_pyramid_slide) as reader:
        level = reader.best_level_for_downsample(downsample)
        assert reader.level_downsamples[level] <= downsample * 1.01
        finer_or_equal = [d for d in reader.level_downsamples if d <= downsample * 1.01]
        assert reader.level_downsamples[level] == max(finer_or_equal)


def test_read_tile_matches_read_region_then_resize(cmu_pyramid_slide: Path) -> None:
    """The fast OpenSlide path must give the pixels of the generic one (the filters are tested on the latter)."""
    with open_slide(cmu_pyramid_slide) as reader:
        fast = reader.read_tile(600, 900, 1, 257, 224)
        region = reader.read_region(600, 900, 1, 257, 257)
        generic = np.asarray(resize_tile(Image.fromarray(region), 224))
    assert fast.shape == (224, 224, 3) and fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, generic)


def test_reads_outside_the_slide_are_white(cmu_slide: Path) -> None:
    with open_slide(cmu_slide) as reader:
        region = reader.read_region(2220 - 100, 0, 0, 200, 50)
        tile = reader.read_tile(2220 - 100, 0, 0, 200, 100)
    assert (region[:, 100:] == 255).all()
    assert (region[:, :100] < 250).any()
    assert (tile[:, 50:] == 255).all()


def test_thumbnail_fits_and_keeps_aspect(cmu_slide: Path) -> None:
    with open_slide(cmu_slide) as reader:
        thumbnail = reader.thumbnail(512)
    assert thumbnail.dtype == np.uint8 and thumbnail.shape[2] == 3
    assert max(thumbnail.shape[:2]) == 512
    assert thumbnail.shape[1] / thumbnail.shape[0] == pytest.approx(2220 / 2967, rel=0.01)


@pytest.mark.parametrize(
    ("layout", "options", "mpp", "power", "levels"),
    [
        ("levels", {}, 0.5, None, 3),
        ("levels", {"mpp": None}, None, None, 3),
        ("subifds", {}, 0.5, None, 1),
        ("aperio", {"mpp": 0.25, "objective_power": 40}, 0.25, 40, 3),
        ("aperio", {"mpp": None, "objective_power": 20}, None, 20, 3),
    ],
)
def test_synthetic_slides_read_as_documented(
    slide_factory, layout: str, options: dict, mpp: float | None, power: float | None, levels: int
) -> None:
    image = blank_glass(1100, 700)
    image[200:500, 300:800] = (180, 90, 160)
    path = slide_factory(
        f"s_{layout}.{'svs' if layout == 'aperio' else 'tif'}", image, layout=layout, **options
    )
    with open_slide(path) as reader:
        assert reader.level0_px == (1100, 700)
        assert reader.level_count == levels
        assert reader.mpp_from_metadata == (pytest.approx(mpp) if mpp else None)
        assert reader.objective_power == power
        np.testing.assert_allclose(
            reader.read_region(400, 300, 0, 8, 8), np.full((8, 8, 3), (180, 90, 160)), atol=6
        )


def test_text_file_named_svs_fails_without_trying_tiatoolbox(tmp_path: Path, monkeypatch) -> None:
    """OpenSlide-only formats skip the tiatoolbox fallback: seconds of imports for the same verdict."""

    def no_fallback(path: Path) -> None:
        raise AssertionError("tiatoolbox fallback tried for an OpenSlide-only format")

    monkeypatch.setattr(reader_module, "TiatoolboxReader", no_fallback)
    bad = tmp_path / "x.svs"
    bad.write_text("this is not a slide\n")
    with pytest.raises(
        SlideError, match=r"x\.svs: not a readable slide \(format not recognised by OpenSlide\)"
    ):
        open_slide(bad)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.svs", "no such slide file"),
        (lambda d: (d / "empty.svs").touch() or d / "empty.svs", "empty file"),
        (lambda d: (d / "folder.svs").mkdir() or d / "folder.svs", "is a folder"),
    ],
)
def test_unusable_paths_are_one_line_errors(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(SlideError, match=message) as error:
        open_slide(path)
    assert "\n" not in str(error.value) and path.name in str(error.value)


@pytest.mark.slow
def test_formats_openslide_rejects_go_through_tiatoolbox(tmp_path: Path) -> None:
    """A plain (striped, untiled) TIFF is not a slide to OpenSlide; tiatoolbox reads it."""
    import tifffile

    image = blank_glass(600, 400)
    image[100:300, 100:400] = (150, 60, 140)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    with open_slide(path) as reader:
        assert isinstance(reader, TiatoolboxReader)
        assert reader.level0_px == (600, 400)
        np.testing.assert_array_equal(
            reader.read_region(200, 150, 0, 4, 4), np.full((4, 4, 3), (150, 60, 140))
        )
        tile = reader.read_tile(0, 0, 0, 400, 200)
        assert tile.shape == (200, 200, 3)
        assert max(reader.thumbnail(300).shape[:2]) == 300
