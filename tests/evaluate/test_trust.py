"""Evaluation you can trust (issue 12): no model scores a slide it saw, patient-level statistics, failures
that explain themselves, other tools' bags with heatmaps, one numeric path, suspect runs flagged, --out."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.evaluate.cli_app import app
from tests.stores.tool_layouts import write_clam_bag, write_stamp_bag, write_trident_bag
from wsi_pipeline.evaluate import EvalConfig, run_evaluation
from wsi_pipeline.evaluate.metrics import classification_metrics
from wsi_pipeline.evaluate.suspect import one_class_predictions
from wsi_pipeline.inference.fold_models import load_fold_models
from wsi_pipeline.stores.feature_bag import load_bag
from wsi_pipeline.stores.run_folder import load_checkpoint, read_run_info, read_splits
from wsi_pipeline.stores.tile_store import TileStore, TileStoreMeta, store_path, write_tile_store


def _copy(run: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(run, tmp / "run"))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _ids(run: Path, split: str) -> list[str]:
    return sorted({r.slide_id for r in read_splits(run / "splits.csv") if r.split == split})


# -- 1. no training slide is ever scored as held-out ------------------------------------------------------


def test_cv_split_all_on_its_own_cohort_gives_exactly_the_out_of_fold_predictions(
    kfold_run: Path, tmp_path: Path
) -> None:
    run = _copy(kfold_run, tmp_path)
    run_evaluation(EvalConfig(heatmaps=False, n_bootstrap=0), run)
    result = CliRunner().invoke(app, ["--run", str(run), "--split", "all", "--no-heatmaps"])
    assert result.exit_code == 0, result.output
    test = {r["slide_id"]: r for r in _rows(run / "eval" / "predictions.csv")}
    everything = {r["slide_id"]: r for r in _rows(run / "eval-all" / "predictions.csv")}
    assert set(everything) == set(test) and len(test) == 24
    for slide_id, row in everything.items():
        assert row["prob_positive"] == test[slide_id]["prob_positive"]
        assert row["source"] == "out-of-fold" and row["scored_by"].startswith("fold ")
    metrics = json.loads((run / "eval-all" / "metrics.json").read_text())
    assert metrics["scored"] == {"out-of-fold": 24, "ensemble": 0, "held-out": 0, "seen": 0, "excluded": 0}
    assert "slides scored: 24 out-of-fold, 0 excluded" in result.stderr


def test_a_new_slide_of_a_training_patient_gets_only_its_patients_test_fold(
    kfold_run: Path, tmp_path: Path
) -> None:
    """Seen by patient id: another slide of a patient whose slide trained folds a and b goes to fold c."""
    run = _copy(kfold_run, tmp_path)
    features = Path(shutil.copytree(read_run_info(run).features, tmp_path / "features"))
    splits = read_splits(run / "splits.csv")
    source = splits[0]
    shutil.copy(features / f"{source.slide_id}.h5", features / "other-slide.h5")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"slide_id,label,patient_id\nother-slide,{source.label},{source.patient_id}\n")
    result = run_evaluation(
        EvalConfig(split="all", features=features, labels=labels, heatmaps=False, n_bootstrap=0), run
    )
    test_fold = next(r.fold for r in splits if r.slide_id == source.slide_id and r.split == "test")
    assert result.metrics["scored"]["out-of-fold"] == 1
    assert _rows(run / "eval-all" / "predictions.csv")[0]["scored_by"] == f"fold {test_fold} (held out)"


def test_single_split_refuses_its_own_train_slides_unless_include_seen(
    trained_run: Path, tmp_path: Path
) -> None:
    run = _copy(trained_run, tmp_path)
    refused = CliRunner().invoke(app, ["--run", str(run), "--split", "all", "--no-heatmaps"])
    assert refused.exit_code == 1 and "--include-seen" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    seen = set(_ids(run, "train")) | set(_ids(run, "val"))
    result = CliRunner().invoke(
        app,
        [
            "--run",
            str(run),
            "--split",
            "all",
            "--include-seen",
            "--no-heatmaps",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "o" / "predictions.csv")
    assert {r["slide_id"] for r in rows if r["source"] == "seen"} == seen
    assert {r["slide_id"] for r in rows if r["source"] == "held-out"} == set(_ids(run, "test"))
    assert "not a held-out estimate" in json.loads((tmp_path / "o" / "metrics.json").read_text())["seen_note"]


# -- 2. patient-level statistics ---------------------------------------------------------------------------


def test_the_bootstrap_resamples_patients_so_repeated_slides_widen_the_interval() -> None:
    rng = np.random.default_rng(0)
    n_patients = 40
    targets = np.repeat(np.arange(n_patients) % 2, 5)  # 5 slides per patient
    patient_effect = np.repeat(rng.normal(0, 0.25, n_patients), 5)
    p1 = np.clip(0.5 + 0.15 * (targets - 0.5) * 2 + patient_effect + rng.normal(0, 0.02, len(targets)), 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    patients = np.repeat(np.arange(n_patients), 5)
    by_slide = classification_metrics(targets, probs, ("a", "b"), n_bootstrap=300)
    by_patient = classification_metrics(targets, probs, ("a", "b"), patients=patients, n_bootstrap=300)
    assert by_patient["auroc"] == by_slide["auroc"]
    assert by_patient["n_patients"] == 40 and by_patient["n_slides"] == 200
    width = {k: m["auroc_ci"]["high"] - m["auroc_ci"]["low"] for k, m in (("s", by_slide), ("p", by_patient))}
    assert width["p"] > 1.5 * width["s"]


def test_no_interval_below_ten_patients_per_class() -> None:
    targets = np.array([0] * 9 + [1] * 30)
    probs = np.stack([1 - targets * 0.6, targets * 0.6], axis=1) + 0.1
    metrics = classification_metrics(targets, probs, ("a", "b"), n_bootstrap=100)
    assert metrics["auroc_ci"] is None and "fewer than 10 patients in class a (9)" in metrics["ci_note"]


def test_patient_level_auroc_uses_each_patients_mean_probability(patient_run: Path, tmp_path: Path) -> None:
    run = _copy(patient_run, tmp_path)
    result = run_evaluation(EvalConfig(level="patient", heatmaps=False, n_bootstrap=0), run)
    assert result.out_dir == run / "eval-patient"
    slides = _rows(run / "eval-patient" / "predictions.csv")
    patients = {r["patient_id"]: r for r in _rows(run / "eval-patient" / "patient_predictions.csv")}
    assert result.metrics["n_slides"] == len(slides) == 2 * len(patients) == 2 * result.metrics["n_patients"]
    for patient, row in patients.items():
        mine = [float(r["prob_positive"]) for r in slides if r["patient_id"] == patient]
        assert float(row["prob_positive"]) == pytest.approx(np.mean(mine), abs=2e-6)
    from sklearn.metrics import roc_auc_score

    targets = [r["label"] == "positive" for r in patients.values()]
    expected = roc_auc_score(targets, [float(r["prob_positive"]) for r in patients.values()])
    assert (
        result.metrics["auroc"] == pytest.approx(expected, abs=1e-5) and result.metrics["level"] == "patient"
    )


def test_cv_console_prints_pooled_and_per_fold_auroc_with_mean_and_sd(
    kfold_run: Path, tmp_path: Path
) -> None:
    run = _copy(kfold_run, tmp_path)
    result = CliRunner().invoke(app, ["--run", str(run), "--no-heatmaps"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert "pooled AUROC" in result.stderr
    for fold in metrics["per_fold"]:
        assert f"fold {fold['fold']} AUROC {fold['auroc']:.4f}" in result.stderr
    summary = metrics["fold_summary"]["auroc"]
    assert f"per-fold AUROC mean {summary['mean']:.4f} ± {summary['sd']:.4f}" in result.stderr


# -- 4. one bad slide never stops eval ----------------------------------------------------------------------


def test_a_nan_bag_among_good_ones_fails_alone_and_metrics_exist(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    features = Path(shutil.copytree(read_run_info(run).features, tmp_path / "features"))
    bad = _ids(run, "test")[0]
    bag = load_bag(features / f"{bad}.h5")
    broken = bag.features.astype(np.float32)
    broken[0, 0] = np.nan
    (features / f"{bad}.h5").unlink()
    write_clam_bag(features / f"{bad}.h5", broken, bag.coords)
    result = CliRunner().invoke(app, ["--run", str(run), "--features", str(features), "--no-heatmaps"])
    assert result.exit_code == 1, result.output
    assert f"slide {bad}" in result.stderr and "NaN or inf" in result.stderr
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["n_slides"] == len(_ids(run, "test")) - 1


def test_an_out_of_memory_error_fails_that_slide_only(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsi_pipeline.evaluate import scoring

    run = _copy(trained_run, tmp_path)
    victim = _ids(run, "test")[1]
    original = scoring.SlideScorer._probabilities

    def huge(self, fm, x, path):  # type: ignore[no-untyped-def]
        if path.stem == victim:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return original(self, fm, x, path)

    monkeypatch.setattr(scoring.SlideScorer, "_probabilities", huge)
    result = CliRunner().invoke(app, ["--run", str(run), "--no-heatmaps"])
    assert result.exit_code == 1 and "out of memory on its" in result.stderr
    assert len(_rows(run / "eval" / "predictions.csv")) == len(_ids(run, "test")) - 1


def test_when_every_slide_fails_the_table_of_reasons_comes_before_the_error(
    trained_run: Path, tmp_path: Path
) -> None:
    run = _copy(trained_run, tmp_path)
    features = tmp_path / "features"
    features.mkdir()
    for slide_id in _ids(run, "test"):
        (features / f"{slide_id}.h5").write_bytes(b"not hdf5")
    result = CliRunner().invoke(app, ["--run", str(run), "--features", str(features)])
    assert result.exit_code == 1
    table_at = result.stderr.index(_ids(run, "test")[0])
    error_at = result.stderr.index("error: no slide of split 'test' could be evaluated")
    assert table_at < error_at and "truncated or corrupt" in result.stderr[:error_at]


# -- 5 and 6. other tools' bags evaluate with heatmaps that fit the slide ------------------------------------


def _tool_features(run: Path, tmp: Path, layout: str) -> Path:
    """The run's test bags rewritten in a tool's layout (same features and tiles)."""
    source = read_run_info(run).features
    folder = tmp / f"features-{layout}"
    folder.mkdir()
    for slide_id in _ids(run, "test"):
        bag = load_bag(source / f"{slide_id}.h5")
        path = folder / f"{slide_id}.h5"
        if layout == "stamp":
            write_stamp_bag(path, bag.features, bag.coords, mpp=0.5, tile_um=256.0, tile_px=224)
        elif layout == "clam":
            write_clam_bag(path, bag.features.astype(np.float32), bag.coords)
        else:
            write_trident_bag(path, bag.features.astype(np.float32), bag.coords, 512, (8192, 8192))
    return folder


def _tile_stores(
    run: Path, folder: Path, mpp: float, thumbnail_px: int = 160, downsample: float = 32.0
) -> Path:
    for slide_id in _ids(run, "test"):
        meta = TileStoreMeta(
            slide_id=slide_id, slide_path="x.svs", slide_bytes=1, slide_mtime=0.0, mpp_level0=mpp,
            mpp_source="metadata", tile_px=224, tile_um=256.0, tile_px_level0=round(256 / mpp), read_level=0,
            read_downsample=1.0, thumbnail_downsample=downsample, tissue_method="otsu", thresholds={},
            n_candidates=0, n_kept=0, rejected={}, wsi_version="test",
        )  # fmt: skip
        thumbnail = np.full((thumbnail_px, thumbnail_px, 3), 230, np.uint8)
        empty = np.zeros(0, np.float32)
        store = TileStore(np.zeros((0, 2), np.int64), empty, empty, thumbnail, thumbnail[..., 0] > 0, meta)
        write_tile_store(store_path(folder, slide_id), store)
    return folder


@pytest.mark.parametrize("layout", ["stamp", "clam", "trident"])
def test_tool_bags_evaluate_with_heatmaps(trained_run: Path, tmp_path: Path, layout: str) -> None:
    run = _copy(trained_run, tmp_path)
    features = _tool_features(run, tmp_path, layout)
    tiles = _tile_stores(run, tmp_path / "tiles", mpp=0.5)
    result = CliRunner().invoke(
        app, ["--run", str(run), "--features", str(features), "--tiles", str(tiles), "--top-k", "0"]
    )
    assert result.exit_code == 0, result.output
    source = read_run_info(run).features
    for slide_id in _ids(run, "test"):
        geojson = json.loads((run / "eval" / "heatmaps" / f"{slide_id}.geojson").read_text())
        corners = [f["geometry"]["coordinates"][0][0] for f in geojson["features"]]
        assert corners == load_bag(source / f"{slide_id}.h5").coords.tolist()


def test_stamp_bag_without_any_resolution_is_scored_and_its_heatmap_skipped(
    trained_run: Path, tmp_path: Path
) -> None:
    run = _copy(trained_run, tmp_path)
    features = _tool_features(run, tmp_path, "stamp")
    result = CliRunner().invoke(app, ["--run", str(run), "--features", str(features), "--top-k", "0"])
    assert result.exit_code == 0, result.output
    assert "no heatmap" in result.stderr and "--tiles" in result.stderr
    assert result.stderr.count("warning: no --tiles") == 1  # once, not once per slide
    assert len(_rows(run / "eval" / "predictions.csv")) == len(_ids(run, "test"))
    assert not list((run / "eval" / "heatmaps").glob("*.png"))


def test_tiles_outside_the_thumbnail_fail_the_heatmap_with_a_units_message(
    trained_run: Path, tmp_path: Path
) -> None:
    """A STAMP bag read with half the true mpp lands its tiles at twice their place: off the thumbnail."""
    run = _copy(trained_run, tmp_path)
    features = _tool_features(run, tmp_path, "stamp")
    tiles = _tile_stores(run, tmp_path / "tiles", mpp=0.25, thumbnail_px=150)
    result = CliRunner().invoke(
        app, ["--run", str(run), "--features", str(features), "--tiles", str(tiles), "--top-k", "0"]
    )
    assert result.exit_code == 1
    assert "lie outside the slide's thumbnail" in result.stderr and "mpp" in result.stderr
    assert len(_rows(run / "eval" / "predictions.csv")) == len(_ids(run, "test"))


def test_without_a_thumbnail_the_canvas_outlines_the_tile_grid() -> None:
    from wsi_pipeline.inference import heatmaps as hm

    coords = np.array([[0, 0], [512, 0], [2048, 1024]])
    canvas = hm.grid_canvas(coords, 512, max_px=64)
    image = canvas.image
    assert canvas.source == "grid" and image.shape == (39, 64, 3) and canvas.downsample == 40.0
    assert (image[0, 0:12] == 200).all() and (image[0:12, 0] == 200).all()  # the first tile's outline
    assert (image[5, 5] == 255).all() and (image[30, 5] == 255).all()  # inside a tile; where no tile is
    assert (image[38, 51:64] == 200).all()  # the last tile's bottom edge


def test_cv_heatmap_of_an_ensemble_slide_is_the_folds_mean_for_the_predicted_class(
    kfold_run: Path, tmp_path: Path
) -> None:
    from tests.evaluate.test_eval_run import _external_cohort

    run = _copy(kfold_run, tmp_path)
    labels = _external_cohort(tmp_path / "external", 2)
    result = run_evaluation(
        EvalConfig(split="all", features=tmp_path / "external", labels=labels, n_bootstrap=0, top_k=0), run
    )
    assert all(o.fields["scored by"] == "ensemble of 3 folds" for o in result.outcomes)
    models = load_fold_models(read_run_info(run), torch.device("cpu"))
    for row in _rows(run / "eval-all" / "predictions.csv"):
        bag = load_bag(tmp_path / "external" / f"{row['slide_id']}.h5")
        x = torch.from_numpy(bag.features)[None]
        target = ["negative", "positive"].index(row["predicted"])
        method = models[0].model.default_score_method
        expected = np.mean(
            [fm.model.tile_scores(x, method=method, target=target)[0].numpy() for fm in models], 0
        )
        geojson = json.loads((run / "eval-all" / "heatmaps" / f"{row['slide_id']}.geojson").read_text())
        measured = [f["properties"]["score"] for f in geojson["features"]]
        assert measured == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-6)


# -- 7. one numeric path -----------------------------------------------------------------------------------


def test_eval_split_val_reproduces_the_checkpoints_val_auroc(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    result = run_evaluation(EvalConfig(split="val", heatmaps=False, n_bootstrap=0), run)
    assert result.metrics["auroc"] == pytest.approx(
        load_checkpoint(run / "checkpoint.pt").val_auroc, abs=1e-6
    )
    assert result.metrics["scored"]["seen"] == len(_ids(run, "val"))


def test_a_float32_bag_is_scored_as_training_holds_it(trained_run: Path, tmp_path: Path) -> None:
    """CLAM stores float32; training holds every bag as float16, so eval must too, to the last digit."""
    from wsi_pipeline.train.bags import BagCache

    run = _copy(trained_run, tmp_path)
    features = _tool_features(run, tmp_path, "clam")
    rng = np.random.default_rng(0)
    for path in features.iterdir():  # values between float16 steps, so a float32 path would differ
        bag = load_bag(path)
        noisy = bag.features + rng.normal(0, 0.02, bag.features.shape).astype(np.float32)
        path.unlink()
        write_clam_bag(path, noisy, bag.coords)
    run_evaluation(EvalConfig(features=features, heatmaps=False, n_bootstrap=0), run)
    model = load_fold_models(read_run_info(run), torch.device("cpu"))[0].model
    cache = BagCache({p.stem: p for p in features.iterdir()}, "memory", torch.device("cpu"))
    cache.load(None)
    for row in _rows(run / "eval" / "predictions.csv"):
        with torch.no_grad():
            probs = torch.softmax(model(cache.get(row["slide_id"])[None]).float(), dim=-1)[0]
        assert row["prob_positive"] == f"{float(probs[1]):.6f}"


# -- 9. unfinished or degenerate runs are flagged ------------------------------------------------------------


def test_an_unfinished_run_is_flagged_beside_the_auroc(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    (run / "result.json").unlink()
    result = CliRunner().invoke(app, ["--run", str(run), "--no-heatmaps"])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith("test AUROC") and "WARNING: training did not finish" in line
    assert f"wsi train --out {run} --resume" in line


def test_one_class_for_every_slide_is_flagged() -> None:
    assert "every slide is predicted 'b'" in one_class_predictions(np.array([1, 1, 1]), ("a", "b"))[0]
    assert one_class_predictions(np.array([0, 1, 1]), ("a", "b")) == []


# -- 10. --out and atomic replacement -----------------------------------------------------------------------


def test_out_writes_elsewhere_and_re_evaluation_leaves_nothing_stale(
    trained_run: Path, tmp_path: Path
) -> None:
    run = _copy(trained_run, tmp_path)
    out = tmp_path / "elsewhere"
    for path in [run, *run.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)  # a read-only run folder
    try:
        first = CliRunner().invoke(app, ["--run", str(run), "--out", str(out), "--top-k", "0"])
        assert first.exit_code == 0, first.output
        (out / "heatmaps" / "old-slide.topk.png").write_bytes(b"stale")
        second = CliRunner().invoke(app, ["--run", str(run), "--out", str(out), "--no-heatmaps"])
        assert second.exit_code == 0, second.output
    finally:
        for path in [run, *run.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert (out / "metrics.json").is_file() and not (out / "heatmaps").exists()
    assert not (run / "eval").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
