"""A fold ensemble on one bag: each fold's class probabilities, and the folds' mean tile scores.

A run trained with k folds predicts with the mean of its k models' probabilities; its heatmap must explain
that prediction, so it shows the mean of the folds' tile scores for the ensemble's predicted class (not one
fold's scores for that fold's own predicted class). One fold's graph is alive at a time, so memory is that
of one model on the bag, whatever k.
"""

import numpy as np
import torch

from wsi_pipeline.inference.fold_models import FoldModel
from wsi_pipeline.stores.feature_bag import compute_autocast


def fold_probabilities(models: list[FoldModel], x: torch.Tensor, amp: bool) -> np.ndarray:
    """(k, n_classes) float64 softmax probabilities of each fold model on the bag x (1, N, D), under the
    autocast the run was validated with (`compute_autocast`), for eval and predict alike."""
    rows = []
    with torch.no_grad(), compute_autocast(x.device.type, amp):
        for fm in models:
            rows.append(torch.softmax(fm.model(x).float(), dim=-1)[0].cpu().numpy().astype(np.float64))
    return np.stack(rows)


def ensemble_tile_scores(
    models: list[FoldModel], x: torch.Tensor, method: str | None, target: int
) -> np.ndarray:
    """(N,) float32: the mean over `models` of their tile scores explaining class index `target`."""
    if not models:
        raise ValueError("an ensemble needs at least one fold model")
    total = np.zeros(x.shape[1], dtype=np.float64)
    for fm in models:
        scores = fm.model.tile_scores(x, method=method or fm.model.default_score_method, target=target)
        total += scores[0].float().cpu().numpy()
    return (total / len(models)).astype(np.float32)
