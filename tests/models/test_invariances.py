"""Bag semantics (issue 4, tests d, e, g): order does not matter, padding does not leak, all weights learn."""

import pytest
import torch
from torch import nn

from wsi_pipeline.models import SCORE_METHODS

from .helpers import ALL_MODELS, VITS, assert_close, bag, small_model


@pytest.mark.parametrize("name", [*VITS, "abmil"])
def test_permuting_tiles_permutes_scores_and_keeps_logits(name: str) -> None:
    model = small_model(name, dtype=torch.float64)
    x = bag(19, batch=2, dtype=torch.float64)
    perm = torch.randperm(19)
    assert_close(model(x[:, perm]), model(x), rtol=1e-10, atol=1e-10)
    for method in SCORE_METHODS:
        assert_close(
            model.tile_scores(x[:, perm], method=method), model.tile_scores(x, method=method)[:, perm]
        )


def test_transmil_depends_on_tile_order() -> None:
    """Its PPEG is a positional encoding: a sanity check that the test above would catch order effects."""
    model = small_model("transmil", dtype=torch.float64)
    x = bag(19, dtype=torch.float64)
    assert not torch.allclose(model(x[:, torch.randperm(19)]), model(x))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_padded_batch_equals_each_bag_alone(name: str) -> None:
    model = small_model(name, dtype=torch.float64)
    lengths = [5, 13, 1, 9]
    x = bag(max(lengths), batch=len(lengths), dtype=torch.float64) * 3
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    x[~mask] = 1e3  # loud garbage in the padding: any leak shows
    logits = model(x, mask)
    scores = {method: model.tile_scores(x, mask, method=method) for method in SCORE_METHODS}
    for b, n in enumerate(lengths):
        alone = x[b : b + 1, :n]
        assert_close(logits[b], model(alone)[0], rtol=1e-9, atol=1e-9)
        for method in SCORE_METHODS:
            assert_close(scores[method][b, :n], model.tile_scores(alone, method=method)[0])
            assert (scores[method][b, n:] == 0).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_gradients_reach_every_parameter(name: str) -> None:
    model = small_model(name).train()
    x = bag(21, batch=2)
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
