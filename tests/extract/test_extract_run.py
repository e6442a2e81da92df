"""`wsi extract` end to end on the real test slides, with random-init RetCCL weights in the real layout."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from tests.extract.cli_app import app
from tests.extract.helpers import CMU, CMU_PYRAMID, TISSUE_COORDS, make_store
from wsi_pipeline.extract.config import ExtractConfig
from wsi_pipeline.extract.run import extract_stores
from wsi_pipeline.extract.weights import sha256_file
from wsi_pipeline.stores.atomic import LOCK_FILE
from wsi_pipeline.stores.feature_bag import load_bag, read_bag_attrs

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, weights: Path, **options: object) -> list:
    """The library entry point (outcomes carry the exact one-line reasons the summary table shows)."""
    config = ExtractConfig(**{"weights": weights, "batch_size": 2, "workers": 0, **options})
    return extract_stores(tmp_path / "tiles", tmp_path / "features", config, Console(stderr=True, width=200))


def _cli_args(tmp_path: Path, weights: Path, batch_size: int) -> list[str]:
    """`wsi extract` arguments: tmp_path/tiles -> tmp_path/features, in-process tile reads."""
    features = tmp_path / "features"
    return [
        str(tmp_path / "tiles"),
        "--out",
        str(features),
        "--weights",
        str(weights),
        "--batch-size",
        str(batch_size),
        "--workers",
        "0",
    ]


def _by_slide(outcomes: list) -> dict:
    return {o.slide_id: o for o in outcomes}


def _reference_features(slide: Path, coords: np.ndarray, level: int, weights: Path) -> np.ndarray:
    """The same tiles read with OpenSlide directly, preprocessed by hand, through torchvision's ResNet-50."""
    import openslide
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    missing, unexpected = model.load_state_dict(torch.load(weights, weights_only=True), strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected  # the checkpoint has no fc
    model.fc = torch.nn.Identity()
    model.eval()
    handle = openslide.OpenSlide(str(slide))
    side = round(round(256 / float(handle.properties["openslide.mpp-x"])) / handle.level_downsamples[level])
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    images = []
    for x, y in coords:
        tile = handle.read_region((int(x), int(y)), level, (side, side)).convert("RGB")
        # The documented resize (features/README.md): integer box reduction, then antialiased bilinear.
        tile = tile.resize((224, 224), Image.Resampling.BILINEAR, reducing_gap=1.0)
        images.append(((np.asarray(tile, dtype=np.float32) / 255.0 - mean) / std).transpose(2, 0, 1))
    with torch.inference_mode():
        return model(torch.from_numpy(np.stack(images))).numpy()


def test_features_match_an_independent_forward(tmp_path: Path, retccl_weights: Path) -> None:
    coords = TISSUE_COORDS[:3]
    make_store(tmp_path / "tiles", CMU, coords)  # one level: read at level 0, 513 px
    make_store(tmp_path / "tiles", CMU_PYRAMID, coords[::-1])  # read at level 1, 256 px; order is kept
    result = CliRunner().invoke(
        app,
        [
            str(tmp_path / "tiles"),
            "--out",
            str(tmp_path / "features"),
            "--weights",
            str(retccl_weights),
            "--dtype",
            "float32",
            "--batch-size",
            "2",
            "--workers",
            "2",
            "--device",
            "auto",
        ],
    )
    assert result.exit_code == 0, result.output
    for slide, slide_coords, level in ((CMU, coords, 0), (CMU_PYRAMID, coords[::-1], 1)):
        bag = load_bag(tmp_path / "features" / f"{slide.stem}.h5")
        assert bag.features.shape == (3, 2048) and bag.features.dtype == np.float32
        np.testing.assert_array_equal(bag.coords, slide_coords)
        assert bag.meta["layout"] == "wsi" and bag.meta["extractor"] == "retccl"
        assert bag.meta["weights_sha256"] == sha256_file(retccl_weights)
        assert bag.meta["read_level"] == level and bag.meta["tile_px_level0"] == 513
        assert bag.meta["mpp_level0"] == pytest.approx(0.499)
        reference = _reference_features(slide, slide_coords, level, retccl_weights)
        cosine = (bag.features * reference).sum(1) / (
            np.linalg.norm(bag.features, axis=1) * np.linalg.norm(reference, axis=1)
        )
        assert cosine.min() > 0.999, cosine
    assert (tmp_path / "features" / "extract_config.yaml").is_file()


def test_float16_default_resume_and_changed_store(tmp_path: Path, retccl_weights: Path) -> None:
    make_store(tmp_path / "tiles", CMU, TISSUE_COORDS[:1])
    make_store(tmp_path / "tiles", CMU_PYRAMID, TISSUE_COORDS[1:2])
    first = _by_slide(_run(tmp_path, retccl_weights))
    assert {o.status for o in first.values()} == {"done"}
    kept, deleted = tmp_path / "features" / f"{CMU.stem}.h5", tmp_path / "features" / f"{CMU_PYRAMID.stem}.h5"
    assert load_bag(kept).features.dtype == np.float16
    kept_mtime = kept.stat().st_mtime_ns
    deleted.unlink()

    second = _by_slide(_run(tmp_path, retccl_weights))
    assert (second[CMU.stem].status, second[CMU_PYRAMID.stem].status) == ("skipped", "done")
    assert kept.stat().st_mtime_ns == kept_mtime and load_bag(deleted).n_tiles == 1

    make_store(tmp_path / "tiles", CMU, TISSUE_COORDS[:2])  # re-tiled: other tiles
    third = _by_slide(_run(tmp_path, retccl_weights))
    assert third[CMU.stem].status == "done" and third[CMU.stem].reason == "redone: tile store changed"
    assert third[CMU_PYRAMID.stem].status == "skipped"
    np.testing.assert_array_equal(load_bag(kept).coords, TISSUE_COORDS[:2])

    other_recipe = _by_slide(_run(tmp_path, retccl_weights, dtype="float32"))
    assert other_recipe[CMU.stem].status == "failed"
    assert "other settings: dtype float16 (this run: float32)" in other_recipe[CMU.stem].reason
    assert "--overwrite" in other_recipe[CMU.stem].reason
    assert load_bag(kept).features.dtype == np.float16  # nothing lost


def test_moved_slide_found_with_slides_root(tmp_path: Path, retccl_weights: Path, copy_slide) -> None:
    moving = copy_slide(CMU, "slides")
    make_store(tmp_path / "tiles", moving, TISSUE_COORDS[:1])
    make_store(tmp_path / "tiles", CMU_PYRAMID, TISSUE_COORDS[:1])
    archive = tmp_path / "archive" / "2024"
    archive.mkdir(parents=True)
    shutil.move(moving, archive / moving.name)

    args = _cli_args(tmp_path, retccl_weights, batch_size=2)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert (tmp_path / "features" / f"{CMU_PYRAMID.stem}.h5").is_file()  # the other slide is done
    assert not (tmp_path / "features" / f"{CMU.stem}.h5").exists()
    outcome = _by_slide(_run(tmp_path, retccl_weights))[CMU.stem]
    assert outcome.status == "failed"
    assert "slide not found at" in outcome.reason and "pass --slides-root DIR" in outcome.reason

    result = CliRunner().invoke(app, [*args, "--slides-root", str(tmp_path / "archive")])
    assert result.exit_code == 0, result.output
    bag = load_bag(tmp_path / "features" / f"{CMU.stem}.h5")
    assert bag.meta["slide_path"] == str(archive / moving.name)


def test_empty_store_gives_an_empty_bag(tmp_path: Path, retccl_weights: Path) -> None:
    store = make_store(tmp_path / "tiles", CMU, np.zeros((0, 2), dtype=np.int64))
    result = CliRunner().invoke(
        app, [str(store.parent), "--out", str(tmp_path / "features"), "--weights", str(retccl_weights)]
    )
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "0 tiles" in result.output
    bag = load_bag(tmp_path / "features" / f"{CMU.stem}.h5")
    assert bag.features.shape == (0, 2048) and bag.coords.shape == (0, 2)


def test_unreadable_slides_fail_alone(tmp_path: Path, retccl_weights: Path, copy_slide) -> None:
    """A slide whose tile data is wiped (reads fail inside the DataLoader workers) and one whose file
    structure is wiped (it no longer opens) fail with one line each; the good slide is done."""
    import tifffile

    bad_tiles = copy_slide(CMU, "slides", name="bad-tiles.svs")
    bad_header = copy_slide(CMU, "slides", name="bad-header.svs")
    for slide in (bad_tiles, bad_header, CMU_PYRAMID):
        make_store(tmp_path / "tiles", slide, TISSUE_COORDS[:2])
    with tifffile.TiffFile(bad_tiles) as tiff:
        spans = list(zip(tiff.pages[0].dataoffsets, tiff.pages[0].databytecounts, strict=True))
    data = bytearray(bad_tiles.read_bytes())
    for offset, count in spans:
        data[offset : offset + count] = bytes(count)  # same size, same TIFF structure, no JPEG data
    bad_tiles.write_bytes(bytes(data))
    data = bytearray(bad_header.read_bytes())
    data[:4096] = bytes(4096)
    bad_header.write_bytes(bytes(data))

    outcomes = _by_slide(_run(tmp_path, retccl_weights, workers=2))
    assert outcomes[CMU_PYRAMID.stem].status == "done"
    assert outcomes["bad-tiles"].status == "failed"
    assert outcomes["bad-tiles"].reason.startswith(
        "bad-tiles.svs: cannot read tile 0 at level-0 (1026, 513):"
    )
    assert outcomes["bad-header"].status == "failed" and "bad-header.svs" in outcomes["bad-header"].reason
    assert not any("\n" in o.reason for o in outcomes.values())
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == [
        LOCK_FILE,
        f"{CMU_PYRAMID.stem}.h5",
        "extract_config.yaml",
    ]


def test_random_init_must_be_explicit(tmp_path: Path) -> None:
    make_store(tmp_path / "tiles", CMU, TISSUE_COORDS[:1])
    args = [str(tmp_path / "tiles"), "--out", str(tmp_path / "features"), "--workers", "0"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1
    assert "needs --weights PATH" in refused.output and "--random-init" in refused.output
    assert not (tmp_path / "features").exists()
    accepted = CliRunner().invoke(app, [*args, "--random-init"])
    assert accepted.exit_code == 0, accepted.output
    assert read_bag_attrs(tmp_path / "features" / f"{CMU.stem}.h5")["weights_sha256"].startswith(
        "random-init:"
    )


def test_killed_run_leaves_only_complete_bags(tmp_path: Path, retccl_weights: Path, copy_slide) -> None:
    for index in range(3):
        make_store(tmp_path / "tiles", copy_slide(CMU, "slides", name=f"slide{index}.svs"), TISSUE_COORDS[:2])
    command = [
        sys.executable,
        "-c",
        "import typer; from cli.extract import extract; typer.run(extract)",
        *_cli_args(tmp_path, retccl_weights, batch_size=1),
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "features" / "slide0.h5").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the first bag never appeared"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)  # no chance to clean up: the worst case
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL and not (tmp_path / "features" / "slide2.h5").exists()
    for path in (tmp_path / "features").glob("*.h5"):
        assert load_bag(path).n_tiles == 2  # whatever has a final name is complete

    outcomes = _by_slide(_run(tmp_path, retccl_weights))
    assert outcomes["slide0"].status == "skipped"
    assert {o.status for o in outcomes.values()} <= {"done", "skipped"}
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == [
        LOCK_FILE,
        "extract_config.yaml",
        "slide0.h5",
        "slide1.h5",
        "slide2.h5",
    ]  # the killed run's temporary is gone
