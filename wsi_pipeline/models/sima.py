"""SimA attention (`vit_sima`, Koohpayegani & Pirsiavash 2022): L1-normalized Q and K, no softmax.

Each channel of Q and K is divided by its L1 norm over the tokens, then ``out = Q (K^T V)`` in O(n d^2).
Note what this does on bags: every normalized entry is ~1/n, so the attention output shrinks like d_h / n.
SimA was designed for ~200 image patches; on thousands of tiles its token mixing is faint. That is the
paper's rule and the baseline keeps it.
"""

from torch import Tensor

from wsi_pipeline.models.attention import MultiHeadAttention, TokenWeights
from wsi_pipeline.models.base import upcast


def l1_normalized(x: Tensor, mask: Tensor | None, eps: float) -> Tensor:
    """x (B, H, n, dh) divided per channel by its L1 norm over real tokens (float32); padded rows -> 0."""
    xf = upcast(x)
    if mask is not None:
        xf = xf * mask[:, None, :, None].to(xf.dtype)
    return (xf / xf.abs().sum(dim=2, keepdim=True).clamp_min(eps)).to(x.dtype)


class SimAAttention(MultiHeadAttention):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float, eps: float) -> None:
        super().__init__(dim, heads, dim_head, dropout)
        self.eps = eps

    def mix(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        q, k = l1_normalized(q, mask, self.eps), l1_normalized(k, mask, self.eps)
        return q @ (k.transpose(-2, -1) @ v)

    def readout(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> TokenWeights:
        q, k = l1_normalized(q, mask, self.eps), l1_normalized(k, mask, self.eps)
        return TokenWeights(weights=(q[:, :, :1] @ k.transpose(-2, -1)).squeeze(-2), values=v)
