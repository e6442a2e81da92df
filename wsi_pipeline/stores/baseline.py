"""`baseline.json` of a fold: the mean-pooled baseline, a standardised logistic regression on each bag's mean
tile feature, as `wsi train` fits it (wsi_pipeline/train/baseline.py) and `wsi eval` scores it.

Stored as JSON (coefficients, intercept, the scaler's mean and scale), never as a pickle: a run folder from
elsewhere can hold data, not code.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.atomic import write_text_atomic

BASELINE_FILE = "baseline.json"
BASELINE_FORMAT = "wsi-mean-pool-logreg-v1"


@dataclass(frozen=True)
class MeanPoolBaseline:
    class_names: tuple[str, ...]
    mean: np.ndarray  # (D,) StandardScaler mean of the pooled features
    scale: np.ndarray  # (D,) StandardScaler scale
    coef: np.ndarray  # (1, D) for two classes, else (C, D), as scikit-learn holds it
    intercept: np.ndarray  # (1,) or (C,)

    def predict_proba(self, pooled: np.ndarray) -> np.ndarray:
        """(n, D) mean-pooled features -> (n, C) probabilities, exactly scikit-learn's formula."""
        z = (np.asarray(pooled, dtype=np.float64) - self.mean) / self.scale
        scores = z @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:
            from scipy.special import expit  # heavy: scipy

            p1 = expit(scores[:, 0])
            return np.stack([1.0 - p1, p1], axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)


def mean_pool(features: np.ndarray) -> np.ndarray:
    """(N, D) tile features -> (D,) float64 mean."""
    return np.asarray(features, dtype=np.float64).mean(axis=0)


def save_baseline(path: Path, baseline: MeanPoolBaseline) -> None:
    body = {
        "format": BASELINE_FORMAT,
        "class_names": list(baseline.class_names),
        "mean": baseline.mean.tolist(),
        "scale": baseline.scale.tolist(),
        "coef": baseline.coef.tolist(),
        "intercept": baseline.intercept.tolist(),
    }
    write_text_atomic(path, json.dumps(body) + "\n")


def load_baseline(path: Path) -> MeanPoolBaseline:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        if body.get("format") != BASELINE_FORMAT:
            raise ValueError(f"expected format {BASELINE_FORMAT}")
        return MeanPoolBaseline(
            class_names=tuple(body["class_names"]),
            mean=np.asarray(body["mean"], dtype=np.float64),
            scale=np.asarray(body["scale"], dtype=np.float64),
            coef=np.asarray(body["coef"], dtype=np.float64),
            intercept=np.asarray(body["intercept"], dtype=np.float64),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WsiError(f"{path}: unreadable baseline ({type(exc).__name__}: {exc})") from exc
