"""Splits are made on patients, stratified by class, seeded, and checked."""

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.train.helpers import small_cohort, write_table
from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.labels import read_label_table
from wsi_pipeline.train.config import SplitFractions
from wsi_pipeline.train.splits import make_splits


def _table(tmp: Path, n_slides: int = 60, slides_per_patient: int = 3):
    # Labels only: no bags are needed to split.
    rows = []
    for i in range(n_slides):
        patient = i // slides_per_patient
        rows.append(
            [f"TCGA-AA-{patient:04d}-01Z-00-DX{i % slides_per_patient}", "LUSC" if patient % 3 else "LUAD"]
        )
    return read_label_table(write_table(tmp / "labels.csv", ["slide_id", "label"], rows))


def test_one_split_keeps_patients_together_and_is_stratified_and_seeded(tmp_path: Path) -> None:
    table = _table(tmp_path, 300)
    rows = make_splits(table, 1, SplitFractions(), seed=0)
    splits_of = defaultdict(set)
    for r in rows:
        splits_of[r.patient_id].add(r.split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert {r.patient_id for r in rows} == {r.patient_id for r in table.rows} and len(rows) == 300
    patients = Counter(next(iter(s)) for s in splits_of.values())
    assert patients == {"train": 60, "val": 14, "test": 26}
    for split in ("train", "val", "test"):
        labels = Counter(r.label for r in rows if r.split == split)
        assert abs(labels["LUAD"] / sum(labels.values()) - 1 / 3) < 0.05, (split, labels)
    assert make_splits(table, 1, SplitFractions(), seed=0) == rows
    assert make_splits(table, 1, SplitFractions(), seed=1) != rows


def test_kfold_tests_every_patient_exactly_once(tmp_path: Path) -> None:
    table = _table(tmp_path, 90)
    rows = make_splits(table, 5, SplitFractions(), seed=0)
    assert len(rows) == 5 * 90
    tested = Counter(r.slide_id for r in rows if r.split == "test")
    assert set(tested.values()) == {1} and len(tested) == 90
    for fold in range(5):
        fold_rows = [r for r in rows if r.fold == fold]
        by_patient = defaultdict(set)
        for r in fold_rows:
            by_patient[r.patient_id].add(r.split)
        assert all(len(s) == 1 for s in by_patient.values())
        assert {r.label for r in fold_rows if r.split == "val"} == {"LUAD", "LUSC"}


def _with_split_column(tmp: Path, rows: str):
    """A labels table with split and patient columns, `rows` given as "slide label split patient" lines."""
    lines = [line.split() for line in rows.strip().splitlines()]
    return read_label_table(
        write_table(tmp / "labels.csv", ["slide_id", "label", "split", "patient_id"], lines)
    )


GIVEN_SPLITS = "a x train p1\nb y train p2\nc x val p3\nd y val p4\ne x test p5"


def test_split_column_is_used_as_given(tmp_path: Path) -> None:
    rows = make_splits(_with_split_column(tmp_path, GIVEN_SPLITS), 1, SplitFractions(), seed=0)
    assert [(r.slide_id, r.split) for r in rows] == [
        ("a", "train"),
        ("b", "train"),
        ("c", "val"),
        ("d", "val"),
        ("e", "test"),
    ]


@pytest.mark.parametrize(
    ("rows", "folds", "error"),
    [
        (GIVEN_SPLITS, 3, "needs a table without one"),
        (
            "a x train p1\nb y train p2\nc x val p1\nd y val p4",
            1,
            r"patient\(s\) p1 have slides in more than one split",
        ),
        ("a x train p1\nb y train p2\nc x val p3", 1, "the val split has no slide of class y"),
    ],
    ids=["k-fold with given splits", "patient in two splits", "val split without a class"],
)
def test_split_column_is_checked(tmp_path: Path, rows: str, folds: int, error: str) -> None:
    with pytest.raises(WsiError, match=error):
        make_splits(_with_split_column(tmp_path, rows), folds, SplitFractions(), seed=0)


def test_too_few_patients_is_a_clear_error(tmp_path: Path) -> None:
    small_cohort(tmp_path, 4)
    with pytest.raises(WsiError, match="too few patients to split off a stratified test set"):
        make_splits(read_label_table(tmp_path / "labels.csv"), 1, SplitFractions(), seed=0)
    with pytest.raises(WsiError, match="5-fold CV needs at least 5 patients per class"):
        make_splits(read_label_table(tmp_path / "labels.csv"), 5, SplitFractions(), seed=0)
