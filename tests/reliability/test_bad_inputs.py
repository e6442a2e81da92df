"""The bad-input corpus: each case runs a real `wsi` command on one kind of bad input.

Cases run the real `wsi` app in this process (no interpreter start and torch import per case), except the
ones about file permissions, which need a process of their own (run without root's override of file
permissions); `WSI_CORPUS_SUBPROCESS=1` runs every case as a separate process, exactly as a user would.
Every case checks:
- a non-zero exit;
- an `error:` line on stderr that names the file (or folder, or command) and the problem;
- no traceback, no rich error panel;
- no existing output changed: the output folder already holds a good prior output (a copy of the session's
  reference run), snapshotted by content before the command and compared after; and no temporary is left.

A case is one function that sets the scene in `tmp` and returns what to run and what to expect.
"""

import errno
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.bags import write_raw_bag
from tests.reliability.conftest import CMU, CMU_PYRAMID, TCGA, Reference
from tests.reliability.outputs import describe_difference, leftovers, tree_content
from tests.reliability.process import Result, as_file_owner_only, run_wsi, run_wsi_here

pytestmark = pytest.mark.slow


@dataclass
class Case:
    args: list[str]
    names: str  # what the error line must name (a file, folder or command)
    problem: str  # regex (case-insensitive) the same line must match
    watched: list[Path]  # folders holding prior good outputs that must stay as they were
    prefix: list[str] = field(default_factory=list)  # e.g. run without root's file-permission override
    no_new_outputs: bool = False  # a command that fails as a whole must not leave a partial output
    after: Callable[[Result], None] | None = None  # extra checks


class Scene:
    """A case's temporary folder and the session's reference outputs, copied on demand."""

    def __init__(self, tmp: Path, request: pytest.FixtureRequest) -> None:
        self.tmp = tmp
        self._request = request

    def fixture(self, name: str) -> Any:
        return self._request.getfixturevalue(name)

    def prior(self, reference_fixture: str, name: str) -> Path:
        """A copy of a reference run's output folder: the good prior output the case must not touch."""
        reference: Reference = self.fixture(reference_fixture)
        target = self.tmp / name
        shutil.copytree(reference.out, target, symlinks=True)
        return target

    def slide(self, source: Path, name: str | None = None, folder: str = "slides") -> Path:
        target = self.tmp / folder / (name or source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return target

    def file(self, relative: str, content: bytes | str) -> Path:
        target = self.tmp / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        target.write_bytes(content)
        return target

    def cohort(self) -> tuple[Path, Path, list[list[str]]]:
        """A copy of the training bags, the labels path (not yet written) and the reference label rows."""
        source: Path = self.fixture("train_inputs")
        features = self.tmp / "features"
        shutil.copytree(source / "features", features)
        rows = [line.split(",") for line in (source / "labels.csv").read_text().split()]
        return features, self.tmp / "labels.csv", rows

    def train(self, features: Path, labels: Path, *extra: str, config: Path | None = None) -> Case:
        runs = self.prior_run()
        source: Path = self.fixture("train_inputs")
        args = [
            "train",
            "--config",
            str(config or source / "train.yaml"),
            "--features",
            str(features),
            "--labels",
            str(labels),
            "--out",
            str(runs / "new"),
            *extra,
        ]
        return Case(args, "", "", [runs], no_new_outputs=True)

    def prior_run(self) -> Path:
        runs = self.tmp / "runs"
        if not runs.exists():
            runs.mkdir()
            reference: Reference = self.fixture("train_reference")
            shutil.copytree(reference.out, runs / "good")
        return runs


CASES: dict[str, Callable[[Scene], Case]] = {}


def case(name: str) -> Callable[[Callable[[Scene], Case]], Callable[[Scene], Case]]:
    def register(build: Callable[[Scene], Case]) -> Callable[[Scene], Case]:
        CASES[name] = build
        return build

    return register


def _tile(scene: Scene, *slides: Path, extra: tuple[str, ...] = ()) -> tuple[list[str], Path]:
    tiles = scene.prior("tile_reference", "tiles")
    return ["tile", *map(str, slides), "--out", str(tiles), "--mpp", "0.5", *extra], tiles


# ------------------------------------------------------------------------------------------- wsi tile


def _bad_slide_file(
    name: str, content: bytes | str | Callable[[], bytes], problem: str
) -> Callable[[Scene], Case]:
    """A case: `wsi tile` on one slide file `name` holding `content`; the error names it and `problem`."""

    def build(scene: Scene) -> Case:
        slide = scene.file(f"slides/{name}", content() if callable(content) else content)
        args, tiles = _tile(scene, slide)
        return Case(args, name, problem, [tiles])

    return build


def _truncated_cmu() -> bytes:
    return CMU.read_bytes()[: CMU.stat().st_size // 3]


for _title, _name, _content, _problem in [
    ("zero-byte slide", "empty.svs", b"", r"empty file|0 bytes"),
    ("truncated svs", "truncated.svs", _truncated_cmu, r"not a readable slide|truncated|corrupt"),
    ("text file named .svs", "notes.svs", "patient notes, not a slide\n" * 20, r"not a readable slide"),
    (
        "unsupported extension",
        "scan.docx",
        b"PK\x03\x04 a word document",
        r"not a readable slide|not a supported",
    ),
]:
    case(_title)(_bad_slide_file(_name, _content, _problem))


@case("slide without mpp and no --mpp")
def _(scene: Scene) -> Case:
    slide = scene.slide(TCGA, "no-mpp.svs")
    tiles = scene.prior("tile_reference", "tiles")
    return Case(["tile", str(slide), "--out", str(tiles)], "no-mpp.svs", r"no resolution.*--mpp", [tiles])


@case("folder with no slides")
def _(scene: Scene) -> Case:
    scene.file("slides/readme.txt", "no slides here")
    args, tiles = _tile(scene, scene.tmp / "slides")
    return Case(args, "slides", r"no slide files", [tiles])


@case("unreadable slide (permissions)")
def _(scene: Scene) -> Case:
    good = scene.slide(CMU_PYRAMID)
    locked = scene.slide(CMU, "locked.svs")
    locked.chmod(0)
    args, tiles = _tile(scene, scene.tmp / "slides")

    def other_slide_done(result: Result) -> None:
        assert (tiles / f"{good.stem}.zarr").is_dir(), "one unreadable slide stopped the batch"

    return Case(
        args,
        "locked.svs",
        r"permission denied|cannot read|not readable",
        [tiles],
        prefix=as_file_owner_only(),
        after=other_slide_done,
    )


@case("non-writable output folder")
def _(scene: Scene) -> Case:
    slide = scene.slide(CMU_PYRAMID, "new-slide.svs")
    args, tiles = _tile(scene, slide)
    tiles.chmod(0o555)
    return Case(args, str(tiles), r"cannot write|permission denied", [tiles], prefix=as_file_owner_only())


@case("full disk while writing")
def _(scene: Scene) -> Case:
    """A tmpfs just big enough for the prior output: the next slide's outputs cannot be written."""
    reference: Reference = scene.fixture("tile_reference")
    prior_kib = sum(p.stat().st_size for p in reference.out.rglob("*") if p.is_file()) // 1024
    disk = scene.fixture("small_filesystem")(scene.tmp / "disk", prior_kib + 256)
    tiles = disk / "tiles"
    shutil.copytree(reference.out, tiles)
    slide = scene.slide(CMU_PYRAMID, "new-slide.svs")
    args = ["tile", str(slide), "--out", str(tiles), "--mpp", "0.5"]
    return Case(args, str(tiles), r"no space left on device", [tiles])


def _tile_config_case(scene: Scene, text: str, problem: str) -> Case:
    """`wsi tile --config tile.yaml` with `text` in the file: one line naming the file and `problem`."""
    config = scene.file("tile.yaml", text)
    args, tiles = _tile(scene, CMU, extra=("--config", str(config)))
    return Case(args, "tile.yaml", problem, [tiles], no_new_outputs=True)


@case("invalid YAML config")
def _(scene: Scene) -> Case:
    return _tile_config_case(scene, "tile_um: [256\nmin_tissue: 0.5\n", r"invalid YAML")


@case("config with an unknown key")
def _(scene: Scene) -> Case:
    return _tile_config_case(scene, "tile_um: 256\ntile_size: 224\n", r"unknown key 'tile_size'")


@case("config with a wrong type")
def _(scene: Scene) -> Case:
    return _tile_config_case(scene, "tile_px: big\n", r"tile_px: .*integer")


@case("missing --out")
def _(scene: Scene) -> Case:
    tiles = scene.prior("tile_reference", "tiles")
    return Case(["tile", str(CMU)], "wsi tile", r"missing option '--out'", [tiles])


@case("nonexistent option")
def _(scene: Scene) -> Case:
    args, tiles = _tile(scene, CMU, extra=("--tile-size", "224"))
    return Case(args, "wsi tile", r"no such option '--tile-size'", [tiles])


# ---------------------------------------------------------------------------------------- wsi extract


def _extract(scene: Scene, tiles: Path, *extra: str, weights: Path | None = None) -> tuple[list[str], Path]:
    features = scene.prior("extract_reference", "features")
    weights = weights or scene.fixture("retccl_weights")
    args = [
        "extract",
        str(tiles),
        "--out",
        str(features),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--workers",
        "0",
        *extra,
    ]
    return args, features


@case("tile store whose slide moved")
def _(scene: Scene) -> Case:
    from tests.extract.helpers import TISSUE_COORDS, make_store

    slide = scene.slide(CMU, "moved.svs")
    make_store(scene.tmp / "tiles", slide, TISSUE_COORDS[:2])
    slide.rename(slide.with_name("elsewhere.svs"))
    args, features = _extract(scene, scene.tmp / "tiles")
    return Case(args, "moved.svs", r"not found|no such|moved|--slides-root", [features])


@case("damaged tile store")
def _(scene: Scene) -> Case:
    from tests.extract.helpers import TISSUE_COORDS, make_store

    store = make_store(scene.tmp / "tiles", scene.slide(CMU, "damaged.svs"), TISSUE_COORDS[:2])
    for chunk in (store / "coords").rglob("*"):
        if chunk.is_file() and chunk.name != "zarr.json":
            chunk.write_bytes(b"garbage")
    args, features = _extract(scene, scene.tmp / "tiles")
    return Case(args, "damaged.zarr", r"damaged|not a readable", [features])


@case("extractor weights with a pickle payload")
def _(scene: Scene) -> Case:
    marker = scene.tmp / "PWNED"
    weights = scene.file("evil.pth", _pickle_payload(marker))
    args, features = _extract(scene, scene.fixture("extract_stores"), weights=weights)

    def code_not_run(result: Result) -> None:
        assert not marker.exists(), "the checkpoint's pickled code ran"

    return Case(args, "evil.pth", r"refused|pickle", [features], no_new_outputs=True, after=code_not_run)


@case("extractor weights of another model")
def _(scene: Scene) -> Case:
    import torch
    import torchvision

    weights = scene.tmp / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    args, features = _extract(scene, scene.fixture("extract_stores"), weights=weights)
    return Case(args, "resnet18.pth", r"missing|unexpected|shape", [features], no_new_outputs=True)


# ------------------------------------------------------------------------------------------ wsi train


@case("truncated HDF5 bag")
def _(scene: Scene) -> Case:
    features, labels, rows = scene.cohort()
    _write_rows(labels, rows)
    bag = features / f"{rows[1][0]}.h5"
    bag.write_bytes(bag.read_bytes()[: bag.stat().st_size // 2])
    return _named(scene.train(features, labels), bag.name, r"truncated|corrupt|not a readable|damaged")


@case("bag with NaN")
def _(scene: Scene) -> Case:
    features, labels, rows = scene.cohort()
    _write_rows(labels, rows)
    values = np.random.default_rng(0).standard_normal((30, 64)).astype(np.float32)
    values[3, 5] = np.nan
    bag = features / f"{rows[2][0]}.h5"
    write_raw_bag(bag, values)
    return _named(scene.train(features, labels), bag.name, r"NaN")


@case("bags of mixed dims")
def _(scene: Scene) -> Case:
    features, labels, rows = scene.cohort()
    _write_rows(labels, rows)
    bag = features / f"{rows[3][0]}.h5"
    write_raw_bag(bag, np.zeros((30, 32), np.float32))
    return _named(scene.train(features, labels), bag.name, r"widths differ|dim")


@case("bag without tiles (all-white slide)")
def _(scene: Scene) -> Case:
    """An all-white slide: tiling keeps 0 tiles (a store with N=0 and a warning, docs/ARCHITECTURE.md,
    "Tile store"); its bag has 0 rows (what `wsi extract` writes for it); training refuses that bag with a
    one-line error."""
    blank = np.full((2048, 2048, 3), 243, np.uint8)
    from tests.synthetic import write_slide

    slide = write_slide(scene.tmp / "white" / "blank.tiff", blank, mpp=0.5)
    tiles = scene.tmp / "white-tiles"
    tiled = _run(["tile", str(slide), "--out", str(tiles)])
    assert tiled.returncode == 0 and "Traceback" not in tiled.stderr, str(tiled)
    warnings = [line for line in tiled.stderr.splitlines() if line.startswith("WARNING:")]
    assert any("blank.tiff" in line and "0 tiles kept" in line for line in warnings), str(tiled)

    features, labels, rows = scene.cohort()
    rows.append(["blank", rows[1][1]])
    _write_rows(labels, rows)
    from tests.bags import write_synthetic_bag

    write_synthetic_bag(
        features / "blank.h5", np.zeros((0, 64), np.float32), np.zeros((0, 2), np.int64), "blank"
    )
    return _named(scene.train(features, labels), "blank.h5", r"no tiles")


@case("labels CSV with missing columns")
def _(scene: Scene) -> Case:
    features, labels, rows = scene.cohort()
    _write_rows(labels, [["slide", "diagnosis"], *rows[1:]])
    return _named(scene.train(features, labels), "labels.csv", r"missing column.*slide_id")


@case("duplicate slide ids")
def _(scene: Scene) -> Case:
    features, labels, rows = scene.cohort()
    _write_rows(labels, [*rows, rows[4]])
    return _named(
        scene.train(features, labels), "labels.csv", rf"duplicate slide ids: {re.escape(rows[4][0])}"
    )


@case("one class only")
def _(scene: Scene) -> Case:
    features, labels, rows = scene.cohort()
    _write_rows(labels, [rows[0], *([slide, "negative"] for slide, _ in rows[1:])])
    return _named(scene.train(features, labels), "labels.csv", r"only one class")


@case("unknown label values")
def _(scene: Scene) -> Case:
    features, labels, rows = scene.cohort()
    rows[5][1] = "maybe"
    _write_rows(labels, rows)
    source: Path = scene.fixture("train_inputs")
    config = yaml.safe_load((source / "train.yaml").read_text())
    config["classes"] = ["negative", "positive"]
    config_file = scene.file("train.yaml", yaml.safe_dump(config))
    return _named(
        scene.train(features, labels, config=config_file), "labels.csv", r"'maybe' not in the class list"
    )


@case("labels for slides with no bag")
def _(scene: Scene) -> Case:
    features, labels, rows = scene.cohort()
    _write_rows(labels, [*rows, ["TCGA-99-9999-01Z-00-DX1", "positive"]])
    return _named(scene.train(features, labels), "labels.csv", r"no bag.*TCGA-99-9999-01Z-00-DX1")


@case("empty labels file")
def _(scene: Scene) -> Case:
    features, labels, _ = scene.cohort()
    labels.write_text("")
    return _named(scene.train(features, labels), "labels.csv", r"empty labels file")


def _bad_train_config(text: str, problem: str) -> Callable[[Scene], Case]:
    """A case: `wsi train --config train.yaml` holding `text`; the error names the file and `problem`."""

    def build(scene: Scene) -> Case:
        features, labels, rows = scene.cohort()
        _write_rows(labels, rows)
        config = scene.file("train.yaml", text)
        return _named(scene.train(features, labels, config=config), "train.yaml", problem)

    return build


case("training config with an unknown key")(
    _bad_train_config("model: abmil\nlearning_rate: 0.1\n", r"unknown key 'learning_rate'")
)
case("training config with a wrong type")(
    _bad_train_config("model: abmil\nepochs: many\n", r"epochs: .*integer")
)


# ------------------------------------------------------------------------------------------- wsi eval


def _eval(scene: Scene, mutate: Callable[[Path], None]) -> tuple[list[str], Path]:
    runs = scene.prior_run()
    run = runs / "good"
    mutate(run / "checkpoint.pt")
    return ["eval", "--run", str(run), "--no-heatmaps"], runs


@case("checkpoint with a pickle payload")
def _(scene: Scene) -> Case:
    marker = scene.tmp / "PWNED"
    args, runs = _eval(scene, lambda path: path.write_bytes(_pickle_payload(marker)))

    def code_not_run(result: Result) -> None:
        assert not marker.exists(), "the checkpoint's pickled code ran"

    return Case(
        args,
        "checkpoint.pt",
        r"not a loadable checkpoint|refused|pickle",
        [runs],
        no_new_outputs=True,
        after=code_not_run,
    )


@case("checkpoint of another model")
def _(scene: Scene) -> Case:
    import torch

    from wsi_pipeline.models import build_model

    def swap_weights(path: Path) -> None:
        payload = torch.load(path, weights_only=True)
        payload["state_dict"] = build_model("abmil", in_dim=payload["in_dim"], n_classes=2).state_dict()
        torch.save(payload, path)

    args, runs = _eval(scene, swap_weights)
    return Case(
        args, "checkpoint.pt", r"does not fit|another model|missing|unexpected", [runs], no_new_outputs=True
    )


# ------------------------------------------------------------------------------------------- helpers


def _run(args: list[str], prefix: list[str] | None = None) -> Result:
    if prefix or os.environ.get("WSI_CORPUS_SUBPROCESS") == "1":
        return run_wsi(args, prefix=prefix or ())
    return run_wsi_here(args)


def _named(case_: Case, names: str, problem: str) -> Case:
    case_.names, case_.problem = names, problem
    return case_


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    path.write_text("".join(",".join(row) + "\n" for row in rows))


class _Payload:
    """Unpickling this runs `touch MARKER`: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _pickle_payload(marker: Path) -> bytes:
    """A checkpoint made with `torch.save` whose unpickling runs code."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"state_dict": _Payload(marker)}, buffer)
    return buffer.getvalue()


def _restore_permissions(root: Path) -> None:
    """So pytest can delete the case's folder afterwards."""
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            try:
                path.chmod(0o755 if path.is_dir() else 0o644)
            except OSError as exc:
                if exc.errno != errno.EROFS:
                    raise


# --------------------------------------------------------------------------------------------- the test


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_line_error_and_keeps_prior_outputs(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    scene = Scene(tmp_path, request)
    spec = CASES[name](scene)
    before = {folder: tree_content(folder) for folder in spec.watched}
    try:
        result = _run(spec.args, spec.prefix)
    finally:
        _restore_permissions(tmp_path)

    assert result.returncode != 0, str(result)
    assert "Traceback" not in result.stderr + result.stdout, str(result)
    assert "╭" not in result.stderr, f"a rich panel, not a line:\n{result}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors, f"no error line:\n{result}"
    matching = [
        line for line in errors if spec.names in line and re.search(spec.problem, line, re.IGNORECASE)
    ]
    assert matching, f"no error line names {spec.names!r} and matches {spec.problem!r}:\n{result}"
    print(f"{name}: exit {result.returncode}: {matching[0]}")

    for folder, content in before.items():
        after = tree_content(folder)
        changed = {k: v for k, v in content.items() if after.get(k) != v}
        assert not changed, f"prior outputs changed:\n{describe_difference(content, after)}"
        if spec.no_new_outputs:
            assert set(after) == set(content), f"new outputs:\n{describe_difference(content, after)}"
        assert leftovers(folder) == [], f"temporaries left in {folder}"
    if spec.after is not None:
        spec.after(result)


def test_the_corpus_is_the_one_docs_reliability_describes() -> None:
    """docs/RELIABILITY.md states how many bad inputs are covered; a case added or lost must show there."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    stated = re.search(r"(\d+) bad-input cases in all", doc)
    assert stated is not None, "docs/RELIABILITY.md no longer states the number of bad-input cases"
    assert int(stated.group(1)) == len(CASES), sorted(CASES)
