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
- ``projected_gradient``: ``conservative``'s gradient x input, in the standardised features the network sees,
  restricted to the bag's *evidence directions*: among the bag's top `CANDIDATE_DIRECTIONS` principal
  directions (subspace iteration, O(N D) per step), the `PROJECTION_RANK` combinations u in which the
  first-order term ``sum_j (g_j . u)(z_j . u)`` is largest in magnitude. Tile j scores
  ``sum_u (g_j . u)(z_j . u)``; the scores add up to that part of the first-order term. Linear in N.
  Why: `vit_sf` is a sum of normalised per-tile terms. Every path from a tile to the logit goes through bag
  statistics (sequence-norm means and variances, ``K^T V / n``), so the model reads how the bag's tiles
  differ from each other, not where they sit: on isotropic bags with a planted shift it reads the bag's
  *variance* along the planted direction (measured: each tile's exact leave-one-out effect grows like
  ``(z_j - mean z)^2`` along it, and removing half the background *raises* the positive log-odds). Over all
  D directions, a tile's gradient x input adds to that its own noise times the weights that a model trained
  on a few dozen bags never drives to zero. That term is large and random per tile, but its sum over the
  bag is nearly the same for every bag, so it is no evidence. At 30% density it explained ~60% of the
  variance of the exact occlusion effect, whose top-k precision was 0.54 (chance 0.30; gradient x input
  0.27, ``conservative`` 0.62, this method 0.72: benchmarks/RESULTS.md, heatmap section). A bag's
  evidence lies along directions in which its tiles vary (a planted shift, a tile type), which are among
  its top principal directions; keeping only those the model responds to most drops the per-tile noise.
  With all D directions, or a bag of at most `CANDIDATE_DIRECTIONS` tiles, the scores are ``conservative``'s.
- ``evidence_profile``: the model's *systematic* response along a few directions, integrated from the bag
  mean to each tile. Directions: where the training classes differ (the model's `class_means`) and the bag's
  `PROJECTION_RANK` evidence directions (as `projected_gradient` chooses them). Along each direction u, the
  linearised gradients ``g_j . u`` of the bag's tiles are fitted by a line in the tiles' positions
  ``t_j = z_j . u`` (least squares over the bag), and tile j scores the integral of that line from the bag
  mean m to t_j: ``gbar (t_j - m) + beta (t_j - m)^2 / 2``. Linear in N.
  Why: `projected_gradient` still multiplies each tile's own gradient, which carries the tile's noise through
  weights a model trained on a few dozen bags never drives to zero, and it finds the evidence only where the
  bag's own principal directions show it. In 2048-d with the planted tiles 4 sd away in 30 % of the tiles, a
  bag of 400-1,400 tiles does not show it (the planted variance sits below the noise edge of the bag's
  spectrum). The fitted line keeps what the model does with a tile's *position* along u, the same for every
  tile (a constant for a model that reads a mean shift, a slope for one that reads a variance, as `vit_sf`
  does); the class means give the direction from the training cohort, where a bag cannot. The bag's
  directions are chosen by the model's response, not by variance alone: along a real bag's top principal
  directions (tissue variation) the model responds too, and those profiles buried 3 % planted tiles
  (benchmarks/RESULTS.md, heatmap section).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from wsi_pipeline.models.attention import MultiHeadAttention
from wsi_pipeline.models.base import MILModel, register_score_method, require_autograd, upcast
from wsi_pipeline.models.softmax_free import SequenceNorm

IG_STEPS = 32
# Evidence directions kept by `projected_gradient`, chosen among the bag's top CANDIDATE_DIRECTIONS principal
# directions. The planted-signal generators of benchmarks/bench_heatmaps.py need one (isotropic, low-rank) or
# two (combination: two tile types); each more lets some of the per-tile noise back in.
PROJECTION_RANK = 2
CANDIDATE_DIRECTIONS = 16
# Subspace iterations, from PROJECTION_RANK + _OVERSAMPLE random directions: enough for a singular-value
# gap of 2 to converge to float32 precision.
_SUBSPACE_ITERATIONS = 12
_OVERSAMPLE = 4
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


@register_score_method("projected_gradient")
def projected_gradient(model: MILModel, x: Tensor, target: int | None) -> Tensor:
    require_autograd("projected_gradient")
    return projected_gradient_input(model, x, resolve_target(model, x, target), PROJECTION_RANK)


def projected_gradient_input(model: MILModel, x: Tensor, target: int, rank: int) -> Tensor:
    """(n,) ``conservative`` gradient x input of one bag in the standardised features, restricted to the
    `rank` evidence directions of the bag (module docstring)."""
    grad, z = standardised_gradient(model, x, target)
    if rank >= z.shape[1] or z.shape[0] <= CANDIDATE_DIRECTIONS:  # nothing to remove / too few to tell
        return (grad * z).sum(dim=-1)
    basis = evidence_directions(grad, z, rank)
    return ((grad @ basis) * (z @ basis)).sum(dim=-1)


def standardised_gradient(model: MILModel, x: Tensor, target: int) -> tuple[Tensor, Tensor]:
    """(n, D) each: ``conservative``'s d log-odds / d standardised x of one bag, and the standardised x
    itself (0 = the training mean), the coordinates `projected_gradient` and `evidence_profile` work in."""
    with linearised_normalisations(model):
        grad = _input_gradient(model, x, target)[0] * model.feature_std
    return grad, (upcast(x[0]) - model.feature_mean) / model.feature_std


def evidence_directions(grad: Tensor, z: Tensor, rank: int) -> Tensor:
    """(D, rank) orthonormal: among the bag's top `CANDIDATE_DIRECTIONS` principal directions, the `rank`
    combinations in which the first-order term ``sum_j (g_j . u)(z_j . u)`` is largest in magnitude."""
    principal = dominant_directions(z, CANDIDATE_DIRECTIONS, center=z.mean(dim=0))
    first_order = (grad @ principal).T @ (z @ principal)
    values, vectors = torch.linalg.eigh((first_order + first_order.T) / 2)
    return principal @ vectors[:, values.abs().argsort(descending=True)[:rank]]


def dominant_directions(matrix: Tensor, rank: int, center: Tensor | None = None) -> Tensor:
    """(D, rank) orthonormal top right singular vectors of ``matrix - center`` (n, D; center (D,) or none),
    by subspace iteration from a fixed start: O(n D rank) per iteration and never a D x D or n x n matrix,
    nor a centred copy of the bag, so linear in the tiles; the fixed start (its own generator) keeps the
    scores deterministic and the global random state untouched."""
    offset = torch.zeros_like(matrix[0]) if center is None else center

    def times(basis: Tensor) -> Tensor:  # (matrix - offset) @ basis
        return matrix @ basis - offset @ basis

    width = min(rank + _OVERSAMPLE, *matrix.shape)
    start = torch.randn(
        matrix.shape[1], width, generator=torch.Generator().manual_seed(0), dtype=matrix.dtype
    )
    basis = torch.linalg.qr(start.to(matrix.device)).Q
    for _ in range(_SUBSPACE_ITERATIONS):
        left = times(basis)
        basis = torch.linalg.qr(matrix.T @ left - offset[:, None] * left.sum(dim=0)).Q
    # Rotate within the converged subspace so its first `rank` columns are the top singular directions.
    _, _, vh = torch.linalg.svd(times(basis), full_matrices=False)
    return basis @ vh[:rank].T


@register_score_method("evidence_profile")
def evidence_profile(model: MILModel, x: Tensor, target: int | None) -> Tensor:
    require_autograd("evidence_profile")
    grad, z = standardised_gradient(model, x, resolve_target(model, x, target))
    basis = profile_directions(model, grad, z)
    return profile_integral(grad @ basis, z @ basis).sum(dim=-1)


def profile_integral(slope: Tensor, position: Tensor) -> Tensor:
    """(n, r) per tile and direction: the integral, from the bag mean m to the tile's position t, of the
    least-squares line through the tiles' (position, slope) pairs: ``gbar d + beta d^2 / 2``, d = t - m.
    The line passes through (m, gbar), so the integral needs only its slope beta."""
    d = position - position.mean(dim=0)
    gbar = slope.mean(dim=0)
    var = d.square().mean(dim=0)
    beta = torch.where(var > 0, (d * (slope - gbar)).mean(dim=0) / var.clamp_min(1e-30), 0.0)
    return gbar * d + beta * d.square() / 2


def profile_directions(model: MILModel, grad: Tensor, z: Tensor) -> Tensor:
    """(D, r) orthonormal: the directions the training classes differ along (in the standardised features),
    then the bag's `PROJECTION_RANK` evidence directions (`evidence_directions`) with those removed."""
    contrasts = class_contrasts(model)
    chosen = evidence_directions(grad, z, PROJECTION_RANK)
    chosen = chosen - contrasts @ (contrasts.T @ chosen)
    return torch.linalg.qr(torch.cat([contrasts, chosen], dim=1)).Q


def class_contrasts(model: MILModel) -> Tensor:
    """(D, c) orthonormal basis of the differences between the classes' mean standardised tiles, c <= C - 1;
    (D, 0) for a model whose class means are unknown (a checkpoint from before they were kept)."""
    means = (upcast(model.class_means) - model.feature_mean) / model.feature_std
    _, values, vh = torch.linalg.svd(means - means.mean(dim=0), full_matrices=False)
    keep = values > 1e-6 * values.max().clamp_min(1e-30)
    return vh[keep].T
