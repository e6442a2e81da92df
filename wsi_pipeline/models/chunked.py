"""`vit_sf` logits for a whole 40x slide as one bag: token chunks, merged statistics, checkpointed chunks.

Softmax-free attention couples the tokens only through per-channel statistics (the sequence norms' mean and
variance of q, k and v) and one (dh x dh) matrix per head, ``K^T V``. Everything else is per token. So a
bag of 10^6 tiles can be run chunk by chunk: one pass per attention layer accumulates the statistics, with
Chan's pairwise merge of means, second moments and the k-v co-moment (stable, no ``E[x^2] - E[x]^2``), and
a second pass applies the block to each chunk with those statistics fixed. The result is the same function
as `ViTWSI.forward`, not an approximation (tests/models/test_chunked.py compares gradients in float64).

Each chunk's computation is wrapped in `torch.utils.checkpoint`, so autograd keeps only the chunk's input
(a view of the layer's hidden states) and a few (dh x dh) statistics per chunk; the chunk's activations
are recomputed during backward. Memory is then the input bag plus ~2 hidden states of N x dim per block.

The statistics are accumulated in float32 (float64 when the model is) with autocast off: under bf16 autocast
a sum over 10^6 tokens would otherwise be rounded to 8 bits of mantissa.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from wsi_pipeline.models.base import upcast
from wsi_pipeline.models.softmax_free import SequenceNorm, SoftmaxFreeAttention, float32_island

if TYPE_CHECKING:
    from wsi_pipeline.models.vit import Block, ViTWSI


@dataclass(frozen=True)
class Moments:
    """Per-channel statistics of q, k, v over a set of tokens; q, k, v stacked on dim 0: (3, B, H, 1, dh)."""

    count: int
    mean: Tensor
    m2: Tensor  # sum of squared deviations from `mean`
    co_kv: Tensor  # (B, H, dh, dh): sum over tokens of (k - mean_k)^T (v - mean_v)

    def merge(self, other: "Moments") -> "Moments":
        """Chan et al.'s pairwise update: exact, and stable when the means are far from zero."""
        n = self.count + other.count
        delta = other.mean - self.mean
        weight = self.count * other.count / n
        return Moments(
            count=n,
            mean=self.mean + delta * (other.count / n),
            m2=self.m2 + other.m2 + delta.square() * weight,
            co_kv=self.co_kv + other.co_kv + delta[1].transpose(-2, -1) @ delta[2] * weight,
        )


def chunk_moments(block: "Block", h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """mean, m2, co_kv of one chunk of hidden states (B, c, dim), in float32 or wider."""
    q, k, v = block.attn.split_heads(block.norm1(h))
    with float32_island(h):
        qkv = upcast(torch.stack([q, k, v]))
        mean = qkv.mean(dim=3, keepdim=True)
        centered = qkv - mean
        m2 = centered.square().sum(dim=3, keepdim=True)
        co_kv = centered[1].transpose(-2, -1) @ centered[2]
    return mean, m2, co_kv


def affine(norm: SequenceNorm, mean: Tensor, m2: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The sequence norm as ``x * scale + shift`` with the bag's statistics (same folding as `SequenceNorm`)."""
    scale = norm.weight * torch.rsqrt(m2 / count + norm.eps)
    return scale, norm.bias - mean * scale


@dataclass(frozen=True)
class LayerStats:
    """What a softmax-free layer needs from the whole bag: the q norm and ``K̂^T V̂ / n``."""

    q_scale: Tensor
    q_shift: Tensor
    key_values: Tensor  # (B, H, dh, dh), float32 or wider


def layer_stats(attn: SoftmaxFreeAttention, m: Moments) -> LayerStats:
    """With k̂ = (k - mu_k) s_k + b_k: sum_j k̂_j^T v̂_j = s_k^T s_v * C_kv + n b_k^T b_v (cross terms sum to 0)."""
    q_scale, q_shift = affine(attn.norm_q, m.mean[0], m.m2[0], m.count)
    k_scale, _ = affine(attn.norm_k, m.mean[1], m.m2[1], m.count)
    v_scale, _ = affine(attn.norm_v, m.mean[2], m.m2[2], m.count)
    k_bias, v_bias = upcast(attn.norm_k.bias), upcast(attn.norm_v.bias)
    kv = k_scale.transpose(-2, -1) * m.co_kv * v_scale + m.count * (k_bias.transpose(-2, -1) @ v_bias)
    return LayerStats(q_scale, q_shift, kv / m.count)


def mixed_queries(attn: SoftmaxFreeAttention, x: Tensor, stats: LayerStats) -> Tensor:
    """(1/n) q̂ (K̂^T V̂) for the tokens of one chunk, x (B, c, dim) already layer-normed -> (B, H, c, dh)."""
    b, n, _ = x.shape
    width = attn.heads * attn.dim_head  # the first third of `qkv`'s rows make q (see `split_heads`)
    q = torch.nn.functional.linear(x, attn.qkv.weight[:width]).view(b, n, attn.heads, -1).transpose(1, 2)
    q_hat = SequenceNorm.normalize(q, stats.q_scale, stats.q_shift)
    return SoftmaxFreeAttention.attend(q_hat, stats.key_values)


def block_chunk(block: "Block", h: Tensor, stats: LayerStats) -> Tensor:
    """A full (non-last) block applied to one chunk of tokens, given the bag's statistics."""
    h = h + block.attn.project(mixed_queries(block.attn, block.norm1(h), stats))
    return h + block.mlp(block.norm2(h))


class ChunkRunner:
    """Calls a function on each chunk, through activation checkpointing when asked."""

    def __init__(self, checkpointed: bool) -> None:
        self.checkpointed = checkpointed

    def __call__(self, fn: Callable[..., object], *args: object) -> object:
        if self.checkpointed and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)


def bag_moments(block: "Block", chunks: list[Tensor], run: ChunkRunner) -> Moments:
    """The q, k, v moments of a whole layer input, merged chunk by chunk."""
    total: Moments | None = None
    for h in chunks:
        mean, m2, co_kv = run(chunk_moments, block, h)  # type: ignore[misc]
        part = Moments(h.shape[1], mean, m2, co_kv)
        with float32_island(h):  # the merge's outer product too
            total = part if total is None else total.merge(part)
    assert total is not None
    return total


def bag_stats(block: "Block", chunks: list[Tensor], run: ChunkRunner) -> LayerStats:
    """What the block's attention needs from the whole bag, in float32 whatever the autocast."""
    moments = bag_moments(block, chunks, run)
    with float32_island(chunks[0]):
        return layer_stats(block.attn, moments)


def embedded_chunks(model: "ViTWSI", x: Tensor, chunk_tokens: int, run: ChunkRunner) -> list[Tensor]:
    """[class token, embedded tiles chunk by chunk]: never a float copy of the whole bag."""
    cls = model.cls_token.expand(x.shape[0], -1, -1)

    def embed(xc: Tensor) -> Tensor:
        return model.embed(model.inputs(xc))

    tiles = [run(embed, x[:, i : i + chunk_tokens]) for i in range(0, x.shape[1], chunk_tokens)]
    return [cls.to(tiles[0].dtype), *tiles]  # type: ignore[list-item, union-attr]


def chunked_logits(model: "ViTWSI", x: Tensor, chunk_tokens: int, checkpointed: bool = True) -> Tensor:
    """`model(x)` for a `vit_sf` model and an unpadded bag x (B, N, D), `chunk_tokens` tiles at a time."""
    if not supports_chunking(model):
        raise ValueError("chunked_logits needs every attention layer to be softmax-free (vit_sf)")
    run = ChunkRunner(checkpointed)
    chunks = embedded_chunks(model, x, chunk_tokens, run)
    *body, last = model.blocks
    for block in body:
        stats = bag_stats(block, chunks, run)
        chunks = [run(block_chunk, block, h, stats) for h in chunks]  # type: ignore[misc]
    stats = bag_stats(last, chunks, run)
    h0 = chunks[0][:, 0]
    cls_out = mixed_queries(last.attn, last.norm1(chunks[0][:, :1]), stats)[:, :, 0]
    return model.head(last.finish(h0, cls_out)) / model.temperature


def supports_chunking(model: "ViTWSI") -> bool:
    """Only plain softmax-free layers reduce to statistics; `vit_sf_ca`'s softmax read-out does not."""
    return all(type(block.attn) is SoftmaxFreeAttention for block in model.blocks)
