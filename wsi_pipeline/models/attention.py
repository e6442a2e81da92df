"""The multi-head attention shell shared by the ViT variants; subclasses only define how tokens mix.

Keeping projections here and the mixing rule in one small subclass per variant means `vit`, `vit_sf`,
`vit_sima` and `vit_sf_ca` differ in exactly one place, so a benchmark difference between them is the
attention rule and nothing else. Every variant also states its class-token read-out in O(N d) (`readout`)
so tile scores never need an N x N matrix.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TokenWeights:
    """The class token's (token 0's) output of one attention layer as ``sum_j weights[h, j] * values[h, j]``."""

    weights: Tensor  # (B, H, n)
    values: Tensor  # (B, H, n, dh)
    attention: Tensor | None = None  # (B, H, n) attention row to show, when it differs from the weights


class MultiHeadAttention(nn.Module, ABC):
    """q, k, v projections (no bias), a mixing rule, an output projection."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.proj = nn.Linear(heads * dim_head, dim)
        self.drop = nn.Dropout(dropout)

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, n, dim) -> q, k, v each (B, H, n, dh)."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def project(self, mixed: Tensor) -> Tensor:
        """(B, H, n, dh) per-head outputs -> (B, n, dim)."""
        b, _, n, _ = mixed.shape
        return self.drop(self.proj(mixed.transpose(1, 2).reshape(b, n, self.heads * self.dim_head)))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, n, dim) with the class token at index 0; mask (B, n) bool, True = real token."""
        return self.project(self.mix(*self.split_heads(x), mask))

    def cls_readout(self, x: Tensor, mask: Tensor | None = None) -> TokenWeights:
        return self.readout(*self.split_heads(x), mask)

    def forward_exposing_readout(
        self, x: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, TokenWeights, Tensor]:
        """`forward`, with the class token's row computed from its read-out and returned as a graph node.

        Returns (output as `forward`, the read-out, its per-head output (B, H, dh)). The row is the same
        value `mix` gives; routing it through the read-out lets a gradient taken with respect to it split
        exactly over the tokens (`layer_relevance`).
        """
        q, k, v = self.split_heads(x)
        ro = self.readout(q, k, v, mask)
        cls_out = torch.einsum("bhn,bhnd->bhd", ro.weights.to(ro.values.dtype), ro.values)
        mixed = torch.cat([cls_out.unsqueeze(2), self.mix(q, k, v, mask)[:, :, 1:]], dim=2)
        return self.project(mixed), ro, cls_out

    @abstractmethod
    def mix(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Per-head outputs (B, H, n, dh) for every token."""

    @abstractmethod
    def readout(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> TokenWeights:
        """Token 0's row of `mix`, split into per-token weights and values, in O(n d)."""
