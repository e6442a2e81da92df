"""Every mistake in a labels table or a bag folder is one line that names the file and the problem."""

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from tests.bags import write_raw_bag
from tests.train.cli_app import app
from tests.train.helpers import SMALL_DIM, small_cohort, write_table
from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.labels import default_patient_id, read_label_table


def test_patient_id_defaults_to_the_tcga_barcode_else_the_slide(tmp_path: Path) -> None:
    assert default_patient_id("TCGA-05-4244-01Z-00-DX1") == "TCGA-05-4244"
    assert default_patient_id("tcga-cr-7395-01a-01-ts1") == "TCGA-CR-7395"
    assert default_patient_id("CMU-1-Small-Region") == "CMU-1-Small-Region"
    path = write_table(
        tmp_path / "l.csv",
        ["slide_id", "label", "patient_id"],
        [["TCGA-05-4244-01Z", "a", ""], ["s2", "b", "P7"], ["s3", "b", ""]],
    )
    table = read_label_table(path)
    assert [r.patient_id for r in table.rows] == ["TCGA-05-4244", "P7", "s3"]
    assert table.class_names == ("a", "b") and table.class_index("b") == 1


def test_class_list_fixes_the_index_order(tmp_path: Path) -> None:
    path = write_table(tmp_path / "l.csv", ["slide_id", "label"], [["s1", "LUAD"], ["s2", "LUSC"]])
    assert read_label_table(path, ["LUSC", "LUAD"]).class_names == ("LUSC", "LUAD")


def _bad_tables(tmp: Path) -> dict[str, tuple[Path, list[str], str]]:
    """name -> (labels file, extra CLI options, expected part of the message)."""
    h = ["slide_id", "label"]
    empty = tmp / "empty.csv"
    empty.write_text("")
    return {
        "missing column": (
            write_table(tmp / "m.csv", ["slide", "label"], [["a", "x"]]),
            [],
            "missing column(s) slide_id",
        ),
        "duplicate": (
            write_table(tmp / "d.csv", h, [["a", "x"], ["b", "y"], ["a", "y"]]),
            [],
            "duplicate slide ids: a (lines 2, 4)",
        ),
        "one class": (
            write_table(tmp / "o.csv", h, [["a", "x"], ["b", "x"]]),
            [],
            "only one class ('x', 2 rows)",
        ),
        "unknown label": (
            write_table(tmp / "u.csv", h, [["a", "x"], ["b", "z"]]),
            ["--config", "CLASSES"],
            "label(s) 'z' not in the class list x, y",
        ),
        "empty": (empty, [], "empty labels file"),
        "bad split": (
            write_table(tmp / "s.csv", [*h, "split"], [["a", "x", "train"], ["b", "y", "tst"]]),
            [],
            "split 'tst' is not one of train, val, test",
        ),
        "partial split": (
            write_table(tmp / "p.csv", [*h, "split"], [["a", "x", "train"], ["b", "y", ""]]),
            [],
            "split is filled for 1 of 2 rows",
        ),
        "unsafe id": (
            write_table(tmp / "x.csv", h, [["../a", "x"], ["b", "y"]]),
            [],
            "unsafe slide id '../a'",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing column",
        "duplicate",
        "one class",
        "unknown label",
        "empty",
        "bad split",
        "partial split",
        "unsafe id",
    ],
)
def test_bad_label_tables_give_one_line_errors(tmp_path: Path, case: str) -> None:
    path, options, expected = _bad_tables(tmp_path)[case]
    (tmp_path / "features").mkdir()
    classes = tmp_path / "classes.yaml"
    classes.write_text("classes: [x, y]\n")
    options = [str(classes) if o == "CLASSES" else o for o in options]
    with pytest.raises(WsiError, match="^" + re.escape(str(path))):
        read_label_table(path, ["x", "y"] if options else None)
    result = CliRunner().invoke(
        app,
        [
            "--features",
            str(tmp_path / "features"),
            "--labels",
            str(path),
            "--out",
            str(tmp_path / "run"),
            *options,
        ],
    )
    line = one_line_error(result)
    assert line.startswith(f"error: {path}") and expected in line, result.stderr
    assert not (tmp_path / "run").exists()


def one_line_error(result: Result) -> str:
    """Exit code 1, no traceback, and the error is the last line of stderr and the only one."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def _cohort_with(tmp: Path, damage: str) -> list[str]:
    """8 slides with a split column (6 train, 2 val), one kind of damage."""
    slides = small_cohort(tmp, 8)
    write_table(
        tmp / "labels.csv",
        ["slide_id", "label", "split"],
        [[s.slide_id, s.label, "train" if i < 6 else "val"] for i, s in enumerate(slides)],
    )
    if damage == "missing":
        for s in slides[:3]:
            (tmp / "features" / f"{s.slide_id}.h5").unlink()
    elif damage == "width":
        write_raw_bag(tmp / "features" / f"{slides[2].slide_id}.h5", np.ones((5, SMALL_DIM + 1), np.float16))
    elif damage == "nan":
        features = np.ones((5, SMALL_DIM), np.float32)
        features[1, 3] = np.nan
        features[2, 0] = np.inf
        write_raw_bag(tmp / "features" / f"{slides[5].slide_id}.h5", features)
    return [s.slide_id for s in slides]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("missing", "3 labelled slide(s) have no bag in"),
        ("width", "1 bag(s) are not 64-d like the rest"),
        ("nan", "2 NaN or inf feature values"),
    ],
)
def test_bad_bags_give_one_line_errors(tmp_path: Path, damage: str, expected: str) -> None:
    names = _cohort_with(tmp_path, damage)
    result = CliRunner().invoke(
        app,
        [
            "--features",
            str(tmp_path / "features"),
            "--labels",
            str(tmp_path / "labels.csv"),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    line = one_line_error(result)
    assert expected in line, result.stderr
    if damage == "missing":
        assert all(name in line for name in names[:3]) and "--allow-missing" in line
    if damage == "width":
        assert names[2] in line and "(65)" in line
    if damage == "nan":
        assert names[5] in line
    assert not (tmp_path / "run").exists()


def test_allow_missing_trains_without_them_and_unlabelled_bags_are_counted(tmp_path: Path) -> None:
    names = _cohort_with(tmp_path, "missing")
    from tests.bags import make_cohort

    make_cohort(tmp_path / "extra", 2, planted_fraction=0.3, tiles=(20, 30), dim=SMALL_DIM, seed=9)
    for bag in (tmp_path / "extra").iterdir():
        bag.rename(tmp_path / "features" / f"unlabelled-{bag.name}")
    labels = write_table(
        tmp_path / "labels_split.csv",
        ["slide_id", "label", "split"],
        [
            [n, "negative" if i % 2 == 0 else "positive", "train" if i < 6 else "val"]
            for i, n in enumerate(names)
        ],
    )
    result = CliRunner().invoke(
        app,
        [
            "--features",
            str(tmp_path / "features"),
            "--labels",
            str(labels),
            "--out",
            str(tmp_path / "run"),
            "--allow-missing",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--config",
            str(_narrow_config(tmp_path)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "5 labelled slides with bags" in result.stderr and "2 unlabelled bags ignored" in result.stderr
    assert "3 labelled slides without a bag left out" in result.stderr
    assert result.stdout.startswith("best val AUROC") and str(tmp_path / "run") in result.stdout


def _narrow_config(tmp: Path) -> Path:
    path = tmp / "narrow.yaml"
    path.write_text("model: vit_sf\nmodel_overrides: {dim: 32, heads: 2, dim_head: 16, mlp_dim: 32}\n")
    return path
