"""The black-box score methods (models/scores.py) against their definitions, computed the plain way."""

import pytest
import torch

from wsi_pipeline.models.scores import linearised_normalisations, log_odds

from .helpers import ALL_MODELS, IN_DIM, assert_close, bag, small_model

BLACK_BOX = ("gradient_input", "integrated_gradients", "occlusion", "conservative")


def with_feature_norm(name: str, n_classes: int = 3):
    """A float64 narrow model with a non-trivial feature standardisation, as training leaves it."""
    model = small_model(name, n_classes=n_classes, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    model.set_feature_norm(torch.randn(IN_DIM, generator=gen), torch.rand(IN_DIM, generator=gen) + 0.5)
    return model


def test_occlusion_is_leave_one_tile_out() -> None:
    model = with_feature_norm("vit_sf")
    x = bag(9, dtype=torch.float64)
    target = int(model(x).argmax())
    full = log_odds(model(x), target)
    expected = torch.stack(
        [full - log_odds(model(x[:, [j for j in range(9) if j != i]]), target) for i in range(9)]
    ).squeeze(-1)
    assert_close(model.tile_scores(x, method="occlusion")[0].double(), expected.detach(), 1e-5, 1e-6)


def test_gradient_input_is_the_log_odds_gradient_times_the_centred_input() -> None:
    model = with_feature_norm("abmil")
    x = bag(11, dtype=torch.float64).requires_grad_(True)
    target = 2
    (grad,) = torch.autograd.grad(log_odds(model(x), target).sum(), x)
    expected = (grad * (x - model.feature_mean)).sum(-1)[0]
    scores = model.tile_scores(x.detach(), method="gradient_input", target=target)[0]
    assert_close(scores.double(), expected, 1e-5, 1e-6)


def test_integrated_gradients_add_up_for_a_linear_model_and_nearly_for_abmil() -> None:
    """Completeness: the scores sum to log-odds(bag) - log-odds(every tile at the training mean); exact
    when the log-odds is linear in x (`mean_linear`, two classes), to the quadrature error otherwise."""
    for name, rtol in (("mean_linear", 1e-6), ("abmil", 2e-2)):
        model = with_feature_norm(name, n_classes=2)
        x = bag(13, dtype=torch.float64)
        target = int(model(x).argmax())
        baseline = model.feature_mean.expand_as(x)
        with torch.no_grad():
            expected = float(log_odds(model(x), target) - log_odds(model(baseline), target))
        total = float(model.tile_scores(x, method="integrated_gradients")[0].double().sum())
        assert total == pytest.approx(expected, rel=rtol, abs=1e-6), name
    linear = with_feature_norm("mean_linear", n_classes=2)
    assert_close(
        linear.tile_scores(x, method="integrated_gradients"), linear.tile_scores(x, method="gradient_input")
    )


@pytest.mark.parametrize("name", ALL_MODELS)
def test_linearised_normalisations_change_gradients_not_values(name: str) -> None:
    model = with_feature_norm(name)
    x = bag(10, batch=2, dtype=torch.float64)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    with torch.no_grad():
        plain = model(x, mask)
        with linearised_normalisations(model):
            linearised = model(x, mask)
    assert_close(linearised, plain, 1e-9, 1e-9)
    # The hooks are gone afterwards: no module keeps one.
    assert not any(m._forward_hooks for m in model.modules())


def test_conservative_scores_of_a_model_without_normalisations_are_gradient_input() -> None:
    model = with_feature_norm("mean_linear")
    x = bag(8, dtype=torch.float64)
    assert_close(model.tile_scores(x, method="conservative"), model.tile_scores(x, method="gradient_input"))


@pytest.mark.parametrize("method", BLACK_BOX)
def test_two_class_scores_explain_the_log_odds_of_the_target(method: str) -> None:
    """log-odds(class 0) = -log-odds(class 1): the scores for one class are the other's, negated."""
    model = with_feature_norm("vit_sf_ca", n_classes=2)
    x = bag(7, dtype=torch.float64)
    assert_close(
        model.tile_scores(x, method=method, target=0),
        -model.tile_scores(x, method=method, target=1),
        1e-4,
        1e-6,
    )
    with pytest.raises(ValueError, match="target"):
        model.tile_scores(x, method=method, target=2)
