"""The demo cohort: crops of the two real slides, readable with their resolution, labelled by source."""

import csv
from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.demo.cohort import build_cohort
from wsi_pipeline.demo.config import DemoConfig
from wsi_pipeline.errors import WsiError
from wsi_pipeline.resources import demo_slides_dir
from wsi_pipeline.slides import open_slide
from wsi_pipeline.stores.labels import read_label_table

SMALL = DemoConfig(n_per_class=6, tiles_per_side=2)
TILE_UM = 256.0


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    build_cohort(out, SMALL, TILE_UM)
    return out


def _cohort_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "cohort.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_labels_name_every_slide_with_its_class_and_own_patient(cohort_dir: Path) -> None:
    table = read_label_table(cohort_dir / "labels.csv")
    assert table.class_names == ("cmu_skin", "tcga_lung")
    assert sorted(row.label for row in table.rows) == ["cmu_skin"] * 6 + ["tcga_lung"] * 6
    assert len({row.patient_id for row in table.rows}) == 12
    slides = sorted(p.stem for p in (cohort_dir / "slides").iterdir())
    assert slides == sorted(row.slide_id for row in table.rows)
    sources = {row["slide_id"]: row["source"] for row in _cohort_rows(cohort_dir)}
    for row in table.rows:
        expected = "CMU-1-Small-Region.svs" if row.label == "cmu_skin" else "tcga-cr-7395-01a-01-ts1.svs"
        assert sources[row.slide_id] == expected


def test_crops_are_pyramids_with_their_resolution_in_the_file(cohort_dir: Path) -> None:
    for row in _cohort_rows(cohort_dir):
        with open_slide(cohort_dir / "slides" / f"{row['slide_id']}.tiff") as reader:
            # CMU's own 0.499 µm/px; the TCGA slide has none, so its crops carry the assumed 0.5.
            expected_mpp = 0.499 if row["label"] == "cmu_skin" else 0.5
            assert reader.mpp_from_metadata == pytest.approx(expected_mpp, rel=1e-4)
            side = int(row["side_level0_px"])
            # Two tiles of 256 µm, at the tile stage's rounding of the tile to level-0 pixels.
            assert side == 2 * round(TILE_UM / expected_mpp)
            assert reader.level_dimensions[0] == (side, side)
            assert len(reader.level_dimensions) == 3


def test_crop_pixels_are_the_source_region_turned_as_recorded(cohort_dir: Path) -> None:
    row = next(r for r in _cohort_rows(cohort_dir) if r["label"] == "tcga_lung")
    x, y, side = int(row["x_level0"]), int(row["y_level0"]), int(row["side_level0_px"])
    with open_slide(demo_slides_dir() / row["source"]) as source:
        expected = np.rot90(source.read_region(x, y, 0, side, side), int(row["quarter_turns"]))
    if row["mirrored"] == "True":
        expected = expected[:, ::-1]
    with open_slide(cohort_dir / "slides" / f"{row['slide_id']}.tiff") as crop:
        pixels = crop.read_region(0, 0, 0, side, side)
    difference = np.abs(pixels.astype(np.int16) - expected.astype(np.int16)).mean()
    assert difference < 4  # JPEG re-encoding only
    assert np.abs(pixels.astype(np.int16) - expected[::-1].astype(np.int16)).mean() > 4 * difference


def test_rerun_keeps_slides_and_refuses_another_plan_without_overwrite(tmp_path: Path) -> None:
    config = DemoConfig(n_per_class=6, tiles_per_side=1)
    build_cohort(tmp_path, config, TILE_UM)
    slide = next((tmp_path / "slides").iterdir())
    written = slide.stat().st_mtime_ns
    build_cohort(tmp_path, config, TILE_UM)
    assert slide.stat().st_mtime_ns == written

    other = DemoConfig(n_per_class=6, tiles_per_side=1, seed=1)
    with pytest.raises(WsiError, match="cut with other settings"):
        build_cohort(tmp_path, other, TILE_UM)
    build_cohort(tmp_path, other, TILE_UM, overwrite=True)
    assert slide.stat().st_mtime_ns != written


def test_too_small_a_cohort_for_a_split_is_refused() -> None:
    with pytest.raises(ValueError, match="n_per_class"):
        DemoConfig(n_per_class=5)
