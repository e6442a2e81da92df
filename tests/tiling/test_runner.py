"""The batch: resume, overwrite, changed slides, mixed settings, bad files, worker processes."""

import io
import os
import shutil
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from wsi_pipeline.stores.atomic import LOCK_FILE
from wsi_pipeline.stores.tile_store import read_tile_store_meta, store_path
from wsi_pipeline.tiling.config import TileConfig
from wsi_pipeline.tiling.runner import RESOLVED_CONFIG_NAME, tile_slides


def batch(slides: list[Path], out: Path, cfg: TileConfig | None = None, **options: object):
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    outcomes = tile_slides(slides, out, cfg or TileConfig(), console=console, **options)
    return outcomes, buffer.getvalue()


@pytest.fixture
def cmu_copy(cmu_slide: Path, tmp_path: Path) -> Path:
    """A private copy, so tests may change its mtime."""
    return Path(shutil.copy2(cmu_slide, tmp_path / "cmu.svs"))


def test_resume_skips_complete_stores_and_overwrite_redoes_them(cmu_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    first, _ = batch([cmu_copy], out)
    written = store_path(out, "cmu").stat().st_mtime_ns
    second, _ = batch([cmu_copy], out)
    assert [o.status for o in first + second] == ["done", "skipped"]
    assert (
        second[0].fields["kept"] == first[0].fields["kept"]
    )  # figures of a skipped slide come from its store
    assert store_path(out, "cmu").stat().st_mtime_ns == written
    third, _ = batch([cmu_copy], out, overwrite=True)
    assert third[0].status == "done" and store_path(out, "cmu").stat().st_mtime_ns != written


def test_a_slide_changed_since_its_store_is_redone(cmu_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    batch([cmu_copy], out)
    stat = cmu_copy.stat()
    os.utime(cmu_copy, (stat.st_atime, stat.st_mtime + 10))
    outcomes, _ = batch([cmu_copy], out)
    assert outcomes[0].status == "done" and "slide changed" in outcomes[0].reason
    assert read_tile_store_meta(store_path(out, "cmu")).slide_mtime == stat.st_mtime + 10


def test_different_settings_do_not_mix_into_one_folder(cmu_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    batch([cmu_copy], out)
    outcomes, log = batch([cmu_copy], out, TileConfig(tile_um=512))
    assert outcomes[0].status == "failed"
    assert "tile_um 256.0 -> 512.0" in outcomes[0].reason and "--overwrite" in outcomes[0].reason
    assert "error: " in log
    # An --mpp given later does not invalidate stores whose mpp came from the slide itself.
    assert batch([cmu_copy], out, TileConfig(mpp=0.5))[0][0].status == "skipped"


def test_stale_temporaries_are_removed_and_the_config_is_written(cmu_slide: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    stale = out / ".cmu.zarr.tmp-0123abcd"
    (stale / "coords").mkdir(parents=True)
    cfg = TileConfig(min_tissue=0.4)
    _, log = batch([cmu_slide], out, cfg)
    assert not stale.exists() and ".cmu.zarr.tmp-0123abcd" in log
    assert yaml.safe_load((out / RESOLVED_CONFIG_NAME).read_text()) == cfg.model_dump(mode="json")
    assert sorted(p.name for p in out.iterdir()) == [
        LOCK_FILE,
        "CMU-1-Small-Region.qc.png",
        "CMU-1-Small-Region.zarr",
        RESOLVED_CONFIG_NAME,
    ]


def test_bad_files_fail_alone(cmu_slide: Path, tmp_path: Path) -> None:
    text = tmp_path / "x.svs"
    text.write_text("not a slide")
    empty = tmp_path / "empty.svs"
    empty.touch()
    outcomes, log = batch([text, cmu_slide, empty], tmp_path / "tiles")
    assert [o.status for o in outcomes] == ["failed", "done", "failed"]
    assert "not a readable slide" in outcomes[0].reason and "empty file" in outcomes[2].reason
    assert "1 done, 0 skipped, 2 failed" in log
    assert not store_path(tmp_path / "tiles", "x").exists()


@pytest.mark.slow
def test_worker_processes(cmu_slide: Path, cmu_pyramid_slide: Path, tcga_slide: Path, tmp_path: Path) -> None:
    """Two processes (spawned, one slide handle each), progress through a queue, failures reported."""
    outcomes, log = batch([cmu_slide, tcga_slide, cmu_pyramid_slide], tmp_path / "tiles", workers=2)
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert "--mpp" in outcomes[1].reason
    assert outcomes[0].fields["kept"] == outcomes[2].fields["kept"] > 0
    assert "tiles/s" in log
