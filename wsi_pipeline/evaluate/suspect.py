"""Warnings printed beside the AUROC when the run behind it is suspect: a model that predicts one class for
every slide (and, from `inference.fold_models`, a fold whose training never finished). Either makes the figure
look like a result when it is not one."""

import numpy as np


def one_class_predictions(predicted: np.ndarray, class_names: tuple[str, ...]) -> list[str]:
    """A warning when every slide gets the same predicted class (the AUROC may still look fine)."""
    if len(predicted) < 2 or len(np.unique(predicted)) > 1:
        return []
    return [
        f"every slide is predicted {class_names[int(predicted[0])]!r}: the model does not separate the "
        "classes at its decision threshold"
    ]
