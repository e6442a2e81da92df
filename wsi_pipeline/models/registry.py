"""Name -> (config class, builder): how the CLI, the trainer and the benchmarks get an aggregator.

Defaults live in the config classes (`config.py`); `build_model` validates overrides against them, so an
unknown or mistyped hyperparameter is a one-line `ConfigError` that names it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from wsi_pipeline.config import describe_validation_error
from wsi_pipeline.errors import ConfigError
from wsi_pipeline.models.config import ModelConfig

if TYPE_CHECKING:
    from wsi_pipeline.models.base import MILModel

C = TypeVar("C", bound=ModelConfig)
Builder = Callable[[int, int, Any], "MILModel"]


@dataclass(frozen=True)
class ModelSpec:
    config: type[ModelConfig]
    build: Builder


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, config: type[C]) -> Callable[[Callable[[int, int, C], "MILModel"]], Builder]:
    """Decorator: register ``build(in_dim, n_classes, config) -> MILModel`` under ``name``."""

    def decorator(build: Callable[[int, int, C], "MILModel"]) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = ModelSpec(config=config, build=build)
        return build

    return decorator


def list_models() -> list[str]:
    return sorted(_MODELS)


def _spec(name: str) -> ModelSpec:
    try:
        return _MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The validated hyperparameters of ``name``: code defaults updated with ``overrides``."""
    spec = _spec(name)
    try:
        return spec.config(**overrides)
    except ValidationError as exc:
        message = describe_validation_error(exc, f"model {name!r}")
        if any(err["type"] == "extra_forbidden" for err in exc.errors()):
            message += f" (known: {', '.join(spec.config.model_fields)})"
        raise ConfigError(message) from exc


def build_model(name: str, in_dim: int = 2048, n_classes: int = 2, **overrides: Any) -> "MILModel":
    """Build aggregator ``name`` for ``in_dim``-dimensional tile features and ``n_classes`` logits."""
    for arg, value in (("in_dim", in_dim), ("n_classes", n_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model {name!r}: {arg} must be a positive integer, got {value!r}")
    config = model_config(name, **overrides)
    return _spec(name).build(in_dim, n_classes, config)
