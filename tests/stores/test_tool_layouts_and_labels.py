"""Bags in STAMP's, CLAM's and TRIDENT's real layouts; the one precision policy; labels as people write them."""

from pathlib import Path

import numpy as np
import pytest

from tests.stores.tool_layouts import write_clam_bag, write_stamp_bag, write_trident_bag
from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.feature_bag import HELD_DTYPE, load_bag, model_features
from wsi_pipeline.stores.labels import patient_grouping_problem, read_label_table

COORDS = np.array([[0, 0], [512, 0], [0, 512], [1024, 512]], dtype=np.int64)
FEATURES = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)


def test_stamp_layout_reads_with_the_slide_resolution(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    write_stamp_bag(path, FEATURES, COORDS, mpp=0.5, tile_um=256.0, tile_px=224)
    without = load_bag(path)
    assert without.meta["layout"] == "stamp" and not without.has_coords
    bag = load_bag(path, mpp_level0=0.5)
    np.testing.assert_array_equal(bag.coords, COORDS)
    assert bag.meta["tile_px_level0"] == 512 and bag.meta["extractor"] == "ctranspath"


def test_clam_and_trident_layouts_are_level0_pixels(tmp_path: Path) -> None:
    write_clam_bag(tmp_path / "c.h5", FEATURES, COORDS)
    write_trident_bag(tmp_path / "t.h5", FEATURES, COORDS, 512, (2048, 1024))
    clam, trident = load_bag(tmp_path / "c.h5"), load_bag(tmp_path / "t.h5")
    np.testing.assert_array_equal(clam.coords, COORDS)
    np.testing.assert_array_equal(trident.coords, COORDS)
    assert clam.meta["tile_px_level0"] is None  # CLAM's feature file records no patch size
    assert trident.meta["tile_px_level0"] == 512 and trident.meta["extractor"] == "uni_v1"


def test_one_precision_policy_whatever_the_stored_dtype(tmp_path: Path) -> None:
    """A float32 (CLAM) bag is held exactly as training holds it: float16, the same values."""
    write_clam_bag(tmp_path / "c.h5", FEATURES, COORDS)
    held = model_features(load_bag(tmp_path / "c.h5").features, "c", tmp_path / "c.h5")
    assert held.dtype == HELD_DTYPE
    np.testing.assert_array_equal(held, FEATURES.astype(np.float16))


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e6])
def test_non_finite_features_name_the_slide(tmp_path: Path, bad: float) -> None:
    features = FEATURES.copy()
    features[2, 3] = bad
    with pytest.raises(WsiError, match=r"slide SLIDE-7: .* 1 NaN or inf"):
        model_features(features, "SLIDE-7", tmp_path / "x.h5")


def _labels(tmp_path: Path, text: str | bytes, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_labels_differing_only_in_case_are_refused_naming_both(tmp_path: Path) -> None:
    path = _labels(tmp_path, "slide_id,label\na,Skin\nb,skin \nc,Lung\n")
    with pytest.raises(WsiError) as info:
        read_label_table(path)
    message = str(info.value)
    assert "'Skin'" in message and "'skin'" in message and "case" in message and "\n" not in message


def test_a_label_in_another_case_than_the_class_list_is_named(tmp_path: Path) -> None:
    path = _labels(tmp_path, "slide_id,label\na,skin\nb,Lung\n")
    with pytest.raises(WsiError, match=r"'Skin' \(the class list\).*'skin'"):
        read_label_table(path, ("Lung", "Skin"))


def test_surrounding_whitespace_is_not_a_class(tmp_path: Path) -> None:
    table = read_label_table(_labels(tmp_path, "slide_id,label\na, Skin\nb,Skin \nc,Lung\n"))
    assert table.class_names == ("Lung", "Skin")


def test_a_workbook_passed_as_csv_is_one_line(tmp_path: Path) -> None:
    path = _labels(tmp_path, b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)), "labels.xlsx")
    with pytest.raises(WsiError, match=r"labels\.xlsx: a spreadsheet workbook .*CSV UTF-8.*slide_id,label"):
        read_label_table(path)


def test_another_encoding_is_one_line_naming_the_format(tmp_path: Path) -> None:
    path = _labels(tmp_path, "slide_id,label\na,Sarkom\nb,Mélanom\n".encode("latin-1"))
    with pytest.raises(WsiError, match=r"labels\.csv: not UTF-8 text .*comma-separated UTF-8"):
        read_label_table(path)


def test_utf16_from_excel_reads(tmp_path: Path) -> None:
    path = _labels(tmp_path, "slide_id,label\na,x\nb,y\n".encode("utf-16"))
    assert read_label_table(path).class_names == ("x", "y")


def test_patient_grouping_problem_without_patient_column(tmp_path: Path) -> None:
    guessed = read_label_table(_labels(tmp_path, "slide_id,label\nslide-1,x\nslide-2,y\n"))
    assert "own patient" in patient_grouping_problem(guessed) and "slide-1" in patient_grouping_problem(
        guessed
    )
    given = read_label_table(_labels(tmp_path, "slide_id,label,patient_id\nslide-1,x,p1\nslide-2,y,p2\n"))
    tcga = read_label_table(_labels(tmp_path, "slide_id,label\nTCGA-AA-0001-01Z,x\nTCGA-AA-0002-01Z,y\n"))
    assert patient_grouping_problem(given) == "" and patient_grouping_problem(tcga) == ""
