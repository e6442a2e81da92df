"""What every aggregator shares: the call signature, mask handling, and exact per-tile scores.

All six models end in a *read-out*: the class token (or ABMIL's bag vector) is a weighted sum of per-token
value vectors, ``o[h] = sum_j w[h, j] * v[h, j]``, followed by a small head that only sees ``o``. Each model
exposes that decomposition (`ClsReadout`); the two score methods are then computed once, here:

- ``attention``: the read-out's weights averaged over heads (what attention heatmaps usually show);
- ``relevance``: each token's additive share of ``o`` projected on the gradient of the chosen logit,
  ``r_j = sum_h w[h, j] * <g[h], v[h, j]>`` with ``g = d logit / d o``. The shares sum exactly to
  ``<g, o>``, cost O(N d), and need one backward pass through the head only, taken with
  `torch.autograd.grad` on ``o`` so no parameter's ``.grad`` is touched.
- ``layer_relevance``: the same shares for the class token's read-out in *every* block, each projected on
  the gradient of the logit with respect to that block's read-out output (one backward pass through the
  whole network, O(N d)), summed over blocks. Why: in a deep model the last read-out may carry little of
  the evidence. `vit_sf_ca` picks out sparse tiles with its first block's softmax read-out, after which the
  class token already holds the signal and its last read-out looks anywhere (benchmarks/bench_signal.py).
  Models with a single read-out (`abmil`) give the same scores as ``relevance``.

The other methods (gradient x input, integrated gradients, occlusion, conservative, projected gradient)
need only forwards and input gradients; each is one function registered with `register_score_method`
(models/scores.py), and `tile_scores` runs it bag by bag on the real tiles.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wsi_pipeline.models.config import SCORE_METHODS, ModelConfig, ScoreMethod
from wsi_pipeline.registry import Registry

# Buffers that training sets and a model works without, so a checkpoint written before they existed loads with
# the model's initial values (standardisation, temperature: the identity; class tile means: zeros, "unknown",
# which `evidence_profile` then does without). Every MILModel has the first four; `meanmax_mlp` has the
# running statistics of its pooled values (`baselines.RunningStandardize`, mean 0 and variance 1).
IDENTITY_BUFFERS = (
    "feature_mean",
    "feature_std",
    "temperature",
    "class_means",
    "standardize.running_mean",
    "standardize.running_var",
    "standardize.bags_seen",
)


@dataclass(frozen=True)
class ClsReadout:
    """The last read-out of a forward pass, split per token.

    ``head(einsum("bht,bhtd->bhd", weights, values))`` reproduces the model's logits; tests hold every model
    to that, which is what makes the scores exact for the prediction they explain.
    """

    weights: Tensor  # (B, H, T): exact mixing weights of the read-out over the T tokens
    values: Tensor  # (B, H, T, dh)
    head: Callable[[Tensor], Tensor]  # (B, H, dh) read-out -> (B, n_classes) logits
    tiles: Callable[[Tensor], Tensor]  # (B, T) per-token scores -> (B, N) per-tile scores
    attention: Tensor | None = None  # (B, H, T) weights to show when they differ from the mixing weights

    def output(self) -> Tensor:
        return torch.einsum("bht,bhtd->bhd", self.weights.to(self.values.dtype), self.values)


@dataclass(frozen=True)
class LayerReadout:
    """A class-token read-out before the last: its per-token split and its output as a node of the graph."""

    weights: Tensor  # (B, H, T)
    values: Tensor  # (B, H, T, dh)
    output: Tensor  # (B, H, dh) = sum_t weights * values, the tensor the rest of the network reads


def upcast(x: Tensor) -> Tensor:
    """x in float32 or wider: statistics and softmaxes over 10^5 tokens are not safe in 16-bit floats."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def check_inputs(x: Tensor, mask: Tensor | None) -> None:
    """Shape errors here name the contract; deep inside a matmul they would name a kernel."""
    if x.ndim != 3:
        raise ValueError(f"x must be (batch, tiles, features), got shape {tuple(x.shape)}")
    if mask is not None and (mask.shape != x.shape[:2] or mask.dtype != torch.bool):
        raise ValueError(
            f"mask must be bool of shape {tuple(x.shape[:2])} (True = real tile), "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )


def with_class_token(mask: Tensor | None) -> Tensor | None:
    """The token mask once a class token (always real) is prepended to the tiles."""
    if mask is None:
        return None
    return torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)


class MILModel(nn.Module, ABC):
    """A bag classifier: ``model(x, mask) -> logits`` plus exact ``tile_scores``."""

    unpadded_only = False  # True: a padded batch is scored bag by bag on its real tiles (TransMIL)

    def __init__(
        self, config: ModelConfig, default_score_method: ScoreMethod, in_dim: int, n_classes: int
    ) -> None:
        super().__init__()
        if default_score_method not in SCORE_METHODS:
            raise ValueError(f"default_score_method must be one of {SCORE_METHODS}")
        self.config = config  # the resolved hyperparameters, to be written next to checkpoints
        # Chosen per model from benchmarks/bench_signal.py; the heatmaps use it unless told otherwise.
        self.default_score_method: str = default_score_method
        # Per-feature standardisation and the calibration temperature are buffers, not training code: they
        # travel in the state dict, so every consumer that rebuilds the model from a checkpoint (validation,
        # `wsi eval`, prediction) applies them without knowing they exist. Identity until set by training.
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.register_buffer("temperature", torch.ones(()))
        # Mean raw feature vector of the training tiles of each class's slides: the directions along which
        # the classes differ, which `evidence_profile` looks along (a single bag may not show them).
        self.register_buffer("class_means", torch.zeros(n_classes, in_dim))

    @property
    def param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def set_feature_norm(self, mean: Tensor, std: Tensor) -> None:
        """Standardise inputs with these per-feature statistics of the training tiles from now on."""
        self.feature_mean.copy_(mean.to(self.feature_mean))
        self.feature_std.copy_(std.to(self.feature_std))

    def set_class_means(self, means: Tensor) -> None:
        """(n_classes, in_dim) mean raw features of the training tiles of each class's slides."""
        self.class_means.copy_(means.to(self.class_means))

    def inputs(self, x: Tensor) -> Tensor:
        """Tile features as the network sees them: standardised per feature, in the parameters' dtype.
        Every `readouts` goes through here, so no path (forward, tile scores) can skip the standardisation."""
        z = (upcast(x) - self.feature_mean) / self.feature_std
        return z.to(self.param_dtype)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, N, D), mask (B, N) bool with True = real tile -> logits (B, n_classes).

        Logits are computed *through* the read-out, so predictions and tile scores share one code path.
        They are divided by the calibration `temperature` (1 while training; fitted on validation bags after).
        """
        ro = self.readout(x, mask)
        return ro.head(ro.output()) / self.temperature

    def readout(self, x: Tensor, mask: Tensor | None = None) -> ClsReadout:
        """Run the network up to its last read-out and return that read-out split per token."""
        return self.readouts(x, mask, expose=False)[1]

    def layer_readouts(
        self, x: Tensor, mask: Tensor | None = None
    ) -> tuple[tuple[LayerReadout, ...], ClsReadout]:
        """`readout`, plus every earlier class-token read-out on the graph path to it."""
        return self.readouts(x, mask, expose=True)

    @abstractmethod
    def readouts(
        self, x: Tensor, mask: Tensor | None, expose: bool
    ) -> tuple[tuple[LayerReadout, ...], ClsReadout]:
        """The last read-out, split per token; with `expose`, also every earlier class-token read-out as a
        node of the graph (`layer_relevance`). A network with a single read-out has no earlier ones."""

    def tile_scores(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        method: ScoreMethod | None = None,
        *,
        target: int | None = None,
    ) -> Tensor:
        """One score per tile, (B, N) float32; padded tiles score 0.

        ``method`` defaults to `default_score_method`. ``target`` picks the logit that ``relevance`` explains
        (default: each bag's predicted class). Call `.eval()` first when the model has dropout.
        """
        method = method or self.default_score_method  # type: ignore[assignment]
        if method not in SCORE_METHODS:
            raise ValueError(f"method must be one of {SCORE_METHODS}, got {method!r}")
        check_inputs(x, mask)
        if self.unpadded_only and mask is not None and not bool(mask.all()):
            return self._per_bag_scores(
                lambda m, bag, t: m.tile_scores(bag, None, method, target=t)[0], x, mask, target
            )
        if method in SCORERS:
            return self._per_bag_scores(SCORERS.get(method).build, x, mask, target)
        if method == "layer_relevance":
            ro, per_token = self._layer_relevance(x, mask, target)
        else:
            with torch.no_grad():
                ro = self.readout(x, mask)
            if method == "attention":
                per_token = upcast(ro.attention if ro.attention is not None else ro.weights).mean(dim=1)
            else:
                per_token = token_relevance(ro, target)
        scores = ro.tiles(per_token).float()
        if mask is not None:
            scores = scores.masked_fill(~mask, 0.0)
        return scores

    def _per_bag_scores(self, scorer: "Scorer", x: Tensor, mask: Tensor | None, target: int | None) -> Tensor:
        """A registered per-bag method run on each bag's real tiles alone, so it never sees padding."""
        scores = torch.zeros(x.shape[:2], dtype=torch.float32, device=x.device)
        for b in range(x.shape[0]):
            real = slice(None) if mask is None else mask[b]
            scores[b, real] = scorer(self, x[b : b + 1, real], target).float()
        return scores

    def _layer_relevance(
        self, x: Tensor, mask: Tensor | None, target: int | None
    ) -> tuple[ClsReadout, Tensor]:
        """The last read-out and the (B, T) shares of all read-outs (see the module docstring)."""
        require_autograd("layer_relevance")
        with torch.enable_grad():
            # x joins the graph so the read-outs are graph nodes even when every parameter is frozen.
            earlier, ro = self.layer_readouts(x.detach().requires_grad_(True), mask)
            last = LayerReadout(ro.weights, ro.values, ro.output())
            picked = picked_logits(ro.head(last.output), target)
            layers = (*earlier, last)
            grads = torch.autograd.grad(picked.sum(), [layer.output for layer in layers])
        per_token = sum(readout_shares(r.weights, r.values, g) for r, g in zip(layers, grads, strict=True))
        return ro, per_token


# Score methods beyond the read-out ones, one function per name (models/scores.py): (model, one unpadded bag
# (1, n, D), target or None) -> (n,) scores. `tile_scores` dispatches here first. The registry shape every
# named choice uses (`wsi_pipeline/registry.py`): a second registration of a name is refused.
Scorer = Callable[[MILModel, Tensor, int | None], Tensor]
SCORERS: Registry[Scorer] = Registry("score method")


def register_score_method(name: str) -> Callable[[Scorer], Scorer]:
    """Decorator: register a per-bag score method under a name listed in `SCORE_METHODS` (models/config.py),
    the torch-free list the CLI offers."""
    if name not in SCORE_METHODS:
        raise ValueError(f"score method {name!r} is not in SCORE_METHODS")
    return SCORERS.register(name)


def require_autograd(method: str) -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"tile_scores(method='{method}') needs autograd: call it outside torch.inference_mode()"
        )


def picked_logits(logits: Tensor, target: int | None) -> Tensor:
    """(B, 1): the logit of `target`, or of each bag's predicted class. Bags are independent, so the
    gradient of their sum is each bag's own gradient."""
    if target is None:
        return logits.gather(-1, logits.argmax(dim=-1, keepdim=True))
    if not 0 <= target < logits.shape[-1]:
        raise ValueError(f"target must be a class index in [0, {logits.shape[-1]}), got {target}")
    return logits[:, target : target + 1]


def token_relevance(ro: ClsReadout, target: int | None = None) -> Tensor:
    """(B, T) additive shares of the read-out, projected on d logit[target] / d out (default: predicted class)."""
    require_autograd("relevance")
    with torch.enable_grad():
        out = ro.output().detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(picked_logits(ro.head(out), target).sum(), out)
    return readout_shares(ro.weights, ro.values, grad)


def readout_shares(weights: Tensor, values: Tensor, grad: Tensor) -> Tensor:
    """(B, T): token t's share ``sum_h w[h, t] <g[h], v[h, t]>`` of a read-out, projected on its gradient."""
    return torch.einsum(
        "bht,bhtd,bhd->bt", upcast(weights.detach()), upcast(values.detach()), upcast(grad.detach())
    )
