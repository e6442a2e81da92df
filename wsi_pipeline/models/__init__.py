"""Slide-level aggregators over bags of tile features: the softmax-free ViT-WSI and its baselines.

    model = build_model("vit_sf", in_dim=2048, n_classes=2)
    logits = model(x, mask)                 # x (B, N, D), mask (B, N) bool, True = real tile
    scores = model.tile_scores(x, mask)     # (B, N), exact per-tile scores for heatmaps

See README.md in this folder for which aggregator to pick.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from wsi_pipeline.models.config import SCORE_METHODS, ScoreMethod

if TYPE_CHECKING:
    from wsi_pipeline.models.base import ClsReadout, MILModel
    from wsi_pipeline.models.registry import MODELS, build_model, list_models, model_config, register_model

__all__ = [
    "MODELS",
    "SCORE_METHODS",
    "ClsReadout",
    "MILModel",
    "ScoreMethod",
    "build_model",
    "list_models",
    "model_config",
    "register_model",
]
_LOADED_ON_USE = {
    "ClsReadout": "base",
    "MILModel": "base",
    "MODELS": "registry",
    "build_model": "registry",
    "list_models": "registry",
    "model_config": "registry",
    "register_model": "registry",
}
_BUILTIN_MODULES = ("abmil", "baselines", "scores", "transmil", "vit")  # importing registers them


def __getattr__(name: str) -> Any:
    """The models and their registry load on first use: they import torch (heavy), and importing
    `models.config` (settings and score-method names, for the CLI and `EvalConfig`) must not pay for it."""
    if name not in _LOADED_ON_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for module in _BUILTIN_MODULES:
        import_module(f"{__name__}.{module}")  # heavy: torch
    return getattr(import_module(f"{__name__}.{_LOADED_ON_USE[name]}"), name)
