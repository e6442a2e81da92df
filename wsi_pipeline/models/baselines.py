"""Pooling baselines as aggregators: `mean_linear` and `meanmax_mlp`.

On real features a logistic regression on mean-pooled tiles is hard to beat (benchmarks/bench_real.py);
having it in the registry means every comparison runs through the same training, calibration, evaluation
and heatmap code as the attention models. Both are exact read-outs in the sense of `base.py`:

- `mean_linear`: one head, uniform weights 1/n over the real tiles, values = the standardised features;
- `meanmax_mlp`: tiles embedded to E channels; 2E one-channel heads, the first E with uniform weights (mean
  pooling), the last E with a one-hot weight on the tile holding each channel's maximum (max pooling), so a
  max-pooled channel's whole value is credited to the tile it came from. The 2E pooled values are
  standardised over the training bags (`RunningStandardize`) before the linear layer.

Why the pooled values are standardised: a mean over hundreds of tiles varies little from bag to bag (its
between-bag spread is a few hundredths of a max-pooled channel's), so gradient steps at batch size 1 move the
head along the noisy max channels long before the mean channels, and on a cohort whose label is a proportion
of tile types (benchmarks/bench_real.py, `tiles_mix`) the model fell to AUROC 0.65 while a logistic regression
on the same pooled values, standardised, reached 0.92.
"""

import torch
from torch import Tensor, nn

from wsi_pipeline.models.base import ClsReadout, LayerReadout, MILModel, check_inputs, upcast
from wsi_pipeline.models.config import MeanLinearConfig, MeanMaxMLPConfig
from wsi_pipeline.models.registry import register_model


def uniform_weights(x: Tensor, mask: Tensor | None) -> Tensor:
    """(B, N) weights 1/n over each bag's real tiles, in float32 or x's wider dtype."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    real = x.new_ones(x.shape[:2], dtype=dtype) if mask is None else mask.to(dtype)
    return real / real.sum(dim=1, keepdim=True).clamp_min(1.0)


def _identity(per_token: Tensor) -> Tensor:
    return per_token


class MeanLinear(MILModel):
    def __init__(self, in_dim: int, n_classes: int, config: MeanLinearConfig) -> None:
        super().__init__(config, "relevance", in_dim, n_classes)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(in_dim, n_classes)

    def readouts(
        self, x: Tensor, mask: Tensor | None, expose: bool
    ) -> tuple[tuple[LayerReadout, ...], ClsReadout]:
        check_inputs(x, mask)
        values = self.inputs(x)
        weights = uniform_weights(x, mask)

        def head(out: Tensor) -> Tensor:
            return self.classifier(self.dropout(out[:, 0]))

        return (), ClsReadout(
            weights=weights.unsqueeze(1), values=values.unsqueeze(1), head=head, tiles=_identity
        )


class RunningStandardize(nn.Module):
    """Per-channel z-score of pooled bag vectors with running statistics of the training bags.

    BatchNorm's batch statistics need more than one bag per step, and training runs one whole bag per step;
    so in training mode each bag first updates a running mean and variance (a cumulative average over the
    first 1 / `momentum` bags, then an exponential one that follows the embedding as it learns) and is then
    normalised by them. Statistics are detached and float32; they are buffers, so checkpoints keep them.
    """

    def __init__(self, channels: int, momentum: float = 0.05, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("bags_seen", torch.zeros((), dtype=torch.long))

    def forward(self, pooled: Tensor) -> Tensor:
        """(B, C) -> (B, C) standardised."""
        if self.training:
            self._update(upcast(pooled.detach()))
        scale = torch.rsqrt(self.running_var + self.eps)
        return ((upcast(pooled) - self.running_mean) * scale).to(pooled.dtype)

    @torch.no_grad()
    def _update(self, pooled: Tensor) -> None:
        for row in pooled:
            self.bags_seen += 1
            # On the statistics' device: a Python float of `bags_seen` would stall CUDA every step.
            rate = (1.0 / self.bags_seen.to(self.running_mean.dtype)).clamp_min(self.momentum)
            delta = row - self.running_mean
            self.running_mean += rate * delta
            # West's update: exact while the rate is 1 / bags_seen (the first bag sets var to 0).
            self.running_var.copy_((1 - rate) * (self.running_var + rate * delta.square()))


class MeanMaxMLP(MILModel):
    def __init__(self, in_dim: int, n_classes: int, config: MeanMaxMLPConfig) -> None:
        super().__init__(config, "relevance", in_dim, n_classes)
        self.embed = nn.Sequential(nn.Linear(in_dim, config.embed_dim), nn.ReLU(), nn.Dropout(config.dropout))
        self.standardize = RunningStandardize(2 * config.embed_dim)
        self.classifier = nn.Linear(2 * config.embed_dim, n_classes)

    def readouts(
        self, x: Tensor, mask: Tensor | None, expose: bool
    ) -> tuple[tuple[LayerReadout, ...], ClsReadout]:
        check_inputs(x, mask)
        h = self.embed(self.inputs(x))  # (B, N, E)
        mean_w = uniform_weights(x, mask).unsqueeze(1).expand(-1, h.shape[2], -1)  # (B, E, N)
        scores = upcast(h.detach())
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        # One-hot on each channel's arg-max tile: a constant of the graph, like attention weights.
        max_w = torch.zeros_like(mean_w).scatter_(2, scores.argmax(dim=1).unsqueeze(-1), 1.0)
        channels = h.transpose(1, 2).unsqueeze(-1)  # (B, E, N, 1)

        def head(out: Tensor) -> Tensor:
            return self.classifier(self.standardize(out[..., 0]))

        return (), ClsReadout(
            weights=torch.cat([mean_w, max_w], dim=1),
            values=torch.cat([channels, channels], dim=1),
            head=head,
            tiles=_identity,
        )


@register_model("mean_linear", MeanLinearConfig)
def build_mean_linear(in_dim: int, n_classes: int, config: MeanLinearConfig) -> MeanLinear:
    return MeanLinear(in_dim, n_classes, config)


@register_model("meanmax_mlp", MeanMaxMLPConfig)
def build_meanmax_mlp(in_dim: int, n_classes: int, config: MeanMaxMLPConfig) -> MeanMaxMLP:
    return MeanMaxMLP(in_dim, n_classes, config)
