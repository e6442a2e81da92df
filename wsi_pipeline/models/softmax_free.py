"""Softmax-free attention with sequence normalization (`vit_sf`, Khader et al. 2024).

Each of Q, K, V is normalized over the *token* axis, per channel (zero mean, unit variance, learnable scale
and shift). Without a softmax the attention is plain bilinear, so the product can be reordered:
``out = (1/n) Q (K^T V)`` costs O(n d^2) time and O(n d) memory, never an n x n matrix. The 1/n keeps the
output's scale independent of the bag size, which the normalization alone does not: with unit-variance
channels ``K^T V`` grows like n.
"""

from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from wsi_pipeline.models.attention import MultiHeadAttention, TokenWeights
from wsi_pipeline.models.base import upcast


def token_count(q: Tensor, mask: Tensor | None) -> Tensor | int:
    """Real tokens per bag, shaped to broadcast against (B, H, dh, dh); float32 (bf16 cannot count to 10^5)."""
    if mask is None:
        return q.shape[2]
    return mask.sum(dim=1).to(upcast(q).dtype).view(-1, 1, 1, 1)


def float32_island(like: Tensor) -> AbstractContextManager:
    """Autocast off on `like`'s device: inside, a matmul of float32 inputs stays float32.

    Upcasting the inputs alone is not enough: autocast would cast them back to bf16 for the matmul, and a
    sum over 10^5 tokens rounded to bf16 is off by ~0.4% of its value.
    """
    return torch.autocast(device_type=like.device.type, enabled=False)


class SequenceNorm(nn.Module):
    """Per-channel standardization over the tokens of a bag, with statistics in float32.

    Float32 statistics because a bf16 mean over 10^5 tokens is off by more than the signal it removes.
    Padded tokens are excluded from the statistics (they still get normalized values, which nobody reads).
    """

    def __init__(self, heads: int, dim_head: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(heads, 1, dim_head))
        self.bias = nn.Parameter(torch.zeros(heads, 1, dim_head))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, H, n, dh) -> same shape, each (b, h, :, c) column standardized over its real tokens."""
        with float32_island(x):
            scale, shift = self.affine(upcast(x), mask)
        return self.normalize(x, scale, shift)

    @staticmethod
    def normalize(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        """x * scale + shift in float32, rounded once to x's dtype: in bf16, the shift (~ -mean/std) and the
        scaled x (~ +mean/std) would each be rounded before they cancel."""
        with float32_island(x):
            return torch.addcmul(shift, upcast(x), scale).to(x.dtype)

    def affine(self, xf: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-channel scale and shift that standardize xf (float32 or wider) over its real tokens."""
        if mask is None:
            var, mean = torch.var_mean(xf, dim=2, keepdim=True, correction=0)
        else:
            m = mask[:, None, :, None].to(xf.dtype)
            count = m.sum(dim=2, keepdim=True)
            mean = (xf * m).sum(dim=2, keepdim=True) / count
            var = ((xf - mean).square() * m).sum(dim=2, keepdim=True) / count
        # Folding the affine into one scale and shift per channel keeps a single (n, d) product (and a
        # single saved tensor for backward) instead of three.
        scale = self.weight * torch.rsqrt(var + self.eps)
        return scale, self.bias - mean * scale


class SoftmaxFreeAttention(MultiHeadAttention):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float, eps: float) -> None:
        super().__init__(dim, heads, dim_head, dropout)
        self.norm_q = SequenceNorm(heads, dim_head, eps)
        self.norm_k = SequenceNorm(heads, dim_head, eps)
        self.norm_v = SequenceNorm(heads, dim_head, eps)

    def normalized(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | int]:
        """Sequence-normalized q, k, v, with padded keys zeroed so they drop out of K^T V; and n."""
        q, k, v = self.norm_q(q, mask), self.norm_k(k, mask), self.norm_v(v, mask)
        if mask is not None:
            k = k * mask[:, None, :, None].to(k.dtype)
        return q, k, v, token_count(q, mask)

    def mix(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        q, k, v, n = self.normalized(q, k, v, mask)
        return self.attend(q, self.key_values(k, v, n))

    @staticmethod
    def key_values(k: Tensor, v: Tensor, n: Tensor | int) -> Tensor:
        """K^T V / n per head, (B, H, dh, dh): the whole bag's contribution, summed once for all queries.

        Float32 (or wider) whatever the autocast: the inputs are upcast *before* the matmul, and the result
        stays float32 for `attend`."""
        with float32_island(v):
            return upcast(k).transpose(-2, -1) @ upcast(v) / n

    @staticmethod
    def attend(q: Tensor, key_values: Tensor) -> Tensor:
        """q (B, H, m, dh) times the float32 `key_values`, in float32, rounded once to q's dtype."""
        with float32_island(q):
            return (upcast(q) @ key_values).to(q.dtype)

    def readout(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> TokenWeights:
        q, k, v, n = self.normalized(q, k, v, mask)
        with float32_island(q):
            weights = (upcast(q[:, :, :1]) @ upcast(k).transpose(-2, -1) / n).squeeze(-2)
        return TokenWeights(weights=weights, values=v)
