"""Extractor registry: adding a tile encoder is one decorated function.

A registered function takes the weights path (None for a random init) and returns an `ExtractorSpec`:
the model, its transform (RGB uint8 tile -> normalised tensor), its output dim and preferred precision.
`timm:<architecture>` resolves to any timm model without registration.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from wsi_pipeline.errors import WsiError
from wsi_pipeline.extract.transforms import TileTransform
from wsi_pipeline.extract.weights import sha256_file

RANDOM_INIT = "random-init"
RANDOM_INIT_SEED = 0  # every --random-init run gets the same weights, so resumed runs never mix two networks
TIMM_PREFIX = "timm:"
_PROBE_PX = 224  # input side for the output-dim check of models that take any size


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

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim


ExtractorFactory = Callable[[Path | None], ExtractorSpec]
_REGISTRY: dict[str, ExtractorFactory] = {}


def register_extractor(name: str) -> Callable[[ExtractorFactory], ExtractorFactory]:
    def decorate(factory: ExtractorFactory) -> ExtractorFactory:
        if name in _REGISTRY or name.startswith(TIMM_PREFIX):
            raise ValueError(f"extractor name {name!r} is taken")
        _REGISTRY[name] = factory
        return factory

    return decorate


def extractor_names() -> list[str]:
    _load_builtins()
    return [*sorted(_REGISTRY), f"{TIMM_PREFIX}<architecture>"]


def build_extractor(name: str, weights: Path | None, random_init: bool) -> Extractor:
    """Build `name` with `weights`; no weights is refused unless `random_init` says it is intended."""
    factory = _factory(name)
    if weights is None and not random_init:
        raise WsiError(
            f"extractor {name!r} needs --weights PATH (weights are never downloaded); "
            "pass --random-init to run with random weights on purpose (demos, tests)"
        )
    if weights is not None and random_init:
        raise WsiError("--weights and --random-init exclude each other")
    if weights is not None:
        spec = factory(weights)
        fingerprint = sha256_file(weights)
    else:
        with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's random stream
            torch.manual_seed(RANDOM_INIT_SEED)
            spec = factory(None)
        # The digest of the weights themselves: another torch version that draws other random weights
        # gives another fingerprint, and resume refuses to mix its bags with these.
        fingerprint = f"{RANDOM_INIT}:{state_sha256(spec.model)}"
    _check_output_dim(name, spec)
    return Extractor(name=name, spec=spec, weights_sha256=fingerprint)


def state_sha256(model: nn.Module) -> str:
    """SHA-256 over a model's state dict (names, dtypes, shapes and bytes, in order)."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _factory(name: str) -> ExtractorFactory:
    _load_builtins()
    if name.startswith(TIMM_PREFIX):
        from wsi_pipeline.extract.extractors import timm_extractor

        architecture = name[len(TIMM_PREFIX) :]
        return lambda weights: timm_extractor(architecture, weights)
    if name not in _REGISTRY:
        raise WsiError(f"unknown extractor {name!r}; choose one of: {', '.join(extractor_names())}")
    return _REGISTRY[name]


def _check_output_dim(name: str, spec: ExtractorSpec) -> None:
    """One tiny forward: a wrong declared dim would otherwise fail every slide, one at a time."""
    probe_px = spec.input_px or _PROBE_PX
    probe = torch.zeros(1, 3, probe_px, probe_px)
    with torch.inference_mode():
        out = spec.model.eval()(probe)
    if tuple(out.shape) != (1, spec.feature_dim):
        raise WsiError(
            f"extractor {name!r} returns shape {tuple(out.shape)[1:]} per tile, "
            f"not the declared ({spec.feature_dim},)"
        )


def _load_builtins() -> None:
    import wsi_pipeline.extract.extractors  # noqa: F401 - registers the built-in extractors
