"""`wsi tile --backend ray` against the local backend on the real test slides: the same stores, QC images
and config; the same failure, resume and exit-code rules; and a second process joining by `--address`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import CMU_PYRAMID_SLIDE, CMU_SLIDE
from wsi_pipeline.stores.tile_store import read_tile_store, store_path

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SLIDES = (CMU_SLIDE, CMU_PYRAMID_SLIDE)
ARRAYS = ("coords", "tissue_fraction", "blur_score", "thumbnail", "tissue_mask")


def wsi(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_ray_writes_what_the_local_backend_writes(ray_address: str, tmp_path: Path) -> None:
    local = wsi("tile", *SLIDES, "--out", tmp_path / "local")
    on_ray = wsi("tile", *SLIDES, "--out", tmp_path / "ray", "--backend", "ray")
    assert local.exit_code == 0, local.stderr
    assert on_ray.exit_code == 0, on_ray.stderr
    assert "2 done, 0 skipped, 0 failed" in on_ray.stderr and "on Ray" in on_ray.stderr
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ray").iterdir())
    assert len(names) == 6  # two stores, two QC images, the resolved config, the run's claim
    for slide in SLIDES:
        ours, theirs = (read_tile_store(store_path(tmp_path / d, slide.stem)) for d in ("local", "ray"))
        assert ours.n_tiles > 0
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name), err_msg=name)
        assert ours.meta == theirs.meta  # every attribute, the slide's path and mtime included
        qc = f"{slide.stem}.qc.png"
        assert (tmp_path / "local" / qc).read_bytes() == (tmp_path / "ray" / qc).read_bytes()
    config = "tile_config.yaml"
    assert (tmp_path / "local" / config).read_text() == (tmp_path / "ray" / config).read_text()
    # The QC paths on stdout, absolute: the tasks may have run anywhere.
    assert on_ray.stdout.splitlines() == [str(tmp_path / "ray" / f"{s.stem}.qc.png") for s in SLIDES]


def test_a_bad_file_fails_alone_on_ray(ray_address: str, tmp_path: Path) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy2(CMU_SLIDE, folder)
    (folder / "x.svs").write_text("a text file renamed to .svs\n")
    out = tmp_path / "out"
    result = wsi("tile", folder, "--out", out, "--backend", "ray")
    assert result.exit_code == 1
    assert store_path(out, CMU_SLIDE.stem).exists() and not store_path(out, "x").exists()
    [line] = error_lines(result.stderr)
    assert "x.svs: not a readable slide" in line
    assert "1 done, 0 skipped, 1 failed" in result.stderr and "Traceback" not in result.stderr


def test_another_process_resumes_through_the_cluster_address(ray_address: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert wsi("tile", CMU_SLIDE, "--out", out, "--backend", "ray").exit_code == 0
    written = store_path(out, CMU_SLIDE.stem).stat().st_mtime_ns
    # A driver of its own in another working directory, joining the running Ray as on a cluster; the
    # Ray started here by the tests uses Ray's default token authentication.
    command = [sys.executable, "-c", "from cli.main import app; app()", "tile", *map(str, SLIDES)]
    command += ["--out", str(out), "--backend", "ray", "--address", ray_address]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 done, 1 skipped, 0 failed" in done.stderr
    assert store_path(out, CMU_SLIDE.stem).stat().st_mtime_ns == written  # kept, not redone
    assert read_tile_store(store_path(out, CMU_PYRAMID_SLIDE.stem)).n_tiles > 0
