"""`wsi extract --backend ray` against the local backend: the same bags (features, coordinates, every
attribute) from tiny stores over the real slides, random-init RetCCL weights in the real layout; an empty
store's warning; resume; and a GPU request that no node can meet is refused instead of waiting forever."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.extract.cli_app import app
from tests.extract.helpers import CMU, CMU_PYRAMID, TISSUE_COORDS, make_store
from wsi_pipeline.stores.feature_bag import load_bag, read_bag_attrs

pytestmark = pytest.mark.slow


def extract(tiles: Path, out: Path, weights: Path, *options: str):
    args = [str(tiles), "--out", str(out), "--weights", str(weights), "--batch-size", "2", "--workers", "1"]
    return CliRunner().invoke(app, [*args, "--dtype", "float32", *options])


def test_ray_bags_equal_local_bags(ray_address: str, retccl_weights: Path, tmp_path: Path) -> None:
    tiles = tmp_path / "tiles"
    make_store(tiles, CMU, TISSUE_COORDS[:2])
    make_store(tiles, CMU_PYRAMID, TISSUE_COORDS[2:4])  # read at level 1
    empty_slide = tmp_path / "slides" / "empty.svs"
    empty_slide.parent.mkdir()
    shutil.copy2(CMU, empty_slide)
    make_store(tiles, empty_slide, np.zeros((0, 2), dtype=np.int64))

    local = extract(tiles, tmp_path / "local", retccl_weights)
    on_ray = extract(tiles, tmp_path / "ray", retccl_weights, "--backend", "ray")
    assert local.exit_code == 0, local.output
    assert on_ray.exit_code == 0, on_ray.output
    assert "3 done, 0 skipped, 0 failed" in on_ray.output
    assert "warning" in on_ray.output and "empty: its tile store has 0 tiles" in on_ray.output
    for slide_id, n_tiles in ((CMU.stem, 2), (CMU_PYRAMID.stem, 2), ("empty", 0)):
        ours, theirs = (load_bag(tmp_path / d / f"{slide_id}.h5") for d in ("local", "ray"))
        assert ours.n_tiles == theirs.n_tiles == n_tiles
        np.testing.assert_array_equal(ours.coords, theirs.coords)
        np.testing.assert_allclose(ours.features, theirs.features, rtol=1e-4, atol=1e-5)
        local_attrs, ray_attrs = (read_bag_attrs(tmp_path / d / f"{slide_id}.h5") for d in ("local", "ray"))
        assert local_attrs == ray_attrs  # the same recipe, slide, store and provenance
    assert (tmp_path / "local" / "extract_config.yaml").read_text() == (
        tmp_path / "ray" / "extract_config.yaml"
    ).read_text()

    again = extract(tiles, tmp_path / "ray", retccl_weights, "--backend", "ray")
    assert again.exit_code == 0 and "0 done, 3 skipped, 0 failed" in again.output


def test_cuda_on_a_cluster_without_gpus_is_refused(
    ray_address: str, retccl_weights: Path, tmp_path: Path
) -> None:
    make_store(tmp_path / "tiles", CMU, TISSUE_COORDS[:1])
    result = extract(
        tmp_path / "tiles", tmp_path / "out", retccl_weights, "--backend", "ray", "--device", "cuda"
    )
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "needs 2 CPUs and 1 GPU per slide, but no node of the Ray cluster has that" in line
    assert not (tmp_path / "out" / f"{CMU.stem}.h5").exists()
