"""The deletion test: a map that points at the evidence drops the prediction more than random removal."""

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from wsi_pipeline.evaluate import EvalConfig, run_evaluation
from wsi_pipeline.inference.faithfulness import (
    DELETION_COLUMNS,
    DeletionTest,
    annotate_predictions,
    deletion_test,
    insertion_test,
    model_probabilities,
    summary,
    tile_subsets,
)
from wsi_pipeline.models import build_model


def evidence_model() -> torch.nn.Module:
    """`mean_linear` whose positive logit is 4 x the mean of feature 0: tiles high in feature 0 are the
    evidence, and removing them lowers P(positive)."""
    model = build_model("mean_linear", in_dim=6, n_classes=2).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.weight[1, 0] = 4.0
    return model


def planted_bag(n: int = 50, planted: int = 5) -> torch.Tensor:
    x = torch.randn(1, n, 6, generator=torch.Generator().manual_seed(0)) * 0.1
    x[0, :planted, 0] += 3.0
    return x


def test_scores_that_point_at_the_evidence_drop_more_than_random() -> None:
    model, x = evidence_model(), planted_bag()
    predict = model_probabilities(model)
    faithful = deletion_test(predict, x, x[0, :, 0])
    assert faithful.predicted == 1 and faithful.prob > 0.5
    assert faithful.top_drop > 0.1 and faithful.top_drop > 3 * abs(faithful.random_drop)
    backwards = deletion_test(predict, x, -x[0, :, 0])
    assert backwards.top_drop < 0 < faithful.top_drop
    # The probabilities of the whole bag, when the caller has them, save a forward and change nothing.
    assert deletion_test(predict, x, x[0, :, 0], whole=predict(x)) == faithful
    top, random = insertion_test(predict, x, x[0, :, 0], target=1)
    assert top > random


def test_subsets_take_ten_percent_never_none_and_never_all() -> None:
    for n in (2, 7, 100):
        top, random = tile_subsets(torch.arange(n, dtype=torch.float32), 0.1, seed=0)
        k = min(max(1, round(0.1 * n)), n - 1)
        assert int(top.sum()) == int(random.sum()) == k
        assert top[n - k :].all()
    with pytest.raises(ValueError, match="2 tiles"):
        deletion_test(model_probabilities(evidence_model()), planted_bag(1, 1), torch.zeros(1))


def test_predictions_gain_the_drops_and_metrics_their_mean(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text("slide_id,label\na,x\nb,y\n")
    tests = {"a": DeletionTest(predicted=1, prob=0.9, without_top=0.5, without_random=0.85)}
    annotate_predictions(path, tests)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert rows[0][DELETION_COLUMNS[0]] == "0.400000" and rows[0][DELETION_COLUMNS[1]] == "0.050000"
    assert rows[1][DELETION_COLUMNS[0]] == ""
    assert summary(tests)["mean_drop_top"] == pytest.approx(0.4)
    assert summary({})["n_slides"] == 0


def test_eval_reports_the_deletion_test_per_slide_and_its_mean(trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    result = run_evaluation(EvalConfig(top_k=0), run)
    rows = list(csv.DictReader(io.StringIO((result.out_dir / "predictions.csv").read_text())))
    drops = [float(r[DELETION_COLUMNS[0]]) for r in rows]
    assert rows and all(-1 <= d <= 1 for d in drops)
    faith = json.loads((result.out_dir / "metrics.json").read_text())["heatmap_faithfulness"]
    assert faith["n_slides"] == len(rows)
    assert faith["mean_drop_top"] == pytest.approx(sum(drops) / len(drops), abs=1e-5)
