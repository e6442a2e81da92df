"""The baseline every aggregator must beat, fitted on a fold's training bags in seconds.

On real features a standardised logistic regression on mean-pooled bags is hard to beat
(benchmarks/bench_real.py); `wsi eval` reports it next to the model, so a user sees when an aggregator gives
worse answers than a one-line baseline.
"""

import numpy as np

from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.baseline import MeanPoolBaseline


def fit_baseline(pooled: np.ndarray, targets: np.ndarray, class_names: tuple[str, ...]) -> MeanPoolBaseline:
    """scikit-learn's StandardScaler + LogisticRegression (L2, C = 1, lbfgs) on (n, D) pooled features."""
    from sklearn.linear_model import LogisticRegression  # heavy: scikit-learn
    from sklearn.preprocessing import StandardScaler  # heavy: scikit-learn

    scaler = StandardScaler().fit(pooled)
    classifier = LogisticRegression(C=1.0, max_iter=2000)
    classifier.fit(scaler.transform(pooled), targets)
    if len(classifier.classes_) != len(class_names):
        raise WsiError(
            f"baseline: training bags hold {len(classifier.classes_)} of {len(class_names)} classes"
        )
    return MeanPoolBaseline(
        class_names=tuple(class_names),
        mean=scaler.mean_.astype(np.float64),
        scale=scaler.scale_.astype(np.float64),
        coef=classifier.coef_.astype(np.float64),
        intercept=classifier.intercept_.astype(np.float64),
    )
