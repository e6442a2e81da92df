"""`wsi predict --slides` on a real slide: tiled and extracted as the run's bags were, then predicted.

The run is trained on synthetic 2048-d bags whose attributes say "retccl, random-init weights, 128 µm tiles
of 112 px" (not today's 256 µm / 224 px defaults), so the test can tell that predict took the geometry and
the extractor from the run and not from the defaults (the same 1.14 µm/px as the defaults, so the tissue
and focus filters keep tiles; 112 px tiles keep the CPU extraction short).
"""

from pathlib import Path

import pytest

from tests.conftest import CMU_SLIDE
from tests.predict.conftest import planted_run
from wsi_pipeline.errors import WsiError
from wsi_pipeline.predict.config import PredictConfig
from wsi_pipeline.predict.run import run_prediction
from wsi_pipeline.predict.slides import tile_config_of
from wsi_pipeline.stores.feature_bag import read_bag_attrs
from wsi_pipeline.stores.run_folder import read_extractor_identity

pytestmark = pytest.mark.slow  # tiles and extracts a real slide with a ResNet-50

TILE_UM, TILE_PX = 128.0, 112


@pytest.fixture(scope="module")
def retccl_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wsi_pipeline.extract.registry import build_extractor

    fingerprint = build_extractor("retccl", None, random_init=True).weights_sha256
    root = tmp_path_factory.mktemp("retccl_run")
    return planted_run(
        root,
        16,
        epochs=1,
        embed_dim=16,
        dim=2048,
        extractor="retccl",
        weights_sha256=fingerprint,
        tile_um=TILE_UM,
        tile_px=TILE_PX,
    )


def test_slides_are_tiled_extracted_and_predicted_as_the_run_was(retccl_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.svs"
    broken.write_text("not a slide")
    out = tmp_path / "preds"
    cfg = PredictConfig(slides=[CMU_SLIDE, broken], random_init=True, top_k=2, device="cpu")
    result = run_prediction(cfg, retccl_run, out)

    status = {o.slide_id: o.status for o in result.outcomes}
    assert status == {"CMU-1-Small-Region": "done", "broken": "failed"}  # the bad slide fails alone
    assert [p.slide_id for p in result.predictions] == ["CMU-1-Small-Region"]
    attrs = read_bag_attrs(out / "features" / "CMU-1-Small-Region.h5")
    identity = read_extractor_identity(retccl_run)
    assert identity is not None
    assert (attrs["tile_um"], attrs["tile_px"]) == (TILE_UM, TILE_PX)  # the run's geometry, not the defaults
    assert (attrs["extractor"], attrs["weights_sha256"]) == ("retccl", identity.weights_sha256)
    assert (out / "tiles" / "CMU-1-Small-Region.zarr").is_dir()
    heatmaps = out / "heatmaps"
    assert (heatmaps / "CMU-1-Small-Region.png").is_file() and (
        heatmaps / "CMU-1-Small-Region.topk.png"
    ).is_file()
    assert "CMU-1-Small-Region," in (out / "predictions.csv").read_text()

    # Re-running resumes: the tile store and the bag are kept, not redone.
    bag_mtime = (out / "features" / "CMU-1-Small-Region.h5").stat().st_mtime_ns
    again = run_prediction(cfg.model_copy(update={"slides": [CMU_SLIDE]}), retccl_run, out)
    assert [o.status for o in again.outcomes] == ["done"]
    assert (out / "features" / "CMU-1-Small-Region.h5").stat().st_mtime_ns == bag_mtime


def test_weights_other_than_the_runs_are_refused_before_reading_a_slide(
    retccl_run: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "other.pt"
    weights.write_bytes(b"another network's weights")  # compared by SHA-256 before anything is loaded
    cfg = PredictConfig(slides=[CMU_SLIDE], weights=weights, device="cpu")
    with pytest.raises(WsiError, match=r"weights_sha256 .* differs from the run's"):
        run_prediction(cfg, retccl_run, tmp_path / "preds")
    assert not (tmp_path / "preds" / "tiles").exists()


def test_recorded_tile_filters_are_used(retccl_run: Path) -> None:
    from dataclasses import replace

    identity = read_extractor_identity(retccl_run)
    assert identity is not None
    tiling = {"tissue_method": "otsu", "min_tissue": 0.25, "white_gray": 230.0, "tile_um": 999.0}
    cfg = tile_config_of(replace(identity, tiling=tiling), mpp=None)
    assert (cfg.tile_um, cfg.tile_px, cfg.min_tissue, cfg.white_gray) == (TILE_UM, TILE_PX, 0.25, 230)
