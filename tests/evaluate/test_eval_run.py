"""`wsi eval`: every listed output, pooled and per-fold metrics, external cohorts, per-slide failures."""

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.bags import make_cohort, write_labels
from tests.evaluate.cli_app import app
from tests.train.helpers import SMALL_DIM
from wsi_pipeline.errors import WsiError
from wsi_pipeline.evaluate import EvalConfig, run_evaluation
from wsi_pipeline.stores.feature_bag import load_bag
from wsi_pipeline.stores.run_folder import read_run_info, read_splits


def _copy(run: Path, tmp: Path) -> Path:
    """Each test evaluates its own copy, so outputs of one never satisfy another."""
    return Path(shutil.copytree(run, tmp / "run"))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_eval_writes_every_listed_output(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    result = CliRunner().invoke(app, ["--run", str(run), "--top-k", "4"])
    assert result.exit_code == 0, result.output
    out = run / "eval"
    assert result.stdout.startswith("test AUROC") and str(out) in result.stdout
    test_ids = sorted(r.slide_id for r in read_splits(run / "splits.csv") if r.split == "test")

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_slides"] == len(test_ids)
    assert {"auroc", "auroc_ci", "accuracy", "balanced_accuracy", "n_per_class"} <= set(metrics)
    # A handful of test patients per class: no interval, and a note that says why.
    assert metrics["auroc_ci"] is None and "fewer than 10 patients" in metrics["ci_note"]
    assert metrics["n_patients"] == len(test_ids) and metrics["scored"]["held-out"] == len(test_ids)
    assert sum(metrics["n_per_class"].values()) == len(test_ids)

    rows = _read_csv(out / "predictions.csv")
    assert list(rows[0])[:8] == [  # then the heatmap's deletion-test columns
        "slide_id",
        "patient_id",
        "label",
        "prob_negative",
        "prob_positive",
        "predicted",
        "source",
        "scored_by",
    ]
    assert [r["slide_id"] for r in rows] == test_ids
    for r in rows:
        assert float(r["prob_negative"]) + float(r["prob_positive"]) == pytest.approx(1, abs=1e-5)
        assert r["predicted"] == ("positive" if float(r["prob_positive"]) > 0.5 else "negative")
        assert r["patient_id"] == r["slide_id"][:12]

    with Image.open(out / "roc.png") as image:
        assert image.format == "PNG"
    features = read_run_info(run).features
    for slide_id in test_ids:
        with Image.open(out / "heatmaps" / f"{slide_id}.png") as image:
            assert image.format == "PNG"
        collection = json.loads((out / "heatmaps" / f"{slide_id}.geojson").read_text())
        assert len(collection["features"]) == load_bag(features / f"{slide_id}.h5").n_tiles
    # The synthetic bags point at slides that do not exist: the strip is skipped with a note, not a failure.
    assert not list((out / "heatmaps").glob("*.topk.png"))
    assert (
        "slide not reachable" in result.stderr
        and f"{len(test_ids)} done, 0 skipped, 0 failed" in result.stderr
    )
    assert (out / "config.yaml").is_file()


@pytest.mark.parametrize("method", ["attention", "layer_relevance"])
def test_score_method_option_picks_the_heatmap_scores(trained_run: Path, tmp_path: Path, method: str) -> None:
    """--score-method overrides the model's default; the GeoJSON carries that method's exact scores."""
    import torch

    from wsi_pipeline.inference.fold_models import load_fold_models

    run = _copy(trained_run, tmp_path)
    result = CliRunner().invoke(app, ["--run", str(run), "--top-k", "0", "--score-method", method])
    assert result.exit_code == 0, result.output
    model = load_fold_models(read_run_info(run), torch.device("cpu"))[0].model
    slide_id = next(r.slide_id for r in read_splits(run / "splits.csv") if r.split == "test")
    bag = load_bag(read_run_info(run).features / f"{slide_id}.h5")
    expected = model.tile_scores(torch.from_numpy(bag.features)[None], method=method)[0].numpy()
    collection = json.loads((run / "eval" / "heatmaps" / f"{slide_id}.geojson").read_text())
    measured = [f["properties"]["measurements"][f"{method} score"] for f in collection["features"]]
    assert measured == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-6)


def test_an_unknown_score_method_is_a_usage_error(trained_run: Path) -> None:
    result = CliRunner().invoke(app, ["--run", str(trained_run), "--score-method", "gradcam"])
    assert result.exit_code == 2 and "gradcam" in result.output


def test_kfold_eval_pools_out_of_fold_predictions_and_reports_each_fold(
    kfold_run: Path, tmp_path: Path
) -> None:
    run = _copy(kfold_run, tmp_path)
    result = run_evaluation(EvalConfig(heatmaps=False, n_bootstrap=50), run)
    metrics = result.metrics
    assert metrics["n_slides"] == 24 and len(metrics["per_fold"]) == 3
    assert sum(f["n_slides"] for f in metrics["per_fold"]) == 24
    assert metrics["fold_summary"]["accuracy"]["n_folds"] == 3
    pooled = {r["slide_id"]: r for r in _read_csv(run / "eval" / "predictions.csv")}
    for fold in range(3):
        for r in _read_csv(run / "eval" / f"fold_{fold}" / "predictions.csv"):
            assert pooled[r["slide_id"]]["prob_positive"] == r["prob_positive"]
    assert not (run / "eval" / "heatmaps").exists()


def _external_cohort(folder: Path, n: int) -> Path:
    """`n` bags of patients the runs never saw (synthetic ids restart at patient 0, so they are renamed)."""
    slides = make_cohort(folder, n, planted_fraction=0.3, tiles=(20, 40), dim=SMALL_DIM, seed=7)
    for s in slides:
        (folder / f"{s.slide_id}.h5").rename(folder / f"EXT-{s.slide_id}.h5")
    renamed = [replace(s, slide_id=f"EXT-{s.slide_id}", patient_id=f"EXT-{s.patient_id}") for s in slides]
    return write_labels(folder.with_suffix(".csv"), renamed)


def test_external_cohort_with_split_all_averages_the_folds(kfold_run: Path, tmp_path: Path) -> None:
    run = _copy(kfold_run, tmp_path)
    labels = _external_cohort(tmp_path / "external", 6)
    result = run_evaluation(
        EvalConfig(split="all", features=tmp_path / "external", labels=labels, n_bootstrap=10, top_k=0), run
    )
    assert result.out_dir == run / "eval-all" and result.metrics["n_slides"] == 6
    assert all(len(_read_csv(run / "eval-all" / f"fold_{f}" / "predictions.csv")) == 6 for f in range(3))
    assert len(list((run / "eval-all" / "heatmaps").glob("*.geojson"))) == 6
    assert not (run / "eval").exists()


def test_a_slide_without_its_bag_fails_alone_and_exits_1(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    features = Path(shutil.copytree(read_run_info(run).features, tmp_path / "features"))
    test_ids = sorted(r.slide_id for r in read_splits(run / "splits.csv") if r.split == "test")
    (features / f"{test_ids[0]}.h5").unlink()
    result = CliRunner().invoke(app, ["--run", str(run), "--features", str(features), "--no-heatmaps"])
    assert result.exit_code == 1
    assert test_ids[0] in result.stderr and "no bag in" in result.stderr
    assert len(_read_csv(run / "eval" / "predictions.csv")) == len(test_ids) - 1
    assert not (run / "eval" / "heatmaps").exists()


def test_a_run_folder_is_required(tmp_path: Path) -> None:
    with pytest.raises(WsiError, match="not a run folder"):
        run_evaluation(EvalConfig(), tmp_path)
    result = CliRunner().invoke(app, ["--run", str(tmp_path)])
    assert result.exit_code == 1 and result.stderr.strip().startswith(f"error: {tmp_path}: not a run folder")


def test_three_classes_train_and_evaluate_one_vs_rest(tmp_path: Path) -> None:
    slides = make_cohort(tmp_path / "features", 18, planted_fraction=0.3, tiles=(20, 40), dim=SMALL_DIM)
    classes = ["a", "b", "c"]
    splits = ["train"] * 9 + ["val"] * 3 + ["test"] * 6
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(
            [
                ["slide_id", "label", "split"],
                *([s.slide_id, classes[i % 3], splits[i]] for i, s in enumerate(slides)),
            ]
        )
    from tests.train.helpers import quick_config
    from wsi_pipeline.train import run_training

    run_training(quick_config(tmp_path, epochs=1), tmp_path / "run")
    result = run_evaluation(EvalConfig(n_bootstrap=20, top_k=0), tmp_path / "run")
    assert set(result.metrics["per_class_auroc"]) == set(classes) and result.metrics["auroc"] is not None
    assert list(_read_csv(tmp_path / "run" / "eval" / "predictions.csv")[0])[3:6] == [
        "prob_a",
        "prob_b",
        "prob_c",
    ]
