"""Each ViT attention rule against the explicit quadratic reference (issue 4, tests a-c).

Everything runs in float64 so a 1e-5 tolerance tests the algebra, not rounding.
"""

import pytest
import torch

from . import reference
from .helpers import VITS, assert_close, bag, small_model

SIZES = [1, 2, 7, 40]  # tiles per bag; the class token makes n = N + 1 tokens


def last_attention_input(model, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The (normalized) tokens the last block's attention reads, captured during `tile_scores`."""
    seen: list[torch.Tensor] = []
    hook = model.blocks[-1].norm1.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        model.tile_scores(x, mask, method="attention")
    finally:
        hook.remove()
    return seen[0]


def randomize_norms(model) -> None:
    """Scale/shift of the sequence norms start at 1/0; random values make the reference test bite."""
    for name, p in model.named_parameters():
        if ".norm_" in name:
            p.data.normal_(1.0 if name.endswith("weight") else 0.0, 0.5)


@pytest.mark.parametrize("name", VITS)
@pytest.mark.parametrize("n_tiles", SIZES)
def test_attention_layer_equals_reference(name: str, n_tiles: int) -> None:
    model = small_model(name, dtype=torch.float64)
    randomize_norms(model)
    attn = model.blocks[0].attn
    tokens = torch.randn(1, n_tiles + 1, model.config.dim, dtype=torch.float64)
    expected, _ = reference.REFERENCES[name](attn, tokens[0])
    assert_close(attn(tokens)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", VITS)
def test_padded_attention_layer_equals_reference_per_bag(name: str) -> None:
    model = small_model(name, dtype=torch.float64)
    randomize_norms(model)
    attn = model.blocks[0].attn
    lengths = [3, 9, 1]
    tokens = torch.randn(len(lengths), max(lengths), model.config.dim, dtype=torch.float64) * 5
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    out = attn(tokens, mask)
    for b, n in enumerate(lengths):
        expected, _ = reference.REFERENCES[name](attn, tokens[b, :n])
        assert_close(out[b, :n], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", VITS)
@pytest.mark.parametrize("n_tiles", SIZES)
def test_attention_scores_equal_reference_class_row(name: str, n_tiles: int) -> None:
    """tile_scores(method="attention") = the reference's class-token row without the class column."""
    model = small_model(name, dtype=torch.float64)
    randomize_norms(model)
    x = bag(n_tiles, dtype=torch.float64)
    tokens = last_attention_input(model, x)[0]
    _, mats = reference.CLASS_ROW_REFERENCES[name](model.blocks[-1].attn, tokens)
    expected = mats[:, 0, 1:].mean(dim=0)
    scores = model.tile_scores(x, method="attention")
    assert scores.shape == (1, n_tiles) and scores.dtype == torch.float32
    assert_close(scores[0].double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", VITS)
def test_relevance_equals_reference_shares(name: str) -> None:
    """r_j = sum_h A[h, 0, j] <g_h, v_hj>, from the reference's A and values (normalized V for sf)."""
    model = small_model(name, dtype=torch.float64)
    randomize_norms(model)
    x = bag(12, dtype=torch.float64)
    attn = model.blocks[-1].attn
    tokens = last_attention_input(model, x)[0]
    _, mats = reference.CLASS_ROW_REFERENCES[name](attn, tokens)
    _, _, vs = reference._heads(attn, tokens)
    if name in ("vit_sf",):
        vs = [
            reference.standardize(v, attn.norm_v.weight[h, 0], attn.norm_v.bias[h, 0], attn.norm_v.eps)
            for h, v in enumerate(vs)
        ]
    ro = model.readout(x)
    out = ro.output().detach().requires_grad_(True)
    logits = ro.head(out)
    (grad,) = torch.autograd.grad(logits[0, logits[0].argmax()], out)
    expected = sum(mats[h, 0, 1:] * (vs[h][1:] @ grad[0, h]) for h in range(attn.heads))
    assert_close(model.tile_scores(x, method="relevance")[0].double(), expected, rtol=1e-5, atol=1e-6)
