"""ROC curves: the pooled curve (with its AUROC and interval) and, for k folds, each fold's curve."""

from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.evaluate.calibration import ECE_BINS, reliability_bins
from wsi_pipeline.stores.atomic import atomic_path


def _label(name: str, metrics: dict[str, Any]) -> str:
    value = metrics.get("auroc")
    if value is None:
        return name
    ci = metrics.get("auroc_ci")
    interval = f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else ""
    return f"{name}: AUROC {value:.3f}{interval}"


def save_roc_png(
    path: Path,
    targets: np.ndarray,
    probs: np.ndarray,
    class_names: tuple[str, ...],
    metrics: dict[str, Any],
    folds: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]],
) -> None:
    """Binary: the positive class's ROC; more classes: one one-vs-rest curve per class (pooled only)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib
    from matplotlib.figure import Figure  # heavy: matplotlib
    from sklearn.metrics import roc_curve  # heavy: scikit-learn

    fig = Figure(figsize=(5, 5), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
    if len(class_names) == 2:
        for i, (fold_targets, fold_probs, fold_metrics) in enumerate(folds):
            if fold_metrics.get("auroc") is not None:
                fpr, tpr, _ = roc_curve(fold_targets, fold_probs[:, 1])
                ax.plot(fpr, tpr, linewidth=0.8, alpha=0.5, label=_label(f"fold {i}", fold_metrics))
        if metrics.get("auroc") is not None:
            fpr, tpr, _ = roc_curve(targets, probs[:, 1])
            name = "pooled" if folds else class_names[1]
            ax.plot(fpr, tpr, linewidth=2, color="black", zorder=3, label=_label(name, metrics))
        ax.set_title(f"ROC, positive class {class_names[1]} (n={len(targets)})", fontsize=9)
    else:
        per_class = metrics.get("per_class_auroc") or {}
        for c, name in enumerate(class_names):
            if c in targets and name in per_class:
                fpr, tpr, _ = roc_curve(targets == c, probs[:, c])
                ax.plot(fpr, tpr, linewidth=1.5, label=_label(f"{name} vs rest", per_class[name]))
        ax.set_title(f"ROC one-vs-rest, macro AUROC {metrics.get('auroc') or float('nan'):.3f}", fontsize=9)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    # A margin around the unit square: at AUROC 1 the curve runs along x=0 and y=1 and would hide under
    # the axes' frame.
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_aspect("equal")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def save_reliability_png(path: Path, targets: np.ndarray, probs: np.ndarray, metrics: dict[str, Any]) -> None:
    """Reliability diagram: per confidence bin, the fraction predicted right against the mean confidence
    (on the diagonal = calibrated), with the number of slides in each bin; ECE and Brier in the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib
    from matplotlib.figure import Figure  # heavy: matplotlib

    mean_conf, accuracy, counts = reliability_bins(targets, probs, ECE_BINS)
    edges = np.linspace(0, 1, ECE_BINS + 1)
    filled = counts > 0
    fig = Figure(figsize=(5, 5), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, label="calibrated")
    ax.bar(
        edges[:-1][filled],
        accuracy[filled],
        width=1 / ECE_BINS,
        align="edge",
        alpha=0.35,
        edgecolor="black",
        linewidth=0.6,
        label="fraction right per bin",
    )
    ax.plot(
        mean_conf[filled],
        accuracy[filled],
        marker="o",
        color="black",
        linewidth=1.2,
        label="at the bin's mean confidence",
    )
    for left, n in zip(edges[:-1][filled], counts[filled], strict=True):  # inside the bar, at its foot
        ax.annotate(f"n={n}", (left + 0.5 / ECE_BINS, 0.02), ha="center", fontsize=6)
    lowest = 1.0 / probs.shape[1]  # the confidence of the predicted class is never below 1 / classes
    ax.set_xlim(lowest - 0.02, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (probability of the predicted class)")
    ax.set_ylabel("fraction predicted right")
    ece, brier = metrics.get("ece"), metrics.get("brier")
    scores = f"ECE {ece:.3f}, Brier {brier:.3f}, " if ece is not None and brier is not None else ""
    ax.set_title(f"Reliability ({scores}n={len(targets)})", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
