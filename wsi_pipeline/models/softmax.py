"""Softmax attention (`vit`): the quadratic baseline, through PyTorch's fused SDPA kernels.

SDPA picks a flash/memory-efficient kernel where it can, so memory stays roughly linear while time is
quadratic in N; the class-token row for tile scores is computed from the class query alone (O(N d)).
"""

import math

from torch import Tensor
from torch.nn import functional as F

from wsi_pipeline.models.attention import MultiHeadAttention, TokenWeights
from wsi_pipeline.models.base import upcast


def class_token_softmax(q0: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
    """softmax_j(q0 . k_j / sqrt(dh)) for one query per head: q0 (B, H, 1, dh), k (B, H, n, dh) -> (B, H, n).

    The softmax runs in float32 so bf16 logits over 10^5 tokens do not lose the few large weights.
    """
    logits = upcast((q0 @ k.transpose(-2, -1)).squeeze(-2)) / math.sqrt(q0.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
    return logits.softmax(dim=-1)


class SoftmaxAttention(MultiHeadAttention):
    def mix(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        attn_mask = None if mask is None else mask[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

    def readout(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> TokenWeights:
        weights = class_token_softmax(q[:, :, :1], k, mask)
        return TokenWeights(weights=weights, values=v)
