"""What an extractor is, as data: the recipe a registered name or an `--extractor-spec` file stands for.

A recipe says how to build the network (timm architecture and its constructor arguments, layers named as
strings), how to prepare a tile for it (input px, interpolation, optional centre crop, mean/std), how to
turn its output into one vector per tile (pooling), and what the model card says about it (feature dim,
precision, µm/px trained at, parameters, licence, source). It is plain data: it imports no torch, so
`wsi extract --list-models` is instant, and it is copied as JSON into every bag it makes.

Registered extractors are one decorated function each, returning their recipe (see `catalog.py`).
"""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wsi_pipeline.errors import ConfigError
from wsi_pipeline.registry import Registry

TIMM_PREFIX = "timm:"
SPEC_PREFIX = "spec:"
Pooling = Literal["model", "cls", "mean", "cls+mean"]


class ExtractorRecipe(BaseModel):
    """One tile encoder, fully described. Field docs double as the `--extractor-spec` file reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str = Field(description="timm architecture name (timm.list_models()).")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="timm constructor arguments; mlp_layer / act_layer / norm_layer / embed_layer by name "
        "(e.g. SwiGLUPacked, silu, ConvStem).",
    )
    input_px: int | None = Field(
        description="Side of the model's input; null: fully convolutional, tiles go in at the store's tile_px."
    )
    resize_px: int | None = Field(
        None, description="Resize the tile to this side first, then centre-crop input_px (null: no crop)."
    )
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pooling: Pooling = Field(
        description="model: the network's own pooled output; cls: class token; mean: mean of the patch "
        "tokens; cls+mean: both, concatenated."
    )
    skip_tokens: int | None = Field(
        None,
        description="Leading tokens (class + register) the patch mean skips; null: the model's own count.",
    )
    feature_dim: int = Field(gt=0)
    precision: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Compute precision on CUDA (CPU always runs float32)."
    )
    checkpoint_filter: bool = Field(
        False, description="Convert older checkpoint layouts with timm's filter for the architecture."
    )
    droppable: tuple[str, ...] = Field(
        (), description="Key prefixes a checkpoint may carry that the encoder lacks (a classifier head)."
    )
    mpp: float | None = Field(None, gt=0, description="µm per px of the tiles it was trained on.")
    params_m: float | None = Field(None, gt=0, description="Parameters, millions (model card).")
    licence: str = ""
    source: str = Field("", description="Model card / config the recipe was derived from.")

    @model_validator(mode="after")
    def _check(self) -> "ExtractorRecipe":
        if self.resize_px is not None and (self.input_px is None or self.resize_px < self.input_px):
            raise ValueError("resize_px needs input_px and must be >= input_px (it is centre-cropped)")
        if self.skip_tokens is not None and self.pooling not in ("mean", "cls+mean"):
            raise ValueError("skip_tokens applies to pooling mean or cls+mean only")
        return self

    @property
    def model_px(self) -> int | None:
        """Pixels across the tile as the model sees it (before any centre crop)."""
        return self.resize_px or self.input_px

    def digest(self) -> str:
        """SHA-256 of the recipe's canonical JSON: two bags share it only if made the same way."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


RecipeFunction = Callable[[], ExtractorRecipe]
EXTRACTORS: Registry[RecipeFunction] = Registry("extractor")


def register_extractor(name: str) -> Callable[[RecipeFunction], RecipeFunction]:
    """Decorator: the function returns the recipe of `name` (its docstring cites the model card)."""
    if name.startswith((TIMM_PREFIX, SPEC_PREFIX)):
        raise ValueError(f"extractor names starting with {TIMM_PREFIX!r} or {SPEC_PREFIX!r} are reserved")
    return EXTRACTORS.register(name, ExtractorRecipe)


def load_spec_file(path: Path) -> ExtractorRecipe:
    """An `--extractor-spec` YAML file as a recipe; a mistake is one line naming the file and field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the extractor spec ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: an extractor spec is a mapping of fields (see configs/extractor_spec.yaml)"
        )
    try:
        return ExtractorRecipe(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
