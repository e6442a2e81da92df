"""`wsi predict --features`: the fold ensemble on new, unlabelled bags, its outputs and its refusals."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tests.predict.conftest import CLASSES, DIM, NewBag, write_planted_bag
from wsi_pipeline.errors import WsiError
from wsi_pipeline.inference.ensemble import fold_probabilities
from wsi_pipeline.inference.faithfulness import deletion_test
from wsi_pipeline.inference.fold_models import load_fold_models
from wsi_pipeline.predict.config import PredictConfig
from wsi_pipeline.predict.run import run_prediction
from wsi_pipeline.stores.feature_bag import load_bag
from wsi_pipeline.stores.run_folder import EXTRACTOR_FILE, read_extractor_identity, read_run_info


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def probs_of(row: dict[str, str]) -> np.ndarray:
    return np.array([float(row[f"prob_{c}"]) for c in CLASSES])


def own_fold_probs(run: Path, bags: Path, slide_id: str) -> np.ndarray:
    """(k, 2): each fold model's probabilities, computed here without the predict code."""
    models = load_fold_models(read_run_info(run), torch.device("cpu"))
    x = torch.from_numpy(load_bag(bags / f"{slide_id}.h5").features).unsqueeze(0)
    with torch.no_grad():
        return np.stack([torch.softmax(fm.model(x).float(), -1)[0].numpy() for fm in models])


@pytest.fixture(scope="module")
def ensemble(
    kfold_run: Path, unlabelled: tuple[Path, list[NewBag]], tmp_path_factory: pytest.TempPathFactory
):
    out = tmp_path_factory.mktemp("ensemble") / "preds"
    bags, _ = unlabelled
    # Heatmaps cost about a second each (the PNG); `heatmapped` draws two.
    result = run_prediction(PredictConfig(features=bags, heatmaps=False, device="cpu"), kfold_run, out)
    return result, out


@pytest.fixture(scope="module")
def heatmapped(kfold_run: Path, unlabelled, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("heatmapped")
    bags = _copy_bags(unlabelled[0], root / "bags", 2)
    run_prediction(PredictConfig(features=bags, top_k=0, device="cpu"), kfold_run, root / "preds")
    return bags, root / "preds"


def test_training_records_the_extractor_identity(kfold_run: Path) -> None:
    identity = read_extractor_identity(kfold_run)
    assert identity is not None and (kfold_run / EXTRACTOR_FILE).is_file()
    assert (identity.extractor, identity.weights_sha256, identity.feature_dim) == (
        "synthetic",
        "synthetic-weights-A",
        DIM,
    )
    assert (identity.tile_um, identity.tile_px, identity.n_bags) == (256.0, 224, 30)
    assert identity.mpp == pytest.approx(256.0 / 224)


def test_ensemble_ranks_hidden_positives_first(ensemble, unlabelled) -> None:
    result, out = ensemble
    _, truth = unlabelled
    rows = {r["slide_id"]: r for r in read_rows(out / "predictions.csv")}
    assert sorted(rows) == sorted(b.slide_id for b in truth)  # a row per bag, no label anywhere
    assert "label" not in next(iter(rows.values()))
    scores = [probs_of(rows[b.slide_id])[1] for b in truth]
    assert roc_auc_score([b.positive for b in truth], scores) > 0.9
    for row in rows.values():
        p = probs_of(row)
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert row["predicted"] == CLASSES[int(p.argmax())]
        assert row["folds"] == "0;1;2" and int(row["n_tiles"]) > 0 and row["extractor_check"] == "ok"
        assert row["patient_id"] == row["slide_id"]  # not a TCGA barcode, no --patients
    assert all(o.status == "done" for o in result.outcomes)


def test_prediction_is_the_mean_of_all_folds_not_one(ensemble, kfold_run: Path, unlabelled) -> None:
    _, out = ensemble
    bags, truth = unlabelled
    rows = {r["slide_id"]: r for r in read_rows(out / "predictions.csv")}
    gap_to_fold0 = 0.0
    for bag in truth[:6]:
        per_fold = own_fold_probs(kfold_run, bags, bag.slide_id)
        assert np.allclose(probs_of(rows[bag.slide_id]), per_fold.mean(axis=0), atol=2e-6)
        gap_to_fold0 = max(gap_to_fold0, float(np.abs(per_fold.mean(axis=0) - per_fold[0]).max()))
    # The folds disagree enough that fold 0 alone would have failed the assertion above.
    assert gap_to_fold0 > 1e-3


def test_heatmap_is_the_mean_of_the_folds_scores_for_the_predicted_class(heatmapped, kfold_run) -> None:
    bags, out = heatmapped
    assert (out / "heatmaps" / "NEW-001.png").is_file()
    row = next(r for r in read_rows(out / "predictions.csv") if r["slide_id"] == "NEW-001")
    target = CLASSES.index(row["predicted"])
    models = load_fold_models(read_run_info(kfold_run), torch.device("cpu"))
    x = torch.from_numpy(load_bag(bags / "NEW-001.h5").features).unsqueeze(0)
    per_fold = [fm.model.tile_scores(x, target=target)[0].numpy() for fm in models]
    drawn = json.loads((out / "heatmaps" / "NEW-001.geojson").read_text())
    scores = np.array([f["properties"]["score"] for f in drawn["features"]])
    assert np.allclose(scores, np.mean(per_fold, axis=0), atol=1e-6)
    assert not np.allclose(scores, per_fold[0], atol=1e-6)
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["folds"] == [0, 1, 2] and "mean of the folds' tile scores" in summary["heatmap_scores"]


def test_every_map_reports_its_deletion_test(heatmapped, kfold_run) -> None:
    """The drops in predictions.csv are those of the map drawn (its own scores), for the ensemble's class."""
    bags, out = heatmapped
    models = load_fold_models(read_run_info(kfold_run), torch.device("cpu"))

    def ensemble_probs(x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(fold_probabilities(models, x, amp=True).mean(axis=0))

    rows = read_rows(out / "predictions.csv")
    for row in rows:
        drawn = json.loads((out / "heatmaps" / f"{row['slide_id']}.geojson").read_text())
        scores = torch.tensor([f["properties"]["score"] for f in drawn["features"]])
        x = torch.from_numpy(load_bag(bags / f"{row['slide_id']}.h5").features).unsqueeze(0)
        expected = deletion_test(ensemble_probs, x, scores)
        assert expected.predicted == CLASSES.index(row["predicted"])
        assert float(row["deletion_drop_top10"]) == pytest.approx(expected.top_drop, abs=1e-5)
        assert float(row["deletion_drop_random10"]) == pytest.approx(expected.random_drop, abs=1e-5)
    reported = json.loads((out / "predict_summary.json").read_text())["heatmap_faithfulness"]
    assert reported["n_slides"] == len(rows)
    mean_top = np.mean([float(r["deletion_drop_top10"]) for r in rows])
    assert reported["mean_drop_top"] == pytest.approx(mean_top, abs=1e-5)


def test_one_fold(kfold_run: Path, unlabelled, tmp_path: Path) -> None:
    bags, truth = unlabelled
    run_prediction(
        PredictConfig(features=bags, fold=1, heatmaps=False, device="cpu"), kfold_run, tmp_path / "p"
    )
    row = next(r for r in read_rows(tmp_path / "p" / "predictions.csv") if r["slide_id"] == truth[0].slide_id)
    assert row["folds"] == "1"
    assert np.allclose(probs_of(row), own_fold_probs(kfold_run, bags, truth[0].slide_id)[1], atol=2e-6)


def test_patient_level_pools_a_patients_slides(ensemble, kfold_run, unlabelled, tmp_path: Path) -> None:
    bags, truth = unlabelled
    table = tmp_path / "patients.csv"
    table.write_text(
        "slide_id,patient_id\n" + "".join(f"{b.slide_id},P{i // 2}\n" for i, b in enumerate(truth))
    )
    cfg = PredictConfig(features=bags, patients=table, patient_level=True, heatmaps=False, device="cpu")
    run_prediction(cfg, kfold_run, tmp_path / "p")
    slides = {r["slide_id"]: r for r in read_rows(tmp_path / "p" / "predictions.csv")}
    patients = read_rows(tmp_path / "p" / "patients.csv")
    assert len(patients) == len(truth) // 2
    first = patients[0]
    assert first["patient_id"] == "P0" and first["n_slides"] == "2"
    members = first["slide_ids"].split(";")
    assert all(slides[s]["patient_id"] == "P0" for s in members)
    expected = np.mean([probs_of(slides[s]) for s in members], axis=0)
    assert np.allclose(probs_of(first), expected, atol=2e-6)
    assert first["predicted"] == CLASSES[int(expected.argmax())]


def _copy_bags(bags: Path, dest: Path, n: int) -> Path:
    dest.mkdir(parents=True)
    for path in sorted(bags.glob("*.h5"))[:n]:
        shutil.copy(path, dest / path.name)
    return dest


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dim": 32}, "feature_dim"),
        ({"weights_sha256": "other-weights-B"}, "weights_sha256"),
        ({"extractor": "uni"}, "extractor"),
        ({"tile_um": 512.0}, "tile_um"),
    ],
)
def test_a_bag_of_another_extractor_is_refused_alone(
    kfold_run, unlabelled, tmp_path: Path, changes, field
) -> None:
    bags, _ = unlabelled
    folder = _copy_bags(bags, tmp_path / "bags", 3)
    dim = int(changes.pop("dim", DIM))
    write_planted_bag(folder, "ODD", True, np.random.default_rng(5), dim=dim, **changes)
    result = run_prediction(
        PredictConfig(features=folder, heatmaps=False, device="cpu"), kfold_run, tmp_path / "p"
    )
    refused = next(o for o in result.outcomes if o.slide_id == "ODD")
    assert refused.status == "failed" and "\n" not in refused.reason
    assert refused.reason.startswith(f"ODD: {field} ") and "the run's" in refused.reason
    assert sum(o.status == "done" for o in result.outcomes) == 3
    assert "ODD" not in {r["slide_id"] for r in read_rows(tmp_path / "p" / "predictions.csv")}


def test_allowed_mismatch_is_recorded(kfold_run, unlabelled, tmp_path: Path) -> None:
    bags, _ = unlabelled
    folder = _copy_bags(bags, tmp_path / "bags", 1)
    write_planted_bag(folder, "ODD", True, np.random.default_rng(5), weights_sha256="other-weights-B")
    cfg = PredictConfig(features=folder, allow_extractor_mismatch=True, heatmaps=False, device="cpu")
    run_prediction(cfg, kfold_run, tmp_path / "p")
    row = next(r for r in read_rows(tmp_path / "p" / "predictions.csv") if r["slide_id"] == "ODD")
    assert row["extractor_check"].startswith("mismatch allowed: weights_sha256 'other-weights-B'")


def test_wrong_dim_is_refused_even_when_mismatches_are_allowed(kfold_run, tmp_path: Path) -> None:
    (tmp_path / "bags").mkdir()
    write_planted_bag(tmp_path / "bags", "ODD", True, np.random.default_rng(5), dim=32)
    cfg = PredictConfig(features=tmp_path / "bags", allow_extractor_mismatch=True, device="cpu")
    result = run_prediction(cfg, kfold_run, tmp_path / "p")
    assert [o.status for o in result.outcomes] == ["failed"]
    assert "feature_dim 32 differs from the run's 64" in result.outcomes[0].reason


def test_run_without_extractor_record_checks_against_its_training_bags(
    kfold_run, unlabelled, tmp_path
) -> None:
    run = tmp_path / "old_run"
    shutil.copytree(kfold_run, run)
    (run / EXTRACTOR_FILE).unlink()
    bags, _ = unlabelled
    folder = _copy_bags(bags, tmp_path / "bags", 1)
    write_planted_bag(folder, "ODD", True, np.random.default_rng(5), weights_sha256="other-weights-B")
    result = run_prediction(PredictConfig(features=folder, heatmaps=False, device="cpu"), run, tmp_path / "p")
    assert [o.status for o in result.outcomes] == ["done", "failed"]


def test_mistakes_raise_one_line(kfold_run: Path, unlabelled, tmp_path: Path) -> None:
    bags, _ = unlabelled
    with pytest.raises(WsiError, match="has 3 fold"):
        run_prediction(PredictConfig(features=bags, fold=3), kfold_run, tmp_path / "p")


def test_an_unknown_score_method_is_one_line() -> None:
    from wsi_pipeline.config import load_config

    with pytest.raises(WsiError, match=r"score_method: .*unknown score method 'gradcam'"):
        load_config(PredictConfig, None, {"features": Path("x"), "score_method": "gradcam"})


def test_bags_beyond_graph_max_tiles_get_attention_maps(heatmapped, kfold_run: Path, tmp_path: Path) -> None:
    bags, _ = heatmapped
    cfg = PredictConfig(features=bags, score_method="relevance", graph_max_tiles=10, top_k=0, device="cpu")
    result = run_prediction(cfg, kfold_run, tmp_path / "p")
    outcome = next(o for o in result.outcomes if o.slide_id == "NEW-001")
    assert outcome.status == "done" and "attention scores (relevance on" in outcome.reason
    models = load_fold_models(read_run_info(kfold_run), torch.device("cpu"))
    x = torch.from_numpy(load_bag(bags / "NEW-001.h5").features).unsqueeze(0)
    expected = np.mean([fm.model.tile_scores(x, method="attention")[0].numpy() for fm in models], axis=0)
    drawn = json.loads((tmp_path / "p" / "heatmaps" / "NEW-001.geojson").read_text())
    assert np.allclose([f["properties"]["score"] for f in drawn["features"]], expected, atol=1e-6)


def test_global_scale_draws_every_map_after_scoring_on_one_bound(
    kfold_run: Path, unlabelled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsi_pipeline.inference import slide_heatmap

    drawn: list[tuple[str, float | None]] = []
    draw = slide_heatmap.write_slide_heatmap

    def spy(folder: Path, slide_id: str, *args: object, **kwargs: object) -> str:
        drawn.append((slide_id, kwargs.get("bound")))
        return draw(folder, slide_id, *args, **kwargs)

    monkeypatch.setattr(slide_heatmap, "write_slide_heatmap", spy)
    bags = _copy_bags(unlabelled[0], tmp_path / "bags", 2)
    cfg = PredictConfig(features=bags, top_k=0, heatmap_scale="global", device="cpu")
    result = run_prediction(cfg, kfold_run, tmp_path / "preds")
    assert all(o.status == "done" for o in result.outcomes)
    assert len(drawn) == 2 and drawn[0][1] is not None and drawn[0][1] == drawn[1][1]  # one shared scale
    assert sorted(p.stem for p in (tmp_path / "preds" / "heatmaps").glob("*.png")) == sorted(
        s for s, _ in drawn
    )
    saved = (tmp_path / "preds" / "predict_config.yaml").read_text()
    assert "heatmap_scale: global" in saved


def test_a_fold_whose_training_did_not_finish_is_a_warning_in_the_summary(
    kfold_run: Path, unlabelled, tmp_path: Path
) -> None:
    """Its checkpoint is an early epoch's, never calibrated: predicting with it must say so, as eval does."""
    run = tmp_path / "run"
    shutil.copytree(kfold_run, run)
    (run / "fold_1" / "result.json").unlink()
    bags = _copy_bags(unlabelled[0], tmp_path / "bags", 2)
    out = tmp_path / "preds"
    run_prediction(PredictConfig(features=bags, heatmaps=False, device="cpu"), run, out)
    warnings = json.loads((out / "predict_summary.json").read_text())["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("fold 1: training did not finish")
    only_fold_0 = PredictConfig(features=bags, fold=0, heatmaps=False, device="cpu")
    run_prediction(only_fold_0, run, tmp_path / "fold0")
    assert json.loads((tmp_path / "fold0" / "predict_summary.json").read_text())["warnings"] == []
