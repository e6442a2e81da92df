"""`wsi eval` delivers what training calibrated and standardised, and reports the mean-pooled baseline."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from wsi_pipeline.evaluate import EvalConfig, run_evaluation
from wsi_pipeline.evaluate.baseline import baseline_comparison
from wsi_pipeline.models import build_model
from wsi_pipeline.stores.feature_bag import load_bag
from wsi_pipeline.stores.run_folder import load_checkpoint, read_run_info


@pytest.fixture(scope="module")
def evaluated(kfold_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = Path(shutil.copytree(kfold_run, tmp_path_factory.mktemp("validity") / "run"))
    run_evaluation(EvalConfig(heatmaps=False, device="cpu"), run)
    return run


def test_metrics_hold_calibration_scores_and_the_baseline_side_by_side(evaluated: Path) -> None:
    metrics = json.loads((evaluated / "eval" / "metrics.json").read_text())
    assert 0 <= metrics["brier"] <= 2 and 0 <= metrics["ece"] <= 1
    assert all({"brier", "ece"} <= set(fold) for fold in metrics["per_fold"])
    assert metrics["baseline"]["auroc"] is not None and metrics["baseline"]["model_auroc"] == metrics["auroc"]
    with Image.open(evaluated / "eval" / "reliability.png") as image:
        assert image.format == "PNG"


def test_eval_probabilities_are_the_standardised_and_calibrated_ones(evaluated: Path) -> None:
    """Recomputed by hand: the network on (x - mean) / std, logits / T. Skipping the standardisation or the
    temperature in eval would change these numbers."""
    info = read_run_info(evaluated)
    with open(evaluated / "eval" / "fold_0" / "predictions.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    ckpt = load_checkpoint(evaluated / "fold_0" / "checkpoint.pt")
    state = ckpt.state_dict
    assert float(state["feature_std"].min()) < 0.99 or float(state["feature_mean"].abs().max()) > 0.01
    plain = build_model(ckpt.model_name, in_dim=ckpt.in_dim, n_classes=2, **ckpt.model_config).eval()
    plain.load_state_dict(
        {
            **state,
            "feature_mean": torch.zeros(ckpt.in_dim),
            "feature_std": torch.ones(ckpt.in_dim),
            "temperature": torch.ones(()),
        }
    )
    x = torch.from_numpy(load_bag(info.features / f"{row['slide_id']}.h5").features).float().unsqueeze(0)
    with torch.no_grad():
        expected = torch.softmax(
            plain((x - state["feature_mean"]) / state["feature_std"]) / state["temperature"], -1
        )
        skipped = torch.softmax(plain(x), -1)
    assert float(row["prob_positive"]) == pytest.approx(float(expected[0, 1]), abs=2e-5)
    assert abs(float(row["prob_positive"]) - float(skipped[0, 1])) > 1e-3


def test_a_model_below_the_baseline_interval_is_one_warning() -> None:
    base = {"auroc": 0.9, "auroc_ci": {"low": 0.85, "high": 0.95}, "accuracy": 0.8}
    entry, warning = baseline_comparison({"auroc": 0.8}, base)
    assert entry["auroc"] == 0.9 and warning is not None and "\n" not in warning and "0.8500" in warning
    assert baseline_comparison({"auroc": 0.86}, base)[1] is None
    assert baseline_comparison({"auroc": 0.86}, {**base, "auroc_ci": None})[1] is not None
