"""The AUROC that training (model selection) and evaluation (reported metrics) both compute.

One definition, so the val AUROC that picked a checkpoint and the test AUROC reported for it are the same
statistic: binary tasks score the probability of class index 1 (the "positive" class); more classes use the
macro one-vs-rest AUROC. scikit-learn does the computing.
"""

import numpy as np


def auroc(targets: np.ndarray, probs: np.ndarray) -> float:
    """AUROC of `probs` (n, C) against class indices `targets` (n,); binary: of class 1's probability."""
    from sklearn.metrics import roc_auc_score  # heavy (seconds): loaded when a metric is first computed

    n_classes = probs.shape[1]
    if n_classes == 2:
        return float(roc_auc_score(targets, probs[:, 1]))
    return float(
        roc_auc_score(targets, probs, multi_class="ovr", average="macro", labels=list(range(n_classes)))
    )


def one_vs_rest_auroc(targets: np.ndarray, probs: np.ndarray, cls: int) -> float:
    """AUROC of class `cls` against all others."""
    from sklearn.metrics import roc_auc_score  # heavy (seconds): loaded when a metric is first computed

    return float(roc_auc_score(targets == cls, probs[:, cls]))
