"""Score methods that treat the model as a black box (forwards and input gradients only): one decorated
function per method, registered beside the read-out methods of `base.py`.

Each explains the *log-odds* of the target class, ``logit[t] - logsumexp(other logits)`` (for two classes the
logit difference), rather than one raw logit: a softmax ignores a shift common to all logits, so only the
log-odds is something a tile can move. Each takes one unpadded bag (1, n, D) and returns (n,) float32;
`MILModel.tile_scores` handles batches and masks.

- ``gradient_input``: d log-odds / d x_j times (x_j - training mean), summed over features. One backward
  pass, O(N d). The training mean is the origin of the features the network sees (`MILModel.inputs`).
- ``integrated_gradients``: the same product integrated along the straight path from every tile at the
  training mean (the network's zero input) to the bag, with `IG_STEPS` midpoint steps; the scores add up to
  log-odds(bag) - log-odds(baseline) up to the quadrature error. O(steps N d). A per-bag baseline (the bag
  mean) is *not* used: the path then starts from a bag of identical tiles, where sequence norms divide by
  ~0 and the path crosses a region no real bag visits (it ranked background tiles first on `vit_sf`).
- ``occlusion``: log-odds(bag) - log-odds(bag without tile j), exact leave-one-tile-out. N forwards of N
  tiles, O(N^2 d): the reference the linear methods are measured against, for bags of a few thousand tiles.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from wsi_pipeline.models.attention import MultiHeadAttention
from wsi_pipeline.models.base import MILModel, register_score_method, require_autograd, upcast
from wsi_pipeline.models.softmax_free import SequenceNorm

IG_STEPS = 32
# Copies of a bag per forward in the multi-forward methods: bounds memory at ~2^25 feature values.
_CHUNK_VALUES = 2**25


def log_odds(logits: Tensor, target: int) -> Tensor:
    """(B,) log p[target] / (1 - p[target]) from (B, C) logits, in float32 or wider."""
    logits = upcast(logits)
    others = torch.cat([logits[:, :target], logits[:, target + 1 :]], dim=1)
    return logits[:, target] - torch.logsumexp(others, dim=1)


def resolve_target(model: MILModel, x: Tensor, target: int | None) -> int:
    """`target`, or the bag's predicted class; a bad index is a one-line error."""
    with torch.no_grad():
        logits = model(x)
    if target is None:
        return int(logits[0].argmax())
    if not 0 <= target < logits.shape[-1]:
        raise ValueError(f"target must be a class index in [0, {logits.shape[-1]}), got {target}")
    return target


def _input_gradient(model: MILModel, x: Tensor, target: int) -> Tensor:
    """d log-odds / d x for a batch of bags (B, n, D), float32."""
    with torch.enable_grad():
        xg = upcast(x.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(log_odds(model(xg), target).sum(), xg)
    return grad


def _chunks(n_copies: int, x: Tensor) -> range:
    """Start indices of chunks of copies of `x` that fit the memory bound."""
    return range(0, n_copies, max(1, _CHUNK_VALUES // max(1, x[0].numel())))


@register_score_method("gradient_input")
def gradient_input(model: MILModel, x: Tensor, target: int | None) -> Tensor:
    require_autograd("gradient_input")
    t = resolve_target(model, x, target)
    return (_input_gradient(model, x, t) * (upcast(x) - model.feature_mean)).sum(dim=-1)[0]


@register_score_method("integrated_gradients")
def integrated_gradients(model: MILModel, x: Tensor, target: int | None) -> Tensor:
    require_autograd("integrated_gradients")
    t = resolve_target(model, x, target)
    delta = upcast(x) - model.feature_mean
    alphas = (torch.arange(IG_STEPS, device=x.device, dtype=torch.float32) + 0.5) / IG_STEPS
    total = torch.zeros_like(delta[0])
    step = _chunks(IG_STEPS, x).step
    for start in _chunks(IG_STEPS, x):
        a = alphas[start : start + step].view(-1, 1, 1)
        total += _input_gradient(model, model.feature_mean + a * delta, t).sum(dim=0)
    return (total / IG_STEPS * delta[0]).sum(dim=-1)


@register_score_method("occlusion")
def occlusion(model: MILModel, x: Tensor, target: int | None) -> Tensor:
    t = resolve_target(model, x, target)
    n = x.shape[1]
    scores = torch.zeros(n, dtype=upcast(x).dtype, device=x.device)
    if n == 1:  # no bag is left without its only tile: nothing to compare with
        return scores
    with torch.no_grad():
        full = log_odds(model(x), t)
        step = _chunks(n, x).step
        for start in _chunks(n, x):
            rows = torch.arange(start, min(n, start + step), device=x.device)
            keep = torch.ones(len(rows), n, dtype=torch.bool, device=x.device)
            keep[torch.arange(len(rows)), rows] = False
            scores[rows] = full - log_odds(model(x.expand(len(rows), -1, -1), keep), t)
    return scores


@register_score_method("conservative")
def conservative(model: MILModel, x: Tensor, target: int | None) -> Tensor:
    require_autograd("conservative")
    t = resolve_target(model, x, target)
    with linearised_normalisations(model):
        grad = _input_gradient(model, x, t)
    return (grad * (upcast(x) - model.feature_mean)).sum(dim=-1)[0]


@contextmanager
def linearised_normalisations(model: MILModel) -> Iterator[None]:
    """Within: every LayerNorm and sequence norm divides by a *constant* (its scale detached), and every
    attention's queries and keys are detached, so attention weights are constants and only the values carry
    the gradient (the LN and AH rules of Ali et al. 2022). Values stay the same; only the gradient changes."""
    hooks = []
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            hooks.append(module.register_forward_hook(_layer_norm_with_constant_scale))
        elif isinstance(module, SequenceNorm):
            hooks.append(module.register_forward_hook(_sequence_norm_with_constant_scale))
        elif isinstance(module, MultiHeadAttention):
            hooks.append(module.qkv.register_forward_hook(_constant_queries_and_keys))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def _layer_norm_with_constant_scale(module: nn.LayerNorm, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
    x = args[0]
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    y = (x - mean) * torch.rsqrt(var + module.eps).detach()
    if module.weight is not None:
        y = y * module.weight + module.bias
    return y.to(out.dtype)


def _sequence_norm_with_constant_scale(module: SequenceNorm, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
    x, mask = args
    xf = upcast(x)
    weight = torch.ones_like(xf[..., :1]) if mask is None else mask[:, None, :, None].to(xf.dtype)
    mean = (xf * weight).sum(dim=2, keepdim=True) / weight.sum(dim=2, keepdim=True)
    var = ((xf - mean).square() * weight).sum(dim=2, keepdim=True) / weight.sum(dim=2, keepdim=True)
    return ((xf - mean) * (module.weight * torch.rsqrt(var + module.eps)).detach() + module.bias).to(
        out.dtype
    )


def _constant_queries_and_keys(module: nn.Linear, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
    """The (B, n, 3 * H * dh) q|k|v projection with its q and k thirds cut from the graph."""
    third = out.shape[-1] // 3
    return torch.cat([out[..., : 2 * third].detach(), out[..., 2 * third :]], dim=-1)
