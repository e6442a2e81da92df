"""Softmax-free token mixing plus a softmax class-token read-out (`vit_sf_ca`, this project's extension).

Why: sequence normalization subtracts each channel's mean over the tokens, so a signal that shifts the
mean of a few tiles is largely invisible to `vit_sf`'s class token, and the 1/n average cannot single out
a few tiles. Here the tiles still mix with each other softmax-free (linear cost), but the class token's
row is replaced by one softmax query over the raw (un-normalized) keys and values, which can put most of
its weight on a handful of tiles. One query against n keys is O(n d), so the layer stays linear in n.
"""

import torch
from torch import Tensor

from wsi_pipeline.models.attention import TokenWeights
from wsi_pipeline.models.softmax import class_token_softmax
from wsi_pipeline.models.softmax_free import SoftmaxFreeAttention


class SoftmaxFreeClassReadout(SoftmaxFreeAttention):
    def mix(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        qn, kn, vn, n = self.normalized(q, k, v, mask)
        tiles = self.attend(qn[:, :, 1:], self.key_values(kn, vn, n))
        cls = self.readout(q, k, v, mask)
        cls_out = cls.weights.to(v.dtype).unsqueeze(-2) @ v  # (B, H, 1, dh)
        return torch.cat([cls_out, tiles], dim=2)

    def readout(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> TokenWeights:
        return TokenWeights(weights=class_token_softmax(q[:, :, :1], k, mask), values=v)
