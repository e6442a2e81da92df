"""Building the extractor a run asked for: a registered name, `timm:<architecture>`, or a spec file.

Each resolves to an `ExtractorRecipe` (recipes.py; the registered ones in catalog.py), which is built into
a network with weights loaded strictly (extractors.py), a tile transform (with the optional stain
normaliser, stain.py) and an identity that every bag records: name, weights fingerprint, the recipe
itself, the stain settings, and one digest over recipe + stain (`extractor_sha256`).
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_pipeline.errors import WsiError
from wsi_pipeline.extract.catalog import named_recipe
from wsi_pipeline.extract.extractors import build_model, create_trunk, pooled, timm_recipe
from wsi_pipeline.extract.recipes import SPEC_PREFIX, TIMM_PREFIX, ExtractorRecipe, load_spec_file
from wsi_pipeline.extract.stain import StainMethod, stain_normalizer
from wsi_pipeline.extract.transforms import TileTransform
from wsi_pipeline.extract.weights import sha256_file

RANDOM_INIT = "random-init"
RANDOM_INIT_SEED = 0  # every --random-init run gets the same weights, so resumed runs never mix two networks
_PROBE_PX = 224  # input side for the output-dim check of models that take any size
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class ExtractorSpec:
    model: nn.Module
    transform: TileTransform  # RGB uint8 tile -> normalised tensor (prepare in workers, normalize on device)
    feature_dim: int
    precision: torch.dtype  # autocast dtype on CUDA when --precision auto

    @property
    def input_px(self) -> int | None:
        """Side of the model's input; None: any size, tiles go in at the store's tile_px."""
        return self.transform.input_px


@dataclass(frozen=True)
class Extractor:
    """A built extractor and what identifies its features (recorded in every bag)."""

    name: str
    spec: ExtractorSpec
    weights_sha256: str
    recipe: ExtractorRecipe
    stain: dict[str, Any] = field(default_factory=lambda: {"stain_norm": "none"})

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    @property
    def extractor_sha256(self) -> str:
        """One digest of how pixels became features, weights aside: the recipe and the stain settings."""
        canonical = json.dumps({"recipe": self.recipe.model_dump(mode="json"), **self.stain}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def attrs(self) -> dict[str, Any]:
        """The extractor's part of a bag's attributes."""
        return {
            "extractor": self.name,
            "weights_sha256": self.weights_sha256,
            "extractor_sha256": self.extractor_sha256,
            "extractor_spec": self.recipe.model_dump(mode="json"),
            **self.stain,
        }


def resolve_recipe(name: str, spec_file: Path | None = None) -> tuple[str, ExtractorRecipe]:
    """(bag name, recipe) of a registered name, `timm:<architecture>`, or an `--extractor-spec` file."""
    if spec_file is not None:
        return f"{SPEC_PREFIX}{Path(spec_file).stem}", load_spec_file(spec_file)
    if name.startswith(TIMM_PREFIX):
        return name, timm_recipe(name[len(TIMM_PREFIX) :])
    return name, named_recipe(name)


def build_extractor(
    name: str,
    weights: Path | None,
    random_init: bool,
    *,
    spec_file: Path | None = None,
    stain_norm: StainMethod = "none",
    stain_target: Path | None = None,
) -> Extractor:
    """Build `name` with `weights`; no weights is refused unless `random_init` says it is intended."""
    label, recipe = resolve_recipe(name, spec_file)
    if weights is None and not random_init:
        raise WsiError(
            f"extractor {label!r} needs --weights PATH (weights are never downloaded); "
            "pass --random-init to run with random weights on purpose (demos, tests)"
        )
    if weights is not None and random_init:
        raise WsiError("--weights and --random-init exclude each other")
    _check_output_dim(label, recipe)
    normalizer = stain_normalizer(stain_norm, stain_target)
    if weights is not None:
        model = build_model(recipe, weights, label)
        fingerprint = sha256_file(weights)
    else:
        with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's random stream
            torch.manual_seed(RANDOM_INIT_SEED)
            model = build_model(recipe, None, label)
        # The digest of the weights themselves: another torch version that draws other random weights
        # gives another fingerprint, and resume refuses to mix its bags with these.
        fingerprint = f"{RANDOM_INIT}:{state_sha256(model)}"
    transform = TileTransform(
        recipe.input_px,
        recipe.mean,
        recipe.std,
        interpolation=recipe.interpolation,
        resize_px=recipe.resize_px,
        stain=normalizer,
    )
    spec = ExtractorSpec(model, transform, recipe.feature_dim, _DTYPES[recipe.precision])
    stain = normalizer.attrs() if normalizer is not None else {"stain_norm": "none"}
    return Extractor(name=label, spec=spec, weights_sha256=fingerprint, recipe=recipe, stain=stain)


def state_sha256(model: nn.Module) -> str:
    """SHA-256 over a model's state dict (names, dtypes, shapes and bytes, in order)."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_output_dim(name: str, recipe: ExtractorRecipe) -> None:
    """A forward on the `meta` device (shapes only, no memory, no time): a wrong declared dim would
    otherwise fail every slide, one at a time, and only after the weights were read."""
    probe_px = recipe.input_px or _PROBE_PX
    with torch.device("meta"):
        model = pooled(recipe, create_trunk(recipe, skip_init=True))
        out = model.eval()(torch.zeros(1, 3, probe_px, probe_px))
    if tuple(out.shape) != (1, recipe.feature_dim):
        raise WsiError(
            f"extractor {name!r} returns shape {tuple(out.shape)[1:]} per tile, "
            f"not the declared feature_dim ({recipe.feature_dim},)"
        )
