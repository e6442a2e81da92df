import pytest
import torch

from wsi_pipeline.errors import ConfigError
from wsi_pipeline.models import (
    SCORE_METHODS,
    MILModel,
    build_model,
    list_models,
    model_config,
    register_model,
)
from wsi_pipeline.models.config import ViTConfig

from .helpers import ALL_MODELS


def test_registry_lists_every_model() -> None:
    assert list_models() == sorted(ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_build_records_config_and_score_method(name: str) -> None:
    model = build_model(name, in_dim=8, n_classes=3, dropout=0.0)
    assert isinstance(model, MILModel)
    assert model.config == model_config(name, dropout=0.0)
    assert model.default_score_method in SCORE_METHODS
    assert model(torch.randn(1, 5, 8)).shape == (1, 3)


def test_paper_defaults() -> None:
    vit = model_config("vit_sf")
    assert (vit.dim, vit.depth, vit.heads, vit.dim_head, vit.mlp_dim, vit.eps) == (512, 2, 8, 64, 512, 1e-5)
    abmil = model_config("abmil")
    assert (abmil.embed_dim, abmil.attention_dim) == (500, 128)
    transmil = model_config("transmil")
    assert (transmil.dim, transmil.heads, transmil.landmarks, transmil.pinv_iterations) == (512, 8, 256, 6)


def test_abmil_hidden_layers_come_before_the_embedding_and_the_default_has_none() -> None:
    # Ilse et al.'s network for the classic MIL sets is fc-256, fc-128, then a 64-wide embedding; the default
    # keeps one layer, so checkpoints written before `hidden_dims` existed load with the same keys.
    default = build_model("abmil", in_dim=8, n_classes=2)
    assert [k for k in default.state_dict() if k.startswith("embed.")] == ["embed.0.weight", "embed.0.bias"]
    deep = build_model("abmil", in_dim=8, n_classes=2, hidden_dims=[32, 16], embed_dim=4, dropout=0.5)
    linears = [m for m in deep.embed if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 32), (32, 16), (16, 4)]
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in deep.embed) == 3
    assert deep(torch.randn(1, 5, 8)).shape == (1, 2)
    with pytest.raises(ConfigError, match="hidden_dims"):
        build_model("abmil", in_dim=8, n_classes=2, hidden_dims=[32, 0])


def test_typo_is_a_one_line_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        build_model("vit_sf", in_dim=8, n_classes=2, depht=4)
    message = str(err.value)
    assert "depht" in message and "depth" in message and "\n" not in message


def test_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match="heads"):
        build_model("vit", in_dim=8, n_classes=2, heads=0)
    with pytest.raises(ConfigError, match="residual_kernel"):
        build_model("transmil", in_dim=8, n_classes=2, residual_kernel=4)


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="vit_sf_ca"):
        build_model("vit_softmax_free")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_dimensions_are_validated(bad: object) -> None:
    with pytest.raises(ConfigError, match="in_dim"):
        build_model("abmil", in_dim=bad, n_classes=2)  # type: ignore[arg-type]


def test_register_model_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("vit", ViTConfig)(lambda in_dim, n_classes, config: None)  # type: ignore[arg-type, return-value]


def test_score_methods_share_the_registry_shape() -> None:
    from wsi_pipeline.models.base import SCORERS, register_score_method

    assert {"conservative", "occlusion", "integrated_gradients"} <= set(SCORERS.names())
    with pytest.raises(ValueError, match="already registered"):
        register_score_method("occlusion")(lambda model, x, target: x)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="not in SCORE_METHODS"):
        register_score_method("saliency")(lambda model, x, target: x)  # type: ignore[arg-type, return-value]
