"""TransMIL (`transmil`, Shao et al. 2021): Nystrom self-attention and a convolutional position encoding.

FC + ReLU per tile; the sequence is "squared" to side^2 tokens (side = ceil(sqrt(N))) by repeating the first
tiles; a class token is prepended; then layer 1, the PPEG (depthwise 7x7, 5x5 and 3x3 convolutions over the
side x side grid, added to it), layer 2, LayerNorm and Linear on the class token. Each layer is
``h + NystromAttention(LayerNorm(h))``.

The PPEG makes the model depend on tile order and on N through the grid shape, so a padded batch cannot
share one grid: bags in a masked batch run one at a time, which gives exactly the single-bag result. Tile
scores fold the repeated copies back onto their source tile (their shares add up).
"""

import math

import torch
from torch import Tensor, nn

from wsi_pipeline.models.base import ClsReadout, LayerReadout, MILModel, check_inputs
from wsi_pipeline.models.config import TransMILConfig
from wsi_pipeline.models.nystrom import NystromAttention
from wsi_pipeline.models.registry import register_model


class PPEG(nn.Module):
    """Pyramid position encoding generator: grid + conv7(grid) + conv5(grid) + conv3(grid), per channel."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, h: Tensor, side: int) -> Tensor:
        """h (B, 1 + side^2, C) with the class token first -> same shape."""
        b, _, c = h.shape
        # Row-major grid as a channels-last view of the tokens: no copy, and the faster depthwise kernels.
        grid = h[:, 1:].reshape(b, side, side, c).permute(0, 3, 1, 2)
        grid = grid + sum(conv(grid) for conv in self.convs)
        return torch.cat([h[:, :1], grid.permute(0, 2, 3, 1).reshape(b, side * side, c)], dim=1)


class TransLayer(nn.Module):
    def __init__(self, config: TransMILConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.dim)
        # Every TransMIL setting (width, heads, landmarks, ...) is a setting of its two attention layers.
        self.attn = NystromAttention(**config.model_dump())

    def forward(self, h: Tensor) -> Tensor:
        return h + self.attn(self.norm(h))

    def forward_exposing_readout(self, h: Tensor) -> tuple[Tensor, LayerReadout]:
        """`forward`, and the class token's read-out in this layer as a graph node (`layer_relevance`)."""
        attended, ro, cls_out = self.attn.forward_exposing_readout(self.norm(h))
        return h + attended, LayerReadout(ro.weights, ro.values, cls_out)


class TransMIL(MILModel):
    # PPEG folds the tokens into a square grid, so padding would move every real tile: a padded batch is
    # run (and scored) bag by bag on its real tiles.
    unpadded_only = True

    def __init__(self, in_dim: int, n_classes: int, config: TransMILConfig) -> None:
        super().__init__(config, "layer_relevance", in_dim, n_classes)
        self.fc = nn.Sequential(nn.Linear(in_dim, config.dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.layer1 = TransLayer(config)
        self.ppeg = PPEG(config.dim)
        self.layer2 = TransLayer(config)
        self.norm = nn.LayerNorm(config.dim)
        self.classifier = nn.Linear(config.dim, n_classes)

    def readouts(
        self, x: Tensor, mask: Tensor | None, expose: bool
    ) -> tuple[tuple[LayerReadout, ...], ClsReadout]:
        check_inputs(x, mask)
        if mask is not None and not bool(mask.all()):
            raise ValueError(
                "TransMIL.readout takes unpadded bags; forward and tile_scores split padded batches"
            )
        n_tiles = x.shape[1]
        if n_tiles == 0:
            raise ValueError("TransMIL needs at least one tile per bag")
        side = math.isqrt(n_tiles - 1) + 1  # ceil(sqrt(N))
        order = torch.arange(side * side, device=x.device) % n_tiles
        h = self.fc(self.inputs(x))[:, order]
        h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1).to(h.dtype), h], dim=1)
        earlier: tuple[LayerReadout, ...] = ()
        if expose:
            h, first = self.layer1.forward_exposing_readout(h)
            earlier = (first,)
        else:
            h = self.layer1(h)
        h = self.ppeg(h, side)
        attn = self.layer2.attn
        mixed = attn.cls_readout(self.layer2.norm(h), None)
        h0 = h[:, 0]

        def head(out: Tensor) -> Tensor:
            return self.classifier(self.norm(h0 + attn.project(out.unsqueeze(-2))[:, 0]))

        def tiles(per_token: Tensor) -> Tensor:
            return per_token.new_zeros(per_token.shape[0], n_tiles).index_add(1, order, per_token[:, 1:])

        return earlier, ClsReadout(
            weights=mixed.weights, values=mixed.values, head=head, tiles=tiles, attention=mixed.attention
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_inputs(x, mask)
        if mask is None or bool(mask.all()):
            return super().forward(x)
        return torch.cat([super(TransMIL, self).forward(x[b : b + 1, mask[b]]) for b in range(x.shape[0])])


@register_model("transmil", TransMILConfig)
def build_transmil(in_dim: int, n_classes: int, config: TransMILConfig) -> TransMIL:
    return TransMIL(in_dim, n_classes, config)
