"""The pooling baselines standardise their pooled values over the training bags (`RunningStandardize`)."""

from pathlib import Path

import pytest
import torch

from wsi_pipeline.errors import WsiError
from wsi_pipeline.inference.fold_models import load_weights
from wsi_pipeline.models.baselines import RunningStandardize

from .helpers import assert_close, small_model


def test_running_statistics_are_those_of_the_bags_seen() -> None:
    """While fewer than 1 / momentum bags have been seen, the running mean and variance are exactly the
    population mean and variance of the pooled vectors so far, one bag per step as in training."""
    norm = RunningStandardize(5, momentum=0.05).double().train()
    pooled = torch.randn(12, 5, dtype=torch.float64) * 3 + 7
    for row in pooled:
        norm(row[None])
    var, mean = torch.var_mean(pooled, dim=0, correction=0)
    assert_close(norm.running_mean, mean, rtol=1e-12, atol=1e-12)
    assert_close(norm.running_var, var, rtol=1e-12, atol=1e-12)


def test_training_bags_come_out_standardised_and_evaluation_leaves_the_statistics_alone() -> None:
    """After an epoch the training bags come out near zero mean and unit variance per channel (a channel
    with a large offset and a tiny spread, like a mean over hundreds of tiles, included; the bounds allow for
    the noise of an exponential average over ~1 / momentum bags), and forwards in eval mode use the
    statistics without changing them."""
    norm = RunningStandardize(3, momentum=0.05).train()
    pooled = torch.randn(400, 3) * torch.tensor([0.01, 1.0, 30.0]) + torch.tensor([0.5, -2.0, 100.0])
    for row in pooled:
        norm(row[None])
    norm.eval()
    before = norm.running_mean.clone(), norm.running_var.clone()
    out = norm(pooled)
    var, mean = torch.var_mean(out, dim=0, correction=0)
    assert mean.abs().max() < 0.5 and ((var > 0.5) & (var < 2)).all(), (mean, var)
    assert torch.equal(norm.running_mean, before[0]) and torch.equal(norm.running_var, before[1])


def test_a_checkpoint_from_before_the_standardisation_loads_with_identity_statistics(tmp_path: Path) -> None:
    """`meanmax_mlp` weights written before the model standardised its pooled values have no `standardize.*`
    buffers; the loader `wsi eval` and `wsi predict` use must accept them with the identity (mean 0,
    variance 1), so the old model's logits come back, and still refuse weights that lack anything else."""
    old = small_model("meanmax_mlp")
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("standardize.")}
    assert len(state) < len(old.state_dict())
    model = small_model("meanmax_mlp")
    load_weights(model, state, "meanmax_mlp", tmp_path / "checkpoint.pt")
    pooled = torch.randn(4, model.standardize.running_mean.numel())
    assert_close(model.standardize(pooled), pooled, rtol=1e-5, atol=1e-6)
    del state["classifier.weight"]
    with pytest.raises(WsiError, match=r"1 missing \(e.g. classifier.weight\)"):
        load_weights(small_model("meanmax_mlp"), state, "meanmax_mlp", tmp_path / "checkpoint.pt")
