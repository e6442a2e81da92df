"""ViT-WSI: the MIL transformer of Khader et al. 2024 (Table 1), with a pluggable attention rule.

Linear(in_dim -> dim) + ReLU per tile, a learnable class token, no positional embedding (a bag is a set),
`depth` pre-LayerNorm blocks, and LayerNorm + Linear on the class token. The four registered ViTs differ
only in the attention module (`vit`: softmax, `vit_sf`: softmax-free + sequence norm, `vit_sima`: SimA,
`vit_sf_ca`: softmax-free + softmax class-token read-out).

The last block is evaluated for the class token only: nothing downstream reads the other tokens, so its
attention costs one query's worth (O(N d)) and the logits come out of the same read-out that tile scores
use. The result is identical to running the full block.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from wsi_pipeline.models.attention import MultiHeadAttention
from wsi_pipeline.models.base import (
    ClsReadout,
    LayerReadout,
    MILModel,
    ScoreMethod,
    check_inputs,
    with_class_token,
)
from wsi_pipeline.models.chunked import chunked_logits, supports_chunking
from wsi_pipeline.models.class_readout import SoftmaxFreeClassReadout
from wsi_pipeline.models.config import SequenceNormViTConfig, SimAViTConfig, ViTConfig
from wsi_pipeline.models.registry import register_model
from wsi_pipeline.models.sima import SimAAttention
from wsi_pipeline.models.softmax import SoftmaxAttention
from wsi_pipeline.models.softmax_free import SoftmaxFreeAttention


class Block(nn.Module):
    """Pre-LayerNorm transformer block: h + attn(LN(h)), then h + MLP(LN(h))."""

    def __init__(self, dim: int, mlp_dim: int, dropout: float, attn: MultiHeadAttention) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, h: Tensor, mask: Tensor | None) -> Tensor:
        h = h + self.attn(self.norm1(h), mask)
        return h + self.mlp(self.norm2(h))

    def forward_exposing_readout(self, h: Tensor, mask: Tensor | None) -> tuple[Tensor, LayerReadout]:
        """`forward`, and the class token's read-out in this block as a graph node (`layer_relevance`)."""
        attended, ro, cls_out = self.attn.forward_exposing_readout(self.norm1(h), mask)
        h = h + attended
        return h + self.mlp(self.norm2(h)), LayerReadout(ro.weights, ro.values, cls_out)

    def finish(self, h0: Tensor, mixed0: Tensor) -> Tensor:
        """The rest of the block for one token, given its per-head attention output (B, H, dh) -> (B, dim)."""
        h = h0 + self.attn.project(mixed0.unsqueeze(-2))[:, 0]
        return h + self.mlp(self.norm2(h))


class ViTWSI(MILModel):
    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        config: ViTConfig,
        attention: Callable[[bool], MultiHeadAttention],
        default_score_method: ScoreMethod,
    ) -> None:
        super().__init__(config, default_score_method, in_dim, n_classes)
        self.embed = nn.Sequential(nn.Linear(in_dim, config.dim), nn.ReLU(), nn.Dropout(config.dropout))
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.mlp_dim, config.dropout, attention(i == config.depth - 1))
            for i in range(config.depth)
        )
        self.head = nn.Sequential(nn.LayerNorm(config.dim), nn.Linear(config.dim, n_classes))
        # Set by `use_chunks`: forward runs unpadded bags longer than this chunk by chunk (vit_sf only).
        self.chunk_tokens: int | None = None

    def use_chunks(self, chunk_tokens: int | None) -> "ViTWSI":
        """Run `forward` on long unpadded bags `chunk_tokens` tiles at a time, with activation checkpointing
        (same logits and gradients, memory ~ the bag plus two hidden states; wsi_pipeline/models/chunked.py).
        None turns it off. Only models whose every layer is softmax-free (`vit_sf`) support it."""
        if chunk_tokens is not None and not supports_chunking(self):
            raise ValueError("chunked training needs a model whose every layer is softmax-free (vit_sf)")
        self.chunk_tokens = chunk_tokens
        return self

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.chunk_tokens is not None and mask is None and x.shape[1] > self.chunk_tokens:
            check_inputs(x, mask)
            return chunked_logits(self, x, self.chunk_tokens)
        return super().forward(x, mask)

    def tokens(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Embedded tiles with the class token prepended, and the matching token mask."""
        check_inputs(x, mask)
        h = self.embed(self.inputs(x))
        cls = self.cls_token.expand(h.shape[0], -1, -1).to(h.dtype)
        return torch.cat([cls, h], dim=1), with_class_token(mask)

    def readouts(
        self, x: Tensor, mask: Tensor | None, expose: bool
    ) -> tuple[tuple[LayerReadout, ...], ClsReadout]:
        h, token_mask = self.tokens(x, mask)
        *body, last = self.blocks
        earlier = []
        for block in body:
            if expose:
                h, layer = block.forward_exposing_readout(h, token_mask)
                earlier.append(layer)
            else:
                h = block(h, token_mask)
        mixed = last.attn.cls_readout(last.norm1(h), token_mask)
        h0 = h[:, 0]

        def head(out: Tensor) -> Tensor:
            return self.head(last.finish(h0, out))

        def tiles(per_token: Tensor) -> Tensor:
            return per_token[:, 1:]

        return tuple(earlier), ClsReadout(weights=mixed.weights, values=mixed.values, head=head, tiles=tiles)


@register_model("vit", ViTConfig)
def build_vit(in_dim: int, n_classes: int, config: ViTConfig) -> ViTWSI:
    """Softmax attention through `scaled_dot_product_attention`: the quadratic reference."""

    def attention(last: bool) -> MultiHeadAttention:
        return SoftmaxAttention(config.dim, config.heads, config.dim_head, config.dropout)

    return ViTWSI(in_dim, n_classes, config, attention, "attention")


@register_model("vit_sf", SequenceNormViTConfig)
def build_vit_sf(in_dim: int, n_classes: int, config: SequenceNormViTConfig) -> ViTWSI:
    """The paper's model: softmax-free attention with sequence normalization, linear in N."""

    def attention(last: bool) -> MultiHeadAttention:
        return SoftmaxFreeAttention(config.dim, config.heads, config.dim_head, config.dropout, config.eps)

    return ViTWSI(in_dim, n_classes, config, attention, "evidence_profile")


@register_model("vit_sima", SimAViTConfig)
def build_vit_sima(in_dim: int, n_classes: int, config: SimAViTConfig) -> ViTWSI:
    """SimA attention: L1-normalized Q and K over tokens, linear in N."""

    def attention(last: bool) -> MultiHeadAttention:
        return SimAAttention(config.dim, config.heads, config.dim_head, config.dropout, config.eps)

    return ViTWSI(in_dim, n_classes, config, attention, "relevance")


@register_model("vit_sf_ca", SequenceNormViTConfig)
def build_vit_sf_ca(in_dim: int, n_classes: int, config: SequenceNormViTConfig) -> ViTWSI:
    """Softmax-free token mixing with a softmax class-token read-out, linear in N.

    Only the class token leaves the last block, and its row is the softmax read-out over raw keys and
    values, so that block needs no tile mixing and no sequence norms (they would be parameters that can
    never learn): it is the softmax attention module, of which only the O(N d) read-out ever runs.
    """

    def attention(last: bool) -> MultiHeadAttention:
        if last:
            return SoftmaxAttention(config.dim, config.heads, config.dim_head, config.dropout)
        return SoftmaxFreeClassReadout(config.dim, config.heads, config.dim_head, config.dropout, config.eps)

    return ViTWSI(in_dim, n_classes, config, attention, "evidence_profile")
