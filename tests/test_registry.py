"""The one registry shape (`wsi_pipeline/registry.py`) and the registries built on it."""

from typing import get_args

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from wsi_pipeline.errors import ConfigError
from wsi_pipeline.registry import NoSettings, Registry


class _Width(BaseModel):
    """A setting with a default."""

    width: int = 3


def _make_registry() -> Registry:
    registry: Registry = Registry("widget")

    @registry.register("b", _Width)
    def build_b(config: _Width) -> int:
        """Builds b.

        Not part of the description."""
        return config.width

    registry.add("a", lambda: 1, description="the a")
    return registry


def test_entries_keep_config_builder_and_description() -> None:
    registry = _make_registry()
    assert registry.names() == ["a", "b"]  # sorted, whatever the registration order
    entry = registry.get("b")
    assert entry.config is _Width and entry.build(_Width()) == 3
    assert entry.description == "Builds b."
    assert registry.get("a").config is NoSettings and registry.get("a").description == "the a"
    assert [e.name for e in registry] == ["a", "b"] and "a" in registry and "c" not in registry


def test_a_second_registration_of_a_name_is_refused() -> None:
    registry = _make_registry()
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        registry.add("a", lambda: 2)
    assert registry.get("a").build() == 1  # the first one stays


def test_an_unknown_name_is_one_line_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        _make_registry().get("c")
    assert str(caught.value) == "unknown widget 'c'; choose one of: a, b"


def test_tissue_methods_are_the_configs_choices() -> None:
    """`--tissue-method` is validated against `TissueMethod`; every choice must have a masker and back."""
    from wsi_pipeline.tiling.config import TissueMethod
    from wsi_pipeline.tiling.tissue import TISSUE_MASKERS

    assert TISSUE_MASKERS.names() == sorted(get_args(TissueMethod))


def test_wsi_models_prints_every_aggregator_with_its_defaults() -> None:
    from cli.main import app
    from wsi_pipeline.models import MODELS

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for entry in MODELS:
        assert entry.name in result.output
    assert "dim_head=64" in result.output  # a ViT default, read from its config class
