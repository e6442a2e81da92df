"""Gated attention MIL (`abmil`, Ilse et al. 2018): the standard linear-cost baseline.

Each tile h_k = ReLU(W x_k) (after any `hidden_dims` layers) gets a weight
a_k = softmax_k(w^T (tanh(V h_k) * sigmoid(U h_k))); the bag is z = sum_k a_k h_k and the logits are
Linear(z). The weights a_k are exactly the read-out's mixing weights, so `tile_scores(method="attention")` is
the classic ABMIL heatmap.
"""

from itertools import pairwise

from torch import Tensor, nn

from wsi_pipeline.models.base import ClsReadout, LayerReadout, MILModel, check_inputs, upcast
from wsi_pipeline.models.config import ABMILConfig
from wsi_pipeline.models.registry import register_model


class GatedAttentionMIL(MILModel):
    def __init__(self, in_dim: int, n_classes: int, config: ABMILConfig) -> None:
        super().__init__(config, "attention", in_dim, n_classes)
        widths = (in_dim, *config.hidden_dims, config.embed_dim)
        self.embed = nn.Sequential(
            *(
                layer
                for width_in, width_out in pairwise(widths)
                for layer in (nn.Linear(width_in, width_out), nn.ReLU(), nn.Dropout(config.dropout))
            )
        )
        self.attention_v = nn.Linear(config.embed_dim, config.attention_dim)
        self.attention_u = nn.Linear(config.embed_dim, config.attention_dim)
        # No bias: the softmax over tiles cancels it (the paper's w^T has none either).
        self.attention_w = nn.Linear(config.attention_dim, 1, bias=False)
        self.classifier = nn.Linear(config.embed_dim, n_classes)

    def attention(self, h: Tensor, mask: Tensor | None) -> Tensor:
        """(B, N, M) embeddings -> (B, N) weights summing to 1 over each bag's real tiles (float32)."""
        gated = self.attention_v(h).tanh() * self.attention_u(h).sigmoid()
        logits = upcast(self.attention_w(gated).squeeze(-1))
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return logits.softmax(dim=-1)

    def readouts(
        self, x: Tensor, mask: Tensor | None, expose: bool
    ) -> tuple[tuple[LayerReadout, ...], ClsReadout]:
        check_inputs(x, mask)
        h = self.embed(self.inputs(x))
        weights = self.attention(h, mask)

        def head(out: Tensor) -> Tensor:
            return self.classifier(out[:, 0])

        def tiles(per_token: Tensor) -> Tensor:
            return per_token

        return (), ClsReadout(weights=weights.unsqueeze(1), values=h.unsqueeze(1), head=head, tiles=tiles)


@register_model("abmil", ABMILConfig)
def build_abmil(in_dim: int, n_classes: int, config: ABMILConfig) -> GatedAttentionMIL:
    return GatedAttentionMIL(in_dim, n_classes, config)
