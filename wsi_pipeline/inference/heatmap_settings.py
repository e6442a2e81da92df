"""Heatmap settings shared by `wsi eval` and `wsi predict`, defined once so that a default or its help text
cannot drift between the two commands, which draw their maps through the same code
(`wsi_pipeline/inference/slide_heatmap.py`). Torch-free: `wsi --help` builds its options from it."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wsi_pipeline.models.config import SCORE_METHODS  # the torch-free list of the models


class HeatmapSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    heatmaps: bool = Field(True, description="per-slide heatmap PNG + GeoJSON (+ top-k strip)")
    slides_root: Path | None = Field(None, description="folder of the slides, for the top-k tile strips")
    top_k: int = Field(8, ge=0, description="tiles in the top-scoring strip; 0 = no strip")
    score_method: str | None = Field(
        None,
        description="tile scores for heatmaps (wsi_pipeline/models/README.md lists them); default: the model's",
    )
    canvas_max_px: int = Field(
        1024, ge=64, description="longer side of the heatmap canvas (thumbnail or blank)"
    )
    overlay_alpha: float = Field(0.5, gt=0, le=1, description="opacity of the scores over the thumbnail")
    heatmap_scale: Literal["slide", "global"] = Field(
        "slide",
        description="colour scale of signed heatmaps: each slide its own, or one over all the run's slides",
    )

    @field_validator("score_method")
    @classmethod
    def _known_method(cls, value: str | None) -> str | None:
        if value is not None and value not in SCORE_METHODS:
            raise ValueError(f"unknown score method {value!r}; choose one of {', '.join(SCORE_METHODS)}")
        return value
