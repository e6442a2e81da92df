"""Chunked `vit_sf` (wsi_pipeline/models/chunked.py) is the same function as the plain forward, not an
approximation: logits and every parameter's gradient agree in float64, with and without checkpointing."""

import pytest
import torch

from .helpers import IN_DIM, assert_close, bag, small_model


def _randomized(depth: int):
    """A float64 vit_sf whose sequence-norm scales/shifts and feature standardisation are not identities,
    so every term of the merged statistics (including the n b_k^T b_v one) is exercised."""
    model = small_model("vit_sf", dtype=torch.float64, depth=depth).train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm_" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
        model.set_feature_norm(torch.randn(IN_DIM), torch.rand(IN_DIM) + 0.5)
    return model


def _logits_and_grads(model, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logits = model(x)
    (logits * torch.tensor([[1.0, -2.0]], dtype=logits.dtype)).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("depth", "checkpointed"), [(2, True), (3, False)])
def test_chunked_logits_and_gradients_equal_the_plain_forward(depth: int, checkpointed: bool) -> None:
    from wsi_pipeline.models.chunked import chunked_logits

    model = _randomized(depth)
    x = bag(301, batch=2, dtype=torch.float64) * 3.0 + 5.0  # far-from-zero means: the merge must be stable
    expected, expected_grads = _logits_and_grads(model, x)
    model.forward = lambda x, mask=None: chunked_logits(model, x, 64, checkpointed)  # type: ignore[method-assign]
    actual, grads = _logits_and_grads(model, x)
    assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    assert expected_grads.keys() == grads.keys() and len(grads) > 10
    for name, grad in expected_grads.items():
        assert_close(grads[name], grad, rtol=1e-8, atol=1e-11)


def test_use_chunks_switches_forward_only_for_long_unpadded_bags() -> None:
    model = _randomized(2)
    x = bag(200, dtype=torch.float64)
    with torch.no_grad():
        plain = model(x)
        chunked = model.use_chunks(50)(x)
    assert_close(chunked, plain, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="softmax-free"):
        small_model("vit_sf_ca").use_chunks(50)


def test_chunked_under_bf16_autocast_matches_the_plain_forward_under_it() -> None:
    """The GPU recipe (bf16 autocast): statistics stay float32 in both paths, so they agree to bf16 rounding."""
    model = small_model("vit_sf")
    x = bag(3000) + 0.5
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = model(x).float()
        chunked = model.use_chunks(512)(x).float()
    assert_close(chunked, plain, rtol=0.0, atol=0.03 * (1.0 + plain.abs().max().item()))
