"""A tiny training run per model on bags with a planted signal (issue 4, test h).

Dense signal (half the tiles of positive bags shifted along one direction) so that every model, `vit_sf`
included, can learn it in a few epochs; the sparse regime is the benchmark's job (bench_signal.py).
"""

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from wsi_pipeline.models import build_model

from .helpers import ALL_MODELS, IN_DIM


def planted_bags(
    n_bags: int, n_tiles: int, fraction: float, shift: float
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n_bags, n_tiles, IN_DIM)
    y = torch.arange(n_bags) % 2
    direction = nn.functional.normalize(torch.randn(IN_DIM), dim=0)
    n_planted = int(fraction * n_tiles)
    for b in torch.nonzero(y).flatten():
        x[b, torch.randperm(n_tiles)[:n_planted]] += shift * direction
    return x, y


@pytest.mark.parametrize("name", ALL_MODELS)
def test_learns_a_planted_signal(name: str) -> None:
    """Paper-default architecture, AdamW, batches of 8 bags: train AUROC > 0.95 within 20 epochs."""
    x, y = planted_bags(n_bags=32, n_tiles=24, fraction=0.5, shift=2.0)
    model = build_model(name, in_dim=IN_DIM, n_classes=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    best = 0.0
    for _ in range(20):
        model.train()
        for idx in torch.randperm(len(y)).split(8):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            prob = model(x).softmax(dim=-1)[:, 1]
        best = max(best, roc_auc_score(y.numpy(), prob.numpy()))
        if best > 0.95:
            break
    assert best > 0.95
