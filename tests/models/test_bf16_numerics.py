"""Under bf16 autocast, the bag-wide sums of softmax-free attention stay float32 (issue 17, item 7).

What can go wrong at 10^5 tokens: K^T V rounded to bf16 (8-bit mantissa, ~0.4% per entry) before the 1/n,
and a sequence norm whose shift (~ -mean/std) and scaled input (~ +mean/std) are each rounded to bf16
before they cancel. The references are float64 computations on the *same* bf16 inputs, so the bounds
measure the layer's own arithmetic, not the rounding of its inputs.
"""

import torch

from wsi_pipeline.models.softmax_free import SequenceNorm, SoftmaxFreeAttention

from .helpers import bag, small_model

N = 100_000


def _autocast() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_key_values_are_summed_and_kept_in_float32_under_autocast() -> None:
    k = (torch.randn(1, 2, N, 32) + 3.0).bfloat16()
    v = (torch.randn(1, 2, N, 32) + 3.0).bfloat16()
    expected = k.double().transpose(-2, -1) @ v.double() / N
    with _autocast():
        kv = SoftmaxFreeAttention.key_values(k, v, N)
    assert kv.dtype == torch.float32
    rel = ((kv.double() - expected).abs().max() / expected.abs().max()).item()
    assert rel < 1e-5, rel  # a bf16 result is off by ~2e-3


def test_sequence_norm_of_an_offset_channel_is_rounded_once_under_autocast() -> None:
    """Channels with mean 50 and std 1 over the bag: the normalized values are O(1) and must come out
    within one bf16 rounding of them, not within one rounding of 50."""
    norm = SequenceNorm(heads=2, dim_head=16, eps=1e-5)
    x = (torch.randn(1, 2, N, 16) + 50.0).bfloat16()
    xd = x.double()
    var, mean = torch.var_mean(xd, dim=2, keepdim=True, correction=0)
    expected = (xd - mean) / torch.sqrt(var + 1e-5)
    with _autocast(), torch.no_grad():
        out = norm(x, None)
    assert out.dtype == torch.bfloat16
    err = (out.double() - expected).abs().max().item()
    assert err < 0.03, err  # bf16 rounding of |values| <= ~5 is <= 0.016; rounding -50 and +50 gives ~0.2


def test_vit_sf_bf16_logits_stay_near_float32_at_100k_tiles() -> None:
    """End to end: the bf16-vs-fp32 logit gap at 10^5 tiles (measured ~0.006 on logits of ~0.8)."""
    model = small_model("vit_sf")
    x = bag(N) + 0.5
    with torch.no_grad():
        reference = model(x)
        with _autocast():
            low = model(x)
    gap = (low.float() - reference).abs().max().item()
    assert gap < 0.03 * (1.0 + reference.abs().max().item()), (gap, reference)
