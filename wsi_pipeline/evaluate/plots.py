"""ROC curves: the pooled curve (with its AUROC and interval) and, for k folds, each fold's curve."""

from pathlib import Path
from typing import Any

import numpy as np

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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

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
            ax.plot(fpr, tpr, linewidth=2, color="black", label=_label(name, metrics))
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
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
