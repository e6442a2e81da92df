"""How far predicted probabilities are from observed frequencies: Brier score and expected calibration error.

AUROC only ranks; a user reads the probability. Both scores use the probability of the predicted class
(ECE, binned by confidence) or of every class (Brier), so they apply to any number of classes.
"""

import numpy as np

ECE_BINS = 10


def brier_score(targets: np.ndarray, probs: np.ndarray) -> float:
    """Mean over slides of sum_c (p_c - [y = c])^2 (two classes: twice the one-probability form)."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(targets, dtype=np.int64)]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def reliability_bins(
    targets: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: mean confidence, accuracy, and count (empty bins: NaN, NaN, 0)."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(targets)
    index = np.minimum((confidence * bins).astype(int), bins - 1)  # [0, 1/bins), ..., [1 - 1/bins, 1]
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct.astype(float), minlength=bins) / counts
    return mean_conf, accuracy, counts


def expected_calibration_error(targets: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """sum_b (n_b / n) |accuracy_b - confidence_b| over equal-width confidence bins (Guo et al. 2017)."""
    mean_conf, accuracy, counts = reliability_bins(targets, probs, bins)
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(accuracy[filled] - mean_conf[filled])) / counts.sum())


def calibration_metrics(targets: np.ndarray, probs: np.ndarray) -> dict[str, float | int]:
    """The entries of metrics.json: Brier score and ECE (and its bin count)."""
    return {
        "brier": brier_score(targets, probs),
        "ece": expected_calibration_error(targets, probs),
        "ece_bins": ECE_BINS,
    }
