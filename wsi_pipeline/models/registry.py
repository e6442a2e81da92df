"""Name -> (config class, builder): how the CLI, the trainer and the benchmarks get an aggregator.

Defaults live in the config classes (`config.py`); `build_model` validates overrides against them, so an
unknown or mistyped hyperparameter is a one-line `ConfigError` that names it.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from wsi_pipeline.config import describe_validation_error
from wsi_pipeline.errors import ConfigError
from wsi_pipeline.models.config import ModelConfig
from wsi_pipeline.registry import Registry

if TYPE_CHECKING:
    from wsi_pipeline.models.base import MILModel

C = TypeVar("C", bound=ModelConfig)
Builder = Callable[[int, int, Any], "MILModel"]

MODELS: Registry[Builder] = Registry("model")


def register_model(name: str, config: type[C]) -> Callable[[Callable[[int, int, C], "MILModel"]], Builder]:
    """Decorator: register ``build(in_dim, n_classes, config) -> MILModel`` under ``name``."""
    return MODELS.register(name, config)


def list_models() -> list[str]:
    return MODELS.names()


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The validated hyperparameters of ``name``: code defaults updated with ``overrides``."""
    spec = MODELS.get(name)
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
    return MODELS.get(name).build(in_dim, n_classes, config)
