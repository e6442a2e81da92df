"""`evidence_profile` (models/scores.py): the model's fitted response along the class contrasts and the bag's
principal directions, integrated from the bag mean to each tile. Its algebra, and that it finds planted tiles
in a feature space too wide for a bag's own principal directions to show them (where the other linear
methods of `vit_sf` fail)."""

import torch

from wsi_pipeline.models import build_model
from wsi_pipeline.models.scores import class_contrasts, profile_directions, profile_integral

from .helpers import assert_close, small_model
from .planted import class_means, planted_bags, top_k_of, trained_vit_sf


def test_profile_integral_is_exact_for_a_gradient_linear_in_the_position() -> None:
    """When every tile's slope is a + b t, the score is the integral of a + b s from the bag mean to t."""
    t = torch.randn(50, 3, dtype=torch.float64)
    a, b = torch.tensor([0.5, -1.0, 0.0]), torch.tensor([2.0, 0.0, -0.3])
    m = t.mean(dim=0)
    expected = a * (t - m) + b * (t.square() - m.square()) / 2
    assert_close(profile_integral(a + b * t, t), expected, rtol=1e-10, atol=1e-12)


def test_profile_integral_drops_what_the_position_does_not_explain() -> None:
    """Per-tile noise in the slopes that is unrelated to the tiles' positions averages out of the fit."""
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(20000, 1, generator=gen, dtype=torch.float64)
    noisy = 1.0 + 3.0 * t + 5.0 * torch.randn(20000, 1, generator=gen, dtype=torch.float64)
    clean = profile_integral(1.0 + 3.0 * t, t)
    assert float(torch.corrcoef(torch.cat([profile_integral(noisy, t), clean], dim=1).T)[0, 1]) > 0.999


def test_class_contrasts_are_the_standardised_class_difference_or_nothing() -> None:
    model = small_model("vit_sf", n_classes=2, dtype=torch.float64)
    assert class_contrasts(model).shape == (model.feature_mean.shape[0], 0)  # unknown: nothing to add
    gen = torch.Generator().manual_seed(1)
    mean, std = torch.randn(24, generator=gen), torch.rand(24, generator=gen) + 0.5
    means = torch.randn(2, 24, generator=gen)
    model.set_feature_norm(mean, std)
    model.set_class_means(means)
    (direction,) = class_contrasts(model).T
    expected = (means[1] - means[0]) / std
    assert_close(direction.abs(), (expected / expected.norm()).abs().double(), rtol=1e-6, atol=1e-8)
    z = torch.randn(40, 24, generator=gen, dtype=torch.float64)
    basis = profile_directions(model, torch.randn(40, 24, generator=gen, dtype=torch.float64), z)
    assert_close(basis.T @ basis, torch.eye(basis.shape[1], dtype=torch.float64), rtol=0, atol=1e-10)


def test_the_class_means_name_an_axis_that_no_single_bag_shows() -> None:
    """1024-d bags of 300 tiles: the planted variance (1 + 0.21 * 16 = 4.4) sits below the top of a bag's noise
    spectrum ((1 + sqrt(1024 / 300))^2 = 8.3), so the bag's own principal directions miss the planted axis;
    the training cohort's class means find it, and `profile_directions` looks along it."""
    gen = torch.Generator().manual_seed(0)
    bags = planted_bags(60, 300, 1024, gen)
    model = build_model("vit_sf", in_dim=1024, n_classes=2, dim=32, heads=4, dim_head=8, mlp_dim=48)
    tiles = torch.cat([x for x, _, _ in bags])
    model.set_feature_norm(tiles.mean(dim=0), tiles.std(dim=0))
    z = (bags[1][0] - model.feature_mean) / model.feature_std
    grad = torch.randn_like(z)  # a model that responds to nothing in particular
    axis = torch.zeros(1024)
    axis[0] = 1.0
    assert float(profile_directions(model, grad, z).T.matmul(axis).norm()) < 0.5  # the bag alone: missed
    model.set_class_means(class_means(bags))
    # With the class means: found, up to their own sampling noise (18,000 tiles in 1024-d: ~0.85).
    assert float(profile_directions(model, grad, z).T.matmul(axis).norm()) > 0.75


def test_a_trained_vit_sf_heatmap_ranks_the_planted_tiles_first() -> None:
    """`vit_sf` reads the bag's variance along the planted axis, so each tile's own gradient x input is mostly
    noise; the fitted profile keeps what the model does with the tile's position along the axis. Chance is
    0.3; the projected gradient, which keeps each tile's own gradient along the axis, ranks lower."""
    model, test = trained_vit_sf()
    top_k = top_k_of(model, test, ("evidence_profile", "projected_gradient"))
    assert min(top_k["evidence_profile"]) >= 0.7, top_k
    assert sum(top_k["evidence_profile"]) >= sum(top_k["projected_gradient"]) + 3 * 0.1, top_k
    # Without the class means (a checkpoint from before they were kept) it still runs, on the bag alone.
    model.class_means.zero_()
    assert model.tile_scores(test[1][0][None], method="evidence_profile", target=1).isfinite().all()
