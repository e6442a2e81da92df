"""Slide-level metrics: AUROC with a bootstrap confidence interval, accuracy, balanced accuracy.

Binary tasks report the AUROC of the second class (index 1, the "positive" class); more classes report the
macro one-vs-rest AUROC and each class's one-vs-rest AUROC.

The interval is a percentile bootstrap over **patients**: slides of one patient are not independent, so a
resample draws patients (with all their slides), within each patient class (a patient's class is the most
common label of its slides), so every resample keeps the class balance and holds every class. It is seeded,
so the same predictions give the same interval. Below `min_patients_per_class` patients in a class there
is no interval (a note says why): a bootstrap over a handful of patients pretends to a precision it lacks.
"""

from typing import Any

import numpy as np

from wsi_pipeline.evaluate.calibration import calibration_metrics
from wsi_pipeline.metrics import auroc, one_vs_rest_auroc


def patient_groups(targets: np.ndarray, patients: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Row indices of each patient's slides, and each patient's class (its most common slide label)."""
    _, inverse = np.unique(patients, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
    classes = np.array([np.bincount(targets[m]).argmax() for m in members], dtype=np.int64)
    return members, classes


def _patient_resamples(members: list[np.ndarray], classes: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Row indices of `n` resamples, each drawing patients with replacement within each patient class."""
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(classes == c) for c in np.unique(classes)]
    resamples = []
    for _ in range(n):
        picked = np.concatenate([rng.choice(s, size=len(s), replace=True) for s in strata])
        resamples.append(np.concatenate([members[p] for p in picked]))
    return resamples


def _interval(values: list[float], level: float) -> dict[str, Any]:
    low, high = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"level": level, "low": float(low), "high": float(high), "n_resamples": len(values)}


def classification_metrics(
    targets: np.ndarray,
    probs: np.ndarray,
    class_names: tuple[str, ...],
    *,
    patients: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
    min_patients_per_class: int = 10,
) -> dict[str, Any]:
    """Metrics of (n,) class indices against (n, C) probabilities, as a JSON-ready dict.

    `patients` (n,) names each row's patient (default: every row its own patient). AUROC is None (with a
    note) when the rows hold fewer than two classes: it is undefined, not 0.5.
    """
    n_classes = len(class_names)
    members, patient_class = patient_groups(
        targets, np.asarray(patients) if patients is not None else np.arange(len(targets))
    )
    result = _counts_and_accuracy(targets, probs, class_names, members, patient_class)
    if n_classes == 2:
        result["positive_class"] = class_names[1]
    result.update(calibration_metrics(targets, probs))
    present = np.unique(targets)
    if len(present) < 2 or (n_classes > 2 and len(present) < n_classes):
        result.update(auroc=None, auroc_ci=None, note="AUROC undefined: not every class is among the slides")
        return result

    resamples, ci_note = _resamples_or_note(
        members, patient_class, class_names, n_bootstrap, seed, min_patients_per_class
    )
    if ci_note:
        result["ci_note"] = ci_note
    if resamples:
        result["ci_resampling"] = "patients, stratified by the patient's class"

    def interval(score: Any) -> dict[str, Any] | None:
        return _interval([score(i) for i in resamples], ci_level) if resamples else None

    result["auroc"] = auroc(targets, probs)
    result["auroc_ci"] = interval(lambda i: auroc(targets[i], probs[i]))
    if n_classes > 2:
        result["per_class_auroc"] = {
            name: {
                "auroc": one_vs_rest_auroc(targets, probs, c),
                "auroc_ci": interval(lambda i, c=c: one_vs_rest_auroc(targets[i], probs[i], c)),
            }
            for c, name in enumerate(class_names)
        }
    return result


def _counts_and_accuracy(
    targets: np.ndarray,
    probs: np.ndarray,
    class_names: tuple[str, ...],
    members: list[np.ndarray],
    patient_class: np.ndarray,
) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, recall_score  # heavy: scikit-learn

    predicted = probs.argmax(axis=1)
    counts = np.bincount(targets, minlength=len(class_names))
    patient_counts = np.bincount(patient_class, minlength=len(class_names))
    return {
        "n_slides": len(targets),
        "n_patients": len(members),
        "n_per_class": {name: int(counts[i]) for i, name in enumerate(class_names)},
        "n_patients_per_class": {name: int(patient_counts[i]) for i, name in enumerate(class_names)},
        "accuracy": float(accuracy_score(targets, predicted)),
        # Mean recall over the classes among the slides (sklearn's balanced accuracy, without its warning
        # when an external cohort holds one class only).
        "balanced_accuracy": float(
            recall_score(targets, predicted, labels=np.unique(targets), average="macro", zero_division=0)
        ),
    }


def _resamples_or_note(
    members: list[np.ndarray],
    patient_class: np.ndarray,
    class_names: tuple[str, ...],
    n_bootstrap: int,
    seed: int,
    min_patients: int,
) -> tuple[list[np.ndarray], str]:
    """The bootstrap's resamples, or none and the reason when a class has too few patients."""
    counts = np.bincount(patient_class, minlength=len(class_names))
    few = [f"{name} ({int(counts[c])})" for c, name in enumerate(class_names) if counts[c] < min_patients]
    if not n_bootstrap:
        return [], ""
    if few:
        note = (
            f"no confidence interval: fewer than {min_patients} patients in class {', '.join(few)}; "
            "a bootstrap over so few patients is not informative"
        )
        return [], note
    return _patient_resamples(members, patient_class, n_bootstrap, seed), ""


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
