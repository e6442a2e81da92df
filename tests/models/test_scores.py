"""tile_scores: exact for the prediction, no side effects on the model, and usable in any grad mode."""

import pytest
import torch
from torch import nn

from wsi_pipeline.models import SCORE_METHODS
from wsi_pipeline.models.base import token_relevance

from .helpers import ALL_MODELS, VITS, assert_close, bag, small_model


def full_network_logits(model, x: torch.Tensor) -> torch.Tensor:
    """Each architecture run the plain way, every layer on every token, as its paper draws it."""
    name = type(model).__name__
    if name == "ViTWSI":
        h, _ = model.tokens(x, None)
        for block in model.blocks:
            h = block(h, None)
        return model.head(h[:, 0])
    if name == "GatedAttentionMIL":
        h = model.embed(x)
        a = model.attention_w(model.attention_v(h).tanh() * model.attention_u(h).sigmoid()).softmax(dim=1)
        return model.classifier((a * h).sum(dim=1))
    if name == "MeanLinear":
        return model.classifier(x.mean(dim=1))
    if name == "MeanMaxMLP":
        h = model.embed(x)
        return model.classifier(model.standardize(torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=-1)))
    assert name == "TransMIL"
    n = x.shape[1]
    side = int(torch.ceil(torch.tensor(n) ** 0.5))
    h = model.fc(x)
    h = torch.cat([h, h[:, : side * side - n]], dim=1)
    h = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), h], dim=1)
    h = model.layer2(model.ppeg(model.layer1(h), side))
    return model.classifier(model.norm(h[:, 0]))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_logits_through_the_readout_equal_the_full_network(name: str) -> None:
    """The last layer runs for the read-out only; that must not change a single logit."""
    model = small_model(name, n_classes=3, dtype=torch.float64)
    x = bag(23, batch=2, dtype=torch.float64)
    assert_close(model(x), full_network_logits(model, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_relevance_shares_add_up_to_the_readout(name: str) -> None:
    """sum_j r_j = <d logit / d o, o>: each token's share is exact, none is lost or counted twice."""
    model = small_model(name, n_classes=3, dtype=torch.float64)
    x = bag(17, batch=2, dtype=torch.float64)
    ro = model.readout(x)
    out = ro.output().detach().requires_grad_(True)
    logits = ro.head(out)
    picked = logits.argmax(dim=-1)
    (grad,) = torch.autograd.grad(logits.gather(1, picked[:, None]).sum(), out)
    shares = token_relevance(ro)
    assert_close(shares.sum(dim=1), (grad * out).sum(dim=(1, 2)), rtol=1e-9, atol=1e-9)
    # Folding tokens onto tiles (class token dropped, TransMIL's repeated tiles merged) loses nothing else.
    tiles = model.tile_scores(x, method="relevance").double()
    class_share = shares.sum(dim=1) - ro.tiles(shares).sum(dim=1)
    assert_close(tiles.sum(dim=1) + class_share, shares.sum(dim=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("method", SCORE_METHODS)
def test_scores_leave_no_gradients_and_work_under_no_grad(name: str, method: str) -> None:
    model = small_model(name)
    x = bag(9)
    with torch.no_grad():
        scores = model.tile_scores(x, method=method)
    assert scores.shape == (1, 9) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert all(p.grad is None for p in model.parameters())
    assert torch.is_grad_enabled()


def test_attention_scores_work_in_inference_mode_and_relevance_says_why_not() -> None:
    model = small_model("vit_sf")
    x = bag(6)
    with torch.inference_mode():
        assert model.tile_scores(x, method="attention").shape == (1, 6)
        with pytest.raises(RuntimeError, match="inference_mode"):
            model.tile_scores(x, method="relevance")


def test_default_method_and_bad_method() -> None:
    model = small_model("vit_sf")
    x = bag(5)
    assert torch.equal(model.tile_scores(x), model.tile_scores(x, method=model.default_score_method))
    with pytest.raises(ValueError, match="method"):
        model.tile_scores(x, method="gradcam")  # type: ignore[arg-type]


def test_relevance_target_picks_the_explained_logit() -> None:
    model = small_model("abmil", n_classes=3)
    x = bag(11)
    predicted = int(model(x).argmax())
    assert torch.equal(
        model.tile_scores(x, method="relevance", target=predicted), model.tile_scores(x, method="relevance")
    )
    other = (predicted + 1) % 3
    assert not torch.allclose(
        model.tile_scores(x, method="relevance", target=other), model.tile_scores(x, method="relevance")
    )
    # ABMIL's logits are linear in the bag vector: relevance is a_k <W[target], h_k>.
    h = model.embed(x)[0]
    a = model.tile_scores(x, method="attention")[0]
    assert_close(
        model.tile_scores(x, method="relevance", target=other)[0],
        a * (h @ model.classifier.weight[other]).detach(),
    )
    with pytest.raises(ValueError, match="target"):
        model.tile_scores(x, method="relevance", target=3)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_float16_inputs_are_cast_to_the_parameters_dtype(name: str) -> None:
    model = small_model(name)
    x = bag(8).half()
    logits = model(x)
    assert logits.dtype == torch.float32
    assert torch.equal(logits, model(x.float()))
    assert torch.equal(model.tile_scores(x), model.tile_scores(x.float()))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_bf16_autocast_runs_and_stays_close_to_float32(name: str) -> None:
    """CPU autocast stands in for CUDA autocast here: same casting rules, mixed-dtype ops must line up."""
    model = small_model(name)
    x = bag(30, batch=2)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    reference = model(x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x, mask)
        scores = {method: model.tile_scores(x, mask, method=method) for method in SCORE_METHODS}
    assert torch.isfinite(logits).all()
    assert (logits.float() - reference).abs().max() < 0.1 * reference.abs().max() + 0.05
    for method, s in scores.items():
        assert s.dtype == torch.float32 and torch.isfinite(s).all(), method
        assert (s[1, 20:] == 0).all()


def test_bf16_autocast_training_step_reaches_every_layer() -> None:
    model = small_model("vit_sf").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(bag(12, batch=2)), torch.tensor([0, 1]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_shape_errors_name_the_contract(name: str) -> None:
    model = small_model(name)
    with pytest.raises(ValueError, match="batch, tiles, features"):
        model(torch.randn(5, 24))
    with pytest.raises(ValueError, match="mask"):
        model(bag(5), torch.ones(1, 4, dtype=torch.bool))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_exposing_every_readout_changes_no_logit(name: str) -> None:
    """`layer_relevance` runs the network with each class-token row taken from its read-out: same logits."""
    model = small_model(name, n_classes=3, dtype=torch.float64)
    x = bag(19, dtype=torch.float64)
    earlier, ro = model.layer_readouts(x)
    expected_earlier = (
        {"abmil": 0, "mean_linear": 0, "meanmax_mlp": 0, "transmil": 1}[name]
        if name in ("abmil", "mean_linear", "meanmax_mlp", "transmil")
        else model.config.depth - 1
    )
    assert len(earlier) == expected_earlier
    for layer in earlier:
        assert_close(layer.output, torch.einsum("bht,bhtd->bhd", layer.weights, layer.values), 1e-12, 1e-12)
    assert_close(ro.head(ro.output()), model(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", VITS)
def test_layer_relevance_equals_a_reference_from_the_plain_network(name: str) -> None:
    """Per block: the class token's read-out split over tokens, times d logit / d (that block's class-token
    attention output), taken by hooks on the plain full-network forward."""
    model = small_model(name, n_classes=3, dtype=torch.float64, depth=3)
    x = bag(21, dtype=torch.float64)
    captured: list[torch.Tensor] = []

    def keep_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        args[0].retain_grad()
        captured.append(args[0])

    hooks = [block.attn.proj.register_forward_pre_hook(keep_input) for block in model.blocks]
    logits = full_network_logits(model, x)
    for hook in hooks:
        hook.remove()
    target = int(logits.argmax())
    logits[0, target].backward()

    expected = torch.zeros(x.shape[1], dtype=torch.float64)
    with torch.no_grad():
        h, _ = model.tokens(x, None)
        for block, proj_input in zip(model.blocks, captured, strict=True):
            ro = block.attn.cls_readout(block.norm1(h), None)
            grad = proj_input.grad[:, 0].view(1, block.attn.heads, block.attn.dim_head)
            expected += torch.einsum("bht,bhtd,bhd->bt", ro.weights, ro.values, grad)[0, 1:]
            h = block(h, None)
    model.zero_grad(set_to_none=True)
    assert_close(model.tile_scores(x, method="layer_relevance")[0].double(), expected, 1e-5, 1e-7)


@pytest.mark.parametrize(
    ("name", "overrides"), [("abmil", {}), ("vit_sf", {"depth": 1}), ("vit", {"depth": 1})]
)
def test_layer_relevance_of_a_single_readout_is_relevance(name: str, overrides: dict[str, int]) -> None:
    model = small_model(name, n_classes=3, **overrides)
    x = bag(13, batch=2)
    for target in (None, 2):
        assert_close(
            model.tile_scores(x, method="layer_relevance", target=target),
            model.tile_scores(x, method="relevance", target=target),
        )
    with pytest.raises(ValueError, match="target"):
        model.tile_scores(x, method="layer_relevance", target=3)


def test_layer_relevance_needs_autograd_and_says_so() -> None:
    model = small_model("vit_sf_ca")
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"layer_relevance.*inference_mode"):
        model.tile_scores(bag(4), method="layer_relevance")


def test_layer_relevance_works_with_frozen_parameters() -> None:
    """Scores come from the read-outs' gradients, not the parameters': freezing them changes nothing."""
    model = small_model("vit_sf_ca")
    x = bag(10)
    before = model.tile_scores(x, method="layer_relevance")
    model.requires_grad_(False)
    assert torch.equal(model.tile_scores(x, method="layer_relevance"), before)
