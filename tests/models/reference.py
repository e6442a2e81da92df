"""Explicit, quadratic reference attention for one unpadded bag, written from the equations.

Independent of the package's code paths on purpose: per head, loops and full n x n matrices, no reordered
products, no masks. Inputs are (n, dim) token matrices with the class token in row 0; each function returns
the layer output (n, dim) and the attention matrices (H, n, n) whose row 0 the tile scores must equal.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor

from wsi_pipeline.models.attention import MultiHeadAttention


def _heads(attn: MultiHeadAttention, x: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    inner = attn.heads * attn.dim_head
    w = attn.qkv.weight
    q_all, k_all, v_all = x @ w[:inner].T, x @ w[inner : 2 * inner].T, x @ w[2 * inner :].T
    cut = [slice(h * attn.dim_head, (h + 1) * attn.dim_head) for h in range(attn.heads)]
    return [q_all[:, c] for c in cut], [k_all[:, c] for c in cut], [v_all[:, c] for c in cut]


def _out(attn: MultiHeadAttention, per_head: list[Tensor]) -> Tensor:
    return torch.cat(per_head, dim=1) @ attn.proj.weight.T + attn.proj.bias


def standardize(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Column-wise over the rows (tokens): (x - mean) / sqrt(var + eps) * weight + bias."""
    mean = x.sum(0) / x.shape[0]
    var = ((x - mean) ** 2).sum(0) / x.shape[0]
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


HeadRule = Callable[[int, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def _per_head(attn: MultiHeadAttention, x: Tensor, rule: HeadRule) -> tuple[Tensor, Tensor]:
    """`rule(h, q, k, v) -> (attention matrix, head output)` on each head, then the output projection."""
    qs, ks, vs = _heads(attn, x)
    results = [rule(h, q, k, v) for h, (q, k, v) in enumerate(zip(qs, ks, vs, strict=True))]
    return _out(attn, [out for _, out in results]), torch.stack([mat for mat, _ in results])


def _normed(attn, h: int, q: Tensor, k: Tensor, v: Tensor) -> list[Tensor]:
    """Q, K, V of head `h`, each standardized over the tokens with its own affine parameters."""
    norms = (attn.norm_q, attn.norm_k, attn.norm_v)
    return [
        standardize(t, nm.weight[h, 0], nm.bias[h, 0], nm.eps) for t, nm in zip((q, k, v), norms, strict=True)
    ]


def _softmax_rows(q: Tensor, k: Tensor) -> Tensor:
    a = torch.exp(q @ k.T / math.sqrt(q.shape[1]))
    return a / a.sum(dim=1, keepdim=True)


def softmax_free(attn, x: Tensor) -> tuple[Tensor, Tensor]:
    """(Q^ K^T^) V^ / n with sequence-normalized Q, K, V (Khader et al.)."""

    def rule(h: int, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        qn, kn, vn = _normed(attn, h, q, k, v)
        a = (qn @ kn.T) / x.shape[0]
        return a, a @ vn

    return _per_head(attn, x, rule)


def softmax(attn, x: Tensor) -> tuple[Tensor, Tensor]:
    def rule(h: int, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        a = _softmax_rows(q, k)
        return a, a @ v

    return _per_head(attn, x, rule)


def sima(attn, x: Tensor) -> tuple[Tensor, Tensor]:
    def rule(h: int, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        a = (q / q.abs().sum(0)) @ (k / k.abs().sum(0)).T
        return a, a @ v

    return _per_head(attn, x, rule)


def softmax_free_class_readout(attn, x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows 1.. from softmax-free attention; row 0 (class token) a softmax over raw q0 . k_j, raw values."""
    n = x.shape[0]

    def rule(h: int, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        qn, kn, vn = _normed(attn, h, q, k, v)
        tiles = (qn[1:] @ kn.T / n) @ vn
        row = _softmax_rows(q[:1], k)[0]
        mat = torch.zeros(n, n, dtype=x.dtype)
        mat[0] = row
        return mat, torch.cat([(row @ v)[None], tiles])

    return _per_head(attn, x, rule)


# The attention rule of every block but the last, per model.
REFERENCES = {
    "vit": softmax,
    "vit_sf": softmax_free,
    "vit_sima": sima,
    "vit_sf_ca": softmax_free_class_readout,
}

# The class-token row of the last block, which is what tile scores read. In `vit_sf_ca` that row is a
# plain softmax over raw keys (the tiles' own mixing in the last block reaches no output).
CLASS_ROW_REFERENCES = {**REFERENCES, "vit_sf_ca": softmax}
