"""Temperature scaling (Guo et al. 2017): one scalar T, logits / T, fitted on the validation bags.

Whole-bag training on a few hundred slides ends with probabilities near 0 and 1 for right and wrong answers
alike (issue: real-data validity); dividing the logits by T > 1 softens them without changing any ranking,
so AUROC and the predicted class stay what they were and only the probabilities become honest.
"""

import math

import numpy as np
import torch

# T is searched in [1, 20]: temperature scaling here only softens. On a validation set of a few dozen bags a
# T < 1 (sharper) "fits" the noise of a barely trained model: its near-zero logits that happen to rank well
# were sharpened 20-fold, and model selection on that loss kept epoch 1 (Musk2 abmil: test AUROC 0.63 on that
# fold; benchmarks/bench_real.py). 20 already flattens any realistic logit gap to near 0.5.
LOG_T_BOUNDS = (0.0, math.log(20.0))


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `targets` under softmax(logits / T), in float64."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64)) / temperature
    return float(torch.nn.functional.cross_entropy(z, torch.from_numpy(np.asarray(targets, dtype=np.int64))))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The T in LOG_T_BOUNDS that minimises the validation NLL (a bounded 1-d search: deterministic, no
    learning rate to pick); 1 when no T >= 1 beats it, e.g. an under-confident model. One class only in
    `targets`: 1, nothing to calibrate against."""
    from scipy.optimize import minimize_scalar  # heavy: scipy

    if len(np.unique(targets)) < 2:
        return 1.0
    found = minimize_scalar(
        lambda log_t: nll(logits, targets, math.exp(log_t)), bounds=LOG_T_BOUNDS, method="bounded"
    )
    best = math.exp(float(found.x))
    return best if nll(logits, targets, best) < nll(logits, targets, 1.0) else 1.0
