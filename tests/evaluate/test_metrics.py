"""Metrics: AUROC with a seeded, stratified bootstrap interval; multi-class macro and per-class AUROC."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from wsi_pipeline.evaluate.metrics import classification_metrics, fold_summary


def _binary(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, n)
    p1 = np.clip(0.5 + 0.3 * (targets - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    return targets, np.stack([1 - p1, p1], axis=1)


def test_binary_metrics_and_interval() -> None:
    targets, probs = _binary()
    m = classification_metrics(targets, probs, ("LUAD", "LUSC"), n_bootstrap=500, seed=3)
    assert m["auroc"] == pytest.approx(roc_auc_score(targets, probs[:, 1]))
    ci = m["auroc_ci"]
    assert ci["low"] < m["auroc"] < ci["high"] and ci["level"] == 0.95 and ci["n_resamples"] == 500
    assert 0.02 < ci["high"] - ci["low"] < 0.4
    assert m["n_per_class"] == {"LUAD": int((targets == 0).sum()), "LUSC": int((targets == 1).sum())}
    assert m["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == targets))
    assert m["positive_class"] == "LUSC" and "per_class_auroc" not in m
    again = classification_metrics(targets, probs, ("LUAD", "LUSC"), n_bootstrap=500, seed=3)
    assert again == m
    other = classification_metrics(targets, probs, ("LUAD", "LUSC"), n_bootstrap=500, seed=4)
    assert other["auroc_ci"] != ci


def test_balanced_accuracy_counts_each_class_equally() -> None:
    targets = np.array([0] * 9 + [1])
    probs = np.tile([0.9, 0.1], (10, 1))
    m = classification_metrics(targets, probs, ("a", "b"), n_bootstrap=0)
    assert m["accuracy"] == pytest.approx(0.9) and m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["auroc_ci"] is None


def test_perfect_separation_gives_a_degenerate_interval_at_one() -> None:
    targets = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6], [0.3, 0.7], [0.1, 0.9]])
    m = classification_metrics(targets, probs, ("a", "b"), n_bootstrap=200, min_patients_per_class=3)
    assert m["auroc"] == 1.0 and (m["auroc_ci"]["low"], m["auroc_ci"]["high"]) == (1.0, 1.0)


def test_one_class_makes_auroc_undefined_not_an_error() -> None:
    m = classification_metrics(np.array([1, 1, 1]), np.tile([0.2, 0.8], (3, 1)), ("a", "b"))
    assert m["auroc"] is None and "undefined" in m["note"] and m["accuracy"] == 1.0


def test_multiclass_reports_macro_and_per_class_auroc() -> None:
    rng = np.random.default_rng(1)
    targets = np.repeat([0, 1, 2], 30)
    logits = rng.normal(0, 1, (90, 3)) + 1.5 * np.eye(3)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(targets, probs, ("a", "b", "c"), n_bootstrap=100)
    assert m["auroc"] == pytest.approx(roc_auc_score(targets, probs, multi_class="ovr", average="macro"))
    for c, name in enumerate("abc"):
        per_class = m["per_class_auroc"][name]
        assert per_class["auroc"] == pytest.approx(roc_auc_score(targets == c, probs[:, c]))
        assert per_class["auroc_ci"]["low"] <= per_class["auroc"] <= per_class["auroc_ci"]["high"]
    assert "positive_class" not in m


def test_fold_summary_is_mean_and_sample_sd() -> None:
    summary = fold_summary(
        [
            {"auroc": 0.8, "accuracy": 0.7, "balanced_accuracy": 0.7},
            {"auroc": 0.9, "accuracy": 0.8, "balanced_accuracy": 0.6},
            {"auroc": None, "accuracy": 0.9, "balanced_accuracy": 0.5},
        ]
    )
    assert summary["auroc"]["mean"] == pytest.approx(0.85) and summary["auroc"]["n_folds"] == 2
    assert summary["auroc"]["sd"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert summary["accuracy"]["n_folds"] == 3
