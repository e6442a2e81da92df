"""Names and paths: unusual but legal slide names work through every stage; no name writes outside `--out`.

A slide id is the file name without its extension and becomes every later file name (`<id>.zarr`,
`<id>.h5`, heatmaps). Spaces, an emoji, dots and dashes (even a leading one, which a command line would
take for an option) are ordinary names and go through tile -> extract -> train -> eval. Ids that could
leave the output folder or hide an output (`..`, a leading `.`, separators, control characters) are
refused with a one-line error naming the file, wherever they come from: a slide's file name, a tile
store's attributes, a labels table.
"""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from tests.reliability.conftest import CMU
from tests.reliability.process import run_wsi
from wsi_pipeline.errors import WsiError
from wsi_pipeline.ids import slide_id_for
from wsi_pipeline.stores.atomic import LOCK_FILE

pytestmark = pytest.mark.slow

ODD_NAMES = {
    "slide with spaces": "negative",
    "émoji 🔬 slide": "positive",
    "v1.2.3-final_scan": "negative",
    "-starts-with-a-dash": "positive",
}
SPLITS = ["train", "train", "val", "val"]


def _ok(args: list[str]) -> str:
    result = run_wsi(args)
    assert result.returncode == 0, str(result)
    assert "Traceback" not in result.stderr
    return result.stdout


def test_unusual_names_go_through_every_stage(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ODD_NAMES:
        shutil.copy2(CMU, slides / f"{name}.svs")
    tiles, features, run = tmp_path / "tiles", tmp_path / "features", tmp_path / "runs" / "odd names"

    printed = _ok(["tile", str(slides), "--out", str(tiles)]).splitlines()
    assert sorted(printed) == sorted(str(tiles / f"{name}.qc.png") for name in ODD_NAMES)
    assert sorted(p.name for p in tiles.glob("*.zarr")) == sorted(f"{name}.zarr" for name in ODD_NAMES)

    _ok(
        [
            "extract",
            str(tiles),
            "--out",
            str(features),
            *["--random-init", "--device", "cpu", "--workers", "0", "--batch-size", "8"],
        ]
    )
    from wsi_pipeline.stores.feature_bag import load_bag

    for name in ODD_NAMES:
        bag = load_bag(features / f"{name}.h5")
        assert bag.meta["slide_id"] == name and bag.n_tiles > 0

    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(
            [
                ["slide_id", "label", "split"],
                *([n, label, s] for (n, label), s in zip(ODD_NAMES.items(), SPLITS, strict=True)),
            ]
        )
    _ok(
        [
            "train",
            "--features",
            str(features),
            "--labels",
            str(labels),
            "--out",
            str(run),
            "--model",
            "abmil",
            "--members",
            "1",
            "--epochs",
            "2",
            "--device",
            "cpu",
        ]
    )
    with open(run / "splits.csv", newline="", encoding="utf-8") as fh:
        assert sorted(row["slide_id"] for row in csv.DictReader(fh)) == sorted(ODD_NAMES)

    _ok(["eval", "--run", str(run), "--split", "val", "--tiles", str(tiles), "--top-k", "0"])
    out = run / "eval-val"
    val = [n for n, s in zip(ODD_NAMES, SPLITS, strict=True) if s == "val"]
    with open(out / "predictions.csv", newline="", encoding="utf-8") as fh:
        assert sorted(row["slide_id"] for row in csv.DictReader(fh)) == sorted(val)
    for name in val:
        assert (out / "heatmaps" / f"{name}.png").is_file()
        assert json.loads((out / "heatmaps" / f"{name}.geojson").read_text(encoding="utf-8"))["features"]


@pytest.mark.parametrize(
    ("file_name", "problem"),
    [
        ("...svs", "plain file name"),  # slide id ".."
        ("..svs", "plain file name"),  # slide id "."
        (".hidden.svs", "must not start with '.'"),
        ("bell\a.svs", "plain file name"),
        ("back\\slash.svs", "plain file name"),
    ],
)
def test_unsafe_slide_file_names_are_refused(tmp_path: Path, file_name: str, problem: str) -> None:
    slides, out = tmp_path / "slides", tmp_path / "out"
    slides.mkdir()
    slide = slides / file_name
    shutil.copy2(CMU, slide)
    with pytest.raises(WsiError, match="unsafe slide id") as refused:
        slide_id_for(slide)
    assert str(slide) in str(refused.value) and problem in str(refused.value)

    result = run_wsi(["tile", str(slide), "--out", str(out)])
    assert result.returncode != 0 and "Traceback" not in result.stderr, str(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    # (rich drops control characters such as the bell when it prints)
    assert any("unsafe slide id" in line and file_name.replace("\a", "") in line for line in errors), str(
        result
    )
    # Nothing anywhere but the slide itself and the output folder with only the run's claim on it
    # (`claimed_folder`): no file next to or above it.
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert written == ["out", f"out/{LOCK_FILE}", "slides", f"slides/{file_name}"]


def test_a_name_too_long_for_its_outputs_fails_alone(tmp_path: Path) -> None:
    """A 251-character name is a legal slide file (255 bytes) but `<id>.qc.png` would not be: that slide
    fails with a one-line error, the other is tiled."""
    slides, out = tmp_path / "slides", tmp_path / "out"
    slides.mkdir()
    long_name = "x" * 251
    shutil.copy2(CMU, slides / f"{long_name}.svs")
    shutil.copy2(CMU, slides / "fine.svs")
    result = run_wsi(["tile", str(slides), "--out", str(out)])
    assert result.returncode == 1 and "Traceback" not in result.stderr, str(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any(long_name in line and "too long" in line for line in errors), str(result)
    assert sorted(p.name for p in out.iterdir()) == [
        LOCK_FILE,
        "fine.qc.png",
        "fine.zarr",
        "tile_config.yaml",
    ]


def test_a_tile_store_cannot_send_its_bag_outside_the_output_folder(tmp_path: Path) -> None:
    """A store whose recorded slide id is a path (a crafted or corrupted store) is refused by extract."""
    from tests.extract.helpers import TISSUE_COORDS, make_store
    from wsi_pipeline.extract.config import ExtractConfig
    from wsi_pipeline.extract.run import extract_stores

    slide = tmp_path / "slides" / "innocent.svs"
    slide.parent.mkdir()
    shutil.copy2(CMU, slide)
    store = make_store(tmp_path / "deep" / "tiles", slide, TISSUE_COORDS[:1])
    import zarr

    zarr.open_group(str(store), mode="r+").attrs["slide_id"] = "../../escaped"
    features = tmp_path / "deep" / "features"
    config = ExtractConfig(random_init=True, device="cpu", workers=0)
    (outcome,) = extract_stores(
        tmp_path / "deep" / "tiles", features, config, Console(stderr=True, width=200)
    )
    assert outcome.status == "failed" and "unsafe slide id '../../escaped'" in outcome.reason
    assert not list(tmp_path.rglob("escaped*"))
    assert not list(features.glob("*.h5"))


@pytest.mark.parametrize("slide_id", ["../../etc/passwd", "..", ".hidden", "a/b", "tab\there"])
def test_a_labels_table_cannot_name_a_path(tmp_path: Path, slide_id: str) -> None:
    from wsi_pipeline.stores.labels import read_label_table

    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as fh:
        csv.writer(fh).writerows([["slide_id", "label"], ["ok-1", "a"], [slide_id, "b"]])
    with pytest.raises(WsiError, match=r"labels\.csv line 3: unsafe slide id"):
        read_label_table(labels)


def test_feature_bags_named_like_temporaries_are_not_training_data(tmp_path: Path) -> None:
    """Hidden files in a features folder (an interrupted extraction's temporaries) are never bags."""
    from tests.bags import write_synthetic_bag
    from wsi_pipeline.stores.labels import read_label_table
    from wsi_pipeline.train.bags import match_bags

    features = tmp_path / "features"
    features.mkdir()
    for slide_id in ("a", "b"):
        write_synthetic_bag(
            features / f"{slide_id}.h5", np.zeros((2, 4), np.float32), np.zeros((2, 2), np.int64), slide_id
        )
    shutil.copy2(features / "a.h5", features / ".c.h5.tmp-0123abcd")
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\na,x\nb,y\n")
    cohort = match_bags(features, read_label_table(labels), allow_missing=False)
    assert sorted(cohort.paths) == ["a", "b"] and cohort.n_unlabelled == 0
