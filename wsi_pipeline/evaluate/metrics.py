"""Slide-level metrics: AUROC with a bootstrap confidence interval, accuracy, balanced accuracy.

Binary tasks report the AUROC of the second class (index 1, the "positive" class); more classes report the
macro one-vs-rest AUROC and each class's one-vs-rest AUROC. The interval is a percentile bootstrap over
slides, resampled within each class (stratified) so every resample keeps the evaluated class balance and
always has both classes; it is seeded, so the same predictions give the same interval.
"""

from typing import Any

import numpy as np


def auroc(targets: np.ndarray, probs: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import roc_auc_score

    if n_classes == 2:
        return float(roc_auc_score(targets, probs[:, 1]))
    return float(
        roc_auc_score(targets, probs, multi_class="ovr", average="macro", labels=list(range(n_classes)))
    )


def one_vs_rest_auroc(targets: np.ndarray, probs: np.ndarray, cls: int) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(targets == cls, probs[:, cls]))


def _stratified_resamples(targets: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(targets == c) for c in np.unique(targets)]
    return [np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups]) for _ in range(n)]


def _interval(values: list[float], level: float) -> dict[str, Any]:
    low, high = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"level": level, "low": float(low), "high": float(high), "n_resamples": len(values)}


def classification_metrics(
    targets: np.ndarray,
    probs: np.ndarray,
    class_names: tuple[str, ...],
    *,
    n_bootstrap: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of (n,) class indices against (n, C) probabilities, as a JSON-ready dict.

    AUROC is None (with a note) when the slides hold fewer than two classes: it is undefined, not 0.5.
    """
    from sklearn.metrics import accuracy_score, recall_score

    n_classes = len(class_names)
    predicted = probs.argmax(axis=1)
    counts = np.bincount(targets, minlength=n_classes)
    result: dict[str, Any] = {
        "n_slides": len(targets),
        "n_per_class": {name: int(counts[i]) for i, name in enumerate(class_names)},
        "accuracy": float(accuracy_score(targets, predicted)),
        # Mean recall over the classes among the slides (sklearn's balanced accuracy, without its warning
        # when an external cohort holds one class only).
        "balanced_accuracy": float(
            recall_score(targets, predicted, labels=np.unique(targets), average="macro", zero_division=0)
        ),
    }
    if n_classes == 2:
        result["positive_class"] = class_names[1]
    present = np.unique(targets)
    if len(present) < 2 or (n_classes > 2 and len(present) < n_classes):
        result.update(auroc=None, auroc_ci=None, note="AUROC undefined: not every class is among the slides")
        return result

    resamples = _stratified_resamples(targets, n_bootstrap, seed)
    result["auroc"] = auroc(targets, probs, n_classes)
    result["auroc_ci"] = (
        _interval([auroc(targets[i], probs[i], n_classes) for i in resamples], ci_level)
        if resamples
        else None
    )
    if n_classes > 2:
        result["per_class_auroc"] = {
            name: {
                "auroc": one_vs_rest_auroc(targets, probs, c),
                "auroc_ci": _interval(
                    [one_vs_rest_auroc(targets[i], probs[i], c) for i in resamples], ci_level
                )
                if resamples
                else None,
            }
            for c, name in enumerate(class_names)
        }
    return result


def fold_summary(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of each fold's AUROC, accuracy and balanced accuracy."""
    summary: dict[str, Any] = {}
    for key in ("auroc", "accuracy", "balanced_accuracy"):
        values = [m[key] for m in per_fold if m.get(key) is not None]
        if values:
            summary[key] = {
                "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "n_folds": len(values),
            }
    return summary
