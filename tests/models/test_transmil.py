"""TransMIL's pieces against explicit computations: landmarks, pseudo-inverse, class row, squaring."""

import itertools
import math

import pytest
import torch

from wsi_pipeline.models.nystrom import iterative_pinv, segment_means

from .helpers import assert_close, bag, small_model


@pytest.mark.parametrize(("n", "m"), [(12, 4), (13, 4), (5, 5), (100, 7)])
def test_segment_means_are_contiguous_near_equal_runs(n: int, m: int) -> None:
    x = torch.randn(2, 3, n, 4, dtype=torch.float64)
    bounds = [math.ceil(i * n / m) for i in range(m + 1)]
    expected = torch.stack([x[:, :, a:b].mean(dim=2) for a, b in itertools.pairwise(bounds)], dim=2)
    assert_close(segment_means(x, m), expected, rtol=1e-12, atol=1e-12)


def test_iterative_pinv_converges_to_the_pseudo_inverse() -> None:
    logits = torch.randn(3, 16, 16, dtype=torch.float64) + 4 * torch.eye(16, dtype=torch.float64)
    a = logits.softmax(dim=-1)
    assert_close(iterative_pinv(a, 12), torch.linalg.pinv(a), rtol=1e-6, atol=1e-6)
    # Six iterations (the paper's) already land close on a well-conditioned kernel.
    assert (iterative_pinv(a, 6) - torch.linalg.pinv(a)).abs().max() < 1e-2


def nystrom_matrix(attn, tokens: torch.Tensor) -> torch.Tensor:
    """(H, n, n): softmax(Q Kl^T) pinv(softmax(Ql Kl^T)) softmax(Ql K^T), explicitly, for one bag."""
    inner = attn.heads * attn.dim_head
    w = attn.qkv.weight
    q = (tokens @ w[:inner].T).view(-1, attn.heads, attn.dim_head).transpose(0, 1) / math.sqrt(attn.dim_head)
    k = (tokens @ w[inner : 2 * inner].T).view(-1, attn.heads, attn.dim_head).transpose(0, 1)
    n = tokens.shape[0]
    m = min(attn.landmarks, n)
    seg = [[j for j in range(n) if j * m // n == i] for i in range(m)]
    ql = torch.stack([q[:, s].mean(dim=1) for s in seg], dim=1)
    kl = torch.stack([k[:, s].mean(dim=1) for s in seg], dim=1)
    middle = iterative_pinv((ql @ kl.transpose(1, 2)).softmax(-1), attn.pinv_iterations)
    return (q @ kl.transpose(1, 2)).softmax(-1) @ middle @ (ql @ k.transpose(1, 2)).softmax(-1)


@pytest.mark.parametrize("n_tiles", [1, 7, 23])
def test_attention_scores_are_the_class_row_of_the_nystrom_matrix(n_tiles: int) -> None:
    model = small_model("transmil", dtype=torch.float64)
    x = bag(n_tiles, dtype=torch.float64)
    seen: list[torch.Tensor] = []
    hook = model.layer2.norm.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    scores = model.tile_scores(x, method="attention")[0]
    hook.remove()
    row = nystrom_matrix(model.layer2.attn, seen[0][0])[:, 0, 1:].mean(dim=0)  # drop the class column
    side = math.isqrt(n_tiles - 1) + 1
    expected = torch.zeros(n_tiles, dtype=torch.float64)
    for position in range(side * side):  # repeated tiles (squaring) add their scores to their source tile
        expected[position % n_tiles] += row[position]
    assert_close(scores.double(), expected, rtol=1e-5, atol=1e-7)


def test_nystrom_layer_matches_its_explicit_matrix_plus_conv_skip() -> None:
    model = small_model("transmil", dtype=torch.float64)
    attn = model.layer1.attn
    tokens = torch.randn(1, 20, model.config.dim, dtype=torch.float64)
    _, _, v = attn.split_heads(tokens)
    expected = nystrom_matrix(attn, tokens[0]) @ v[0] + attn.residual(v)[0]
    out = attn.mix(*attn.split_heads(tokens), None)
    assert_close(out[0], expected, rtol=1e-8, atol=1e-10)


def test_landmarks_capped_by_sequence_length() -> None:
    """With n <= m every token is its own landmark, and a one-tile bag works (n = 2 tokens)."""
    model = small_model("transmil", landmarks=256)
    assert model(bag(1)).shape == (1, 2)
    assert model.tile_scores(bag(1)).shape == (1, 1)


def test_empty_bag_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least one tile"):
        small_model("transmil")(bag(0))
