"""Linear cost (no N x N tensor anywhere) and size-independent outputs (issue 4, test f)."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from wsi_pipeline.models import SCORE_METHODS

from .helpers import bag, small_model


class LargestTensor(TorchFunctionMode):
    """Records the largest tensor returned by any torch call and any tensor saved for backward.

    (A function mode rather than a dispatch mode: the latter imports torch._dynamo, ~10 s on this box.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self._saved = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _see(self, t: object) -> None:
        if isinstance(t, torch.Tensor):
            self.largest = max(self.largest, t.numel())

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self._see(t)
        return t

    def __enter__(self):
        self._saved.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self._saved.__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            self._see(t)
        return out


N_TILES = 1500  # N^2 = 2.25M elements, far above any legitimate (N, width) tensor of the narrow models


@pytest.mark.parametrize("name", ["vit_sf", "vit_sf_ca", "vit_sima", "abmil", "transmil"])
def test_forward_backward_and_scores_never_form_an_n_by_n_tensor(name: str) -> None:
    model = small_model(name).train()
    x = bag(N_TILES)
    with LargestTensor() as probe:
        model(x).sum().backward()
        for method in SCORE_METHODS:
            # occlusion is the quadratic reference by design; integrated gradients batch their path steps
            # (steps x N x width, linear in N, but above this probe's bound at 1,500 tiles).
            if method not in ("occlusion", "integrated_gradients"):
                model.tile_scores(x, method=method)
    assert probe.largest < N_TILES * N_TILES // 10, probe.largest


def test_softmax_vit_scores_use_the_class_query_only() -> None:
    """`vit` is quadratic by design, but its tile scores are one query's softmax: O(N d)."""
    model = small_model("vit")
    x = bag(N_TILES)
    with torch.no_grad():
        h, _ = model.tokens(x, None)
        h = model.blocks[0](h, None)  # the quadratic part, outside the probe
    with LargestTensor() as probe:
        model.blocks[-1].attn.cls_readout(model.blocks[-1].norm1(h), None)
    assert probe.largest < N_TILES * N_TILES // 10, probe.largest


def test_the_probe_sees_a_quadratic_tensor() -> None:
    """The probe is not blind: an explicit attention matrix trips it, in a layer's forward too."""
    model = small_model("vit_sf")
    attn = model.blocks[0].attn
    q = torch.randn(1, 1, N_TILES, 8)
    with LargestTensor() as probe:
        attn.mix(q, q, q, None)
    linear = probe.largest
    attn.mix = lambda q, k, v, mask: (q @ k.transpose(-2, -1)) @ v  # type: ignore[method-assign]
    with LargestTensor() as probe:
        attn.mix(q, q, q, None)
    assert linear < N_TILES * N_TILES // 10 <= probe.largest


def test_vit_sf_outputs_stay_bounded_from_100_to_100k_tiles() -> None:
    """The 1/N in (1/N) Q (K^T V) keeps attention outputs (and logits) at the same scale for any bag size."""
    model = small_model("vit_sf")
    attn_rms: dict[int, float] = {}
    logits: dict[int, float] = {}
    hook = model.blocks[0].attn.register_forward_hook(
        lambda _m, _i, out: attn_rms.__setitem__(out.shape[1] - 1, out.pow(2).mean().sqrt().item())
    )
    with torch.no_grad():
        for n in (100, 100_000):
            logits[n] = model(bag(n) + 0.5).abs().max().item()
    hook.remove()
    assert 0.2 < attn_rms[100_000] / attn_rms[100] < 5, attn_rms
    assert 0.2 < logits[100_000] / logits[100] < 5, logits


def test_chunked_vit_sf_step_holds_no_tensor_of_the_whole_bag() -> None:
    """With `use_chunks`, forward + backward (checkpoint recomputation included) only ever build chunk-sized
    tensors: the plain step's (N, 3 * width) q/k/v and (N, width) hidden states never exist at once."""
    model = small_model("vit_sf").train().use_chunks(128)
    x = bag(N_TILES)
    with LargestTensor() as probe:
        model(x).sum().backward()
    width = model.blocks[0].attn.qkv.in_features
    assert probe.largest < N_TILES * width // 2, (probe.largest, N_TILES * width)
    with LargestTensor() as plain:
        model.use_chunks(None)(x).sum().backward()
    assert plain.largest >= N_TILES * width  # the probe sees the whole-bag tensors of the plain step
