"""`projected_gradient` (models/scores.py): the conservative gradient x input restricted to the bag's evidence
directions. Its algebra against plain linear algebra, and that it finds planted tiles where the sequence-
normalised `vit_sf` reads the bag's variance (the case that defeated the other linear methods)."""

import torch

from wsi_pipeline.models.scores import (
    CANDIDATE_DIRECTIONS,
    _input_gradient,
    dominant_directions,
    evidence_directions,
    linearised_normalisations,
    projected_gradient_input,
)

from .helpers import IN_DIM, assert_close, bag, small_model
from .planted import top_k_of, trained_vit_sf


def with_feature_norm(name: str = "vit_sf"):
    model = small_model(name, n_classes=2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    model.set_feature_norm(torch.randn(IN_DIM, generator=gen), torch.rand(IN_DIM, generator=gen) + 0.5)
    return model


def test_with_every_direction_or_few_tiles_the_scores_are_conservative() -> None:
    model = with_feature_norm()
    x = bag(30, dtype=torch.float64)
    conservative = model.tile_scores(x, method="conservative", target=1)[0].double()
    assert_close(projected_gradient_input(model, x, 1, rank=IN_DIM).double(), conservative)  # float32 scores
    few = x[:, :CANDIDATE_DIRECTIONS]  # too few tiles to tell evidence directions from noise
    assert_close(
        model.tile_scores(few, method="projected_gradient", target=1),
        model.tile_scores(few, method="conservative", target=1),
    )


def test_dominant_directions_are_the_top_singular_subspace() -> None:
    gen = torch.Generator().manual_seed(1)
    left = torch.linalg.qr(torch.randn(300, 30, generator=gen, dtype=torch.float64)).Q
    right = torch.linalg.qr(torch.randn(30, 30, generator=gen, dtype=torch.float64)).Q
    spectrum = 0.6 ** torch.arange(30, dtype=torch.float64)  # a gap of 1/0.6 between neighbours
    matrix = left * spectrum @ right.T
    found = dominant_directions(matrix, 3)
    assert_close(found.T @ found, torch.eye(3, dtype=torch.float64), 1e-9, 1e-9)
    assert_close(found @ found.T, right[:, :3] @ right[:, :3].T, 1e-6, 1e-9)
    # Centring without a centred copy: a common offset of every row is removed exactly.
    offset = torch.randn(30, generator=gen, dtype=torch.float64) * 5
    centred = dominant_directions(matrix + offset, 3, center=offset)
    assert_close(centred @ centred.T, right[:, :3] @ right[:, :3].T, 1e-6, 1e-9)


def test_scores_split_the_first_order_term_of_the_kept_directions() -> None:
    """Scores = sum_u (g_j . u)(z_j . u) over the kept directions, which are orthonormal and lie in the bag's
    principal subspace; so the scores add up to trace(V^T G^T Z V)."""
    model = with_feature_norm("vit_sf_ca")
    x = bag(60, dtype=torch.float64)
    with linearised_normalisations(model):
        grad = _input_gradient(model, x, 0)[0] * model.feature_std
    z = (x[0] - model.feature_mean) / model.feature_std
    basis = evidence_directions(grad, z, 2)
    assert_close(basis.T @ basis, torch.eye(2, dtype=torch.float64), 1e-9, 1e-9)
    principal = dominant_directions(z - z.mean(dim=0), CANDIDATE_DIRECTIONS)
    assert_close(principal @ (principal.T @ basis), basis, 1e-9, 1e-9)
    scores = projected_gradient_input(model, x, 0, rank=2)
    assert_close(scores, ((grad @ basis) * (z @ basis)).sum(-1), 1e-9, 1e-12)
    assert_close(scores.sum(), torch.trace(basis.T @ grad.T @ z @ basis), 1e-9, 1e-12)


def test_a_trained_vit_sf_heatmap_finds_the_planted_tiles_of_isotropic_bags() -> None:
    """Sequence norms make `vit_sf` read the bag's variance along the planted axis, so each tile's effect is
    ~(z - mean z)^2 plus per-tile noise that cancels over the bag; the projection must remove that noise."""
    model, test = trained_vit_sf()
    top_k = top_k_of(model, test, ("projected_gradient", "conservative"))
    # Chance is 0.3; a score ranking by the model's own symmetric effect (z - mean z)^2 along the planted axis
    # tops out near 0.7 here (background tiles far on the other side count too); `conservative`: ~0.52.
    assert sum(top_k["projected_gradient"]) / 3 >= 0.5, top_k
    # And the projection is what helps: the same gradient x input over all directions ranks worse.
    assert sum(top_k["projected_gradient"]) >= sum(top_k["conservative"]) + 3 * 0.03, top_k
