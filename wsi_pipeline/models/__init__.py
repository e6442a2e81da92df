"""Slide-level aggregators over bags of tile features: the softmax-free ViT-WSI and its baselines.

    model = build_model("vit_sf", in_dim=2048, n_classes=2)
    logits = model(x, mask)                 # x (B, N, D), mask (B, N) bool, True = real tile
    scores = model.tile_scores(x, mask)     # (B, N), exact per-tile scores for heatmaps

See README.md in this folder for which aggregator to pick.
"""

# Importing the model modules registers them.
from wsi_pipeline.models import abmil, transmil, vit  # noqa: F401
from wsi_pipeline.models.base import SCORE_METHODS, ClsReadout, MILModel
from wsi_pipeline.models.registry import build_model, list_models, model_config, register_model

__all__ = [
    "SCORE_METHODS",
    "ClsReadout",
    "MILModel",
    "build_model",
    "list_models",
    "model_config",
    "register_model",
]
