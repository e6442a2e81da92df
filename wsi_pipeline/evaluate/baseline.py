"""`wsi eval`'s comparison with the mean-pooled baseline `wsi train` fitted per fold (`baseline.json`)."""

from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.stores.baseline import BASELINE_FILE, load_baseline


def baseline_probs(
    fold_dirs: dict[int, Path],
    folds_of: dict[str, list[int]],
    slide_ids: list[str],
    pooled: dict[str, np.ndarray],
) -> np.ndarray | None:
    """(n, C) baseline probabilities of `slide_ids`, each the mean over the folds that scored it (as the
    model's); None when a fold has no baseline (a run trained before baselines were fitted)."""
    paths = {fold: folder / BASELINE_FILE for fold, folder in fold_dirs.items()}
    if not all(p.is_file() for p in paths.values()):
        return None
    models = {fold: load_baseline(p) for fold, p in paths.items()}
    return np.stack(
        [
            np.mean([models[f].predict_proba(pooled[s][None])[0] for f in folds_of[s]], axis=0)
            for s in slide_ids
        ]
    )


def baseline_comparison(
    model_metrics: dict[str, Any], baseline_metrics: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """The `baseline` entry of metrics.json, and a one-line warning when the model's AUROC is below the
    baseline's confidence interval (or, without an interval, below its AUROC)."""
    entry = {
        "what": "standardised logistic regression on mean-pooled features, fitted by wsi train on each fold's training bags",
        "auroc": baseline_metrics.get("auroc"),
        "auroc_ci": baseline_metrics.get("auroc_ci"),
        "accuracy": baseline_metrics.get("accuracy"),
        "model_auroc": model_metrics.get("auroc"),
    }
    model, base = model_metrics.get("auroc"), baseline_metrics.get("auroc")
    if model is None or base is None:
        return entry, None
    ci = baseline_metrics.get("auroc_ci")
    floor = ci["low"] if ci else base
    if model >= floor:
        return entry, None
    where = f"below the baseline's CI low {floor:.4f}" if ci else f"below the baseline's {base:.4f}"
    return entry, (
        f"model AUROC {model:.4f} is {where} (mean-pooled logistic regression AUROC {base:.4f}): "
        "the aggregator does worse than a linear model on mean features"
    )
