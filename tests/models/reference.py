"""Explicit, quadratic reference attention for one unpadded bag, written from the equations.

Independent of the package's code paths on purpose: per head, loops and full n x n matrices, no reordered
products, no masks. Inputs are (n, dim) token matrices with the class token in row 0; each function returns
the layer output (n, dim) and the attention matrices (H, n, n) whose row 0 the tile scores must equal.
"""

import math

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


def softmax_free(attn, x: Tensor) -> tuple[Tensor, Tensor]:
    """(Q^ K^T^) V^ / n with sequence-normalized Q, K, V (Khader et al.)."""
    qs, ks, vs = _heads(attn, x)
    n = x.shape[0]
    outs, mats = [], []
    for h, (q, k, v) in enumerate(zip(qs, ks, vs, strict=True)):
        qn = standardize(q, attn.norm_q.weight[h, 0], attn.norm_q.bias[h, 0], attn.norm_q.eps)
        kn = standardize(k, attn.norm_k.weight[h, 0], attn.norm_k.bias[h, 0], attn.norm_k.eps)
        vn = standardize(v, attn.norm_v.weight[h, 0], attn.norm_v.bias[h, 0], attn.norm_v.eps)
        a = (qn @ kn.T) / n
        mats.append(a)
        outs.append(a @ vn)
    return _out(attn, outs), torch.stack(mats)


def softmax(attn, x: Tensor) -> tuple[Tensor, Tensor]:
    qs, ks, vs = _heads(attn, x)
    outs, mats = [], []
    for q, k, v in zip(qs, ks, vs, strict=True):
        a = torch.exp(q @ k.T / math.sqrt(q.shape[1]))
        a = a / a.sum(dim=1, keepdim=True)
        mats.append(a)
        outs.append(a @ v)
    return _out(attn, outs), torch.stack(mats)


def sima(attn, x: Tensor) -> tuple[Tensor, Tensor]:
    qs, ks, vs = _heads(attn, x)
    outs, mats = [], []
    for q, k, v in zip(qs, ks, vs, strict=True):
        a = (q / q.abs().sum(0)) @ (k / k.abs().sum(0)).T
        mats.append(a)
        outs.append(a @ v)
    return _out(attn, outs), torch.stack(mats)


def softmax_free_class_readout(attn, x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows 1.. from softmax-free attention; row 0 (class token) a softmax over raw q0 . k_j, raw values."""
    qs, ks, vs = _heads(attn, x)
    n = x.shape[0]
    outs, mats = [], []
    for h, (q, k, v) in enumerate(zip(qs, ks, vs, strict=True)):
        qn = standardize(q, attn.norm_q.weight[h, 0], attn.norm_q.bias[h, 0], attn.norm_q.eps)
        kn = standardize(k, attn.norm_k.weight[h, 0], attn.norm_k.bias[h, 0], attn.norm_k.eps)
        vn = standardize(v, attn.norm_v.weight[h, 0], attn.norm_v.bias[h, 0], attn.norm_v.eps)
        tiles = (qn[1:] @ kn.T / n) @ vn
        row = torch.exp(q[0] @ k.T / math.sqrt(q.shape[1]))
        row = row / row.sum()
        mat = torch.zeros(n, n, dtype=x.dtype)
        mat[0] = row
        mats.append(mat)
        outs.append(torch.cat([(row @ v)[None], tiles]))
    return _out(attn, outs), torch.stack(mats)


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
