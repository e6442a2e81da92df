"""Nystrom attention (Xiong et al. 2021), the token mixer of TransMIL.

softmax(Q K^T) is approximated through m landmarks (means of m contiguous segments of the queries and
keys): ``softmax(Q Kl^T) pinv(softmax(Ql Kl^T)) softmax(Ql K^T) V``, O(n m d). The pseudo-inverse is the
paper's iterative Moore-Penrose approximation, and a depthwise convolution over the sequence of V is added
as a skip connection. Segments are formed without zero-padding the sequence (sizes differ by at most one
when m does not divide n), so no padding token ever receives attention; with n <= m every token is its
own landmark.
"""

import math

import torch
from torch import Tensor, nn

from wsi_pipeline.models.attention import MultiHeadAttention, TokenWeights
from wsi_pipeline.models.base import upcast


def segment_means(x: Tensor, segments: int) -> Tensor:
    """(B, H, n, d) -> (B, H, segments, d): means over contiguous, near-equal runs of the n tokens."""
    n = x.shape[2]
    index = torch.arange(n, device=x.device) * segments // n
    xf = upcast(x)
    counts = torch.bincount(index, minlength=segments).to(xf.dtype)
    sums = xf.new_zeros(*x.shape[:2], segments, x.shape[3]).index_add(2, index, xf)
    return (sums / counts[:, None]).to(x.dtype)


def iterative_pinv(a: Tensor, iterations: int) -> Tensor:
    """Moore-Penrose pseudo-inverse of each (m, m) matrix by the cubic iteration the Nystromformer uses.

    Z0 = A^T / (||A||_1 ||A||_inf), per matrix (so bags in a batch stay independent); float32 throughout
    because the iteration amplifies bf16 rounding.
    """
    with torch.autocast(device_type=a.device.type, enabled=False):
        a = upcast(a)
        eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        norm = a.abs().sum(dim=-1).amax(dim=-1) * a.abs().sum(dim=-2).amax(dim=-1)
        z = a.transpose(-2, -1) / norm[..., None, None]
        for _ in range(iterations):
            az = a @ z
            z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
        return z


class NystromAttention(MultiHeadAttention):
    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        landmarks: int,
        pinv_iterations: int,
        residual_kernel: int,
        dropout: float,
    ) -> None:
        super().__init__(dim, heads, dim_head, dropout)
        self.landmarks, self.pinv_iterations = landmarks, pinv_iterations
        self.residual: nn.Conv2d | None = None
        if residual_kernel:
            pad = residual_kernel // 2
            self.residual = nn.Conv2d(
                heads, heads, (residual_kernel, 1), padding=(pad, 0), groups=heads, bias=False
            )

    def kernels(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Scaled queries, landmark keys, pinv(softmax(Ql Kl^T)) and softmax(Ql K^T)."""
        q = q / math.sqrt(self.dim_head)
        m = min(self.landmarks, q.shape[2])
        q_land, k_land = segment_means(q, m), segment_means(k, m)
        middle = iterative_pinv((q_land @ k_land.transpose(-2, -1)).softmax(dim=-1), self.pinv_iterations)
        right = (q_land @ k.transpose(-2, -1)).softmax(dim=-1)
        return q, k_land, middle, right

    def mix(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if mask is not None:
            raise ValueError("Nystrom attention takes one unpadded bag at a time")
        q, k_land, middle, right = self.kernels(q, k)
        left = (q @ k_land.transpose(-2, -1)).softmax(dim=-1)
        out = (left @ middle.to(left.dtype)) @ (right @ v)
        return out if self.residual is None else out + self.residual(v)

    def readout(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> TokenWeights:
        if mask is not None:
            raise ValueError("Nystrom attention takes one unpadded bag at a time")
        q, k_land, middle, right = self.kernels(q, k)
        left0 = (q[:, :, :1] @ k_land.transpose(-2, -1)).softmax(dim=-1)
        row = ((left0 @ middle.to(left0.dtype)) @ right).squeeze(-2)  # token 0's row of the approximation
        weights = row
        if self.residual is not None:
            # The conv skip adds taps[h, pad + j] * v[h, j] to token 0 for j = 0..pad: part of its output too.
            pad = self.residual.padding[0]
            taps = self.residual.weight[:, 0, pad:, 0][:, : row.shape[-1]]
            weights = row + nn.functional.pad(taps.to(row.dtype), (0, row.shape[-1] - taps.shape[-1]))
        return TokenWeights(weights=weights, values=v, attention=row)
