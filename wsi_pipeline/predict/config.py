"""Settings of `wsi predict`: a trained run on new, unlabelled slides.

Two inputs, exactly one of them: `features` (a folder of bags made like the run's training bags) or
`slides` (slide files or folders, tiled and extracted here with the geometry, filters and extractor recorded
in the run's `extractor.json`). Heatmap settings mean what they mean for `wsi eval`.
"""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wsi_pipeline.models.config import SCORE_METHODS  # the torch-free list of the models


class PredictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: Path | None = Field(None, description="folder of feature bags <slide_id>.h5 to predict")
    slides: list[Path] = Field(
        default_factory=list, description="slide files or folders: tiled and extracted as the run's bags were"
    )
    patients: Path | None = Field(
        None, description="CSV slide_id,patient_id; default: the TCGA barcode rule, else the slide id"
    )
    fold: int | None = Field(
        None, ge=0, description="predict with this fold's model only; default: all folds"
    )
    patient_level: bool = Field(False, description="also write patients.csv, one row per patient")
    allow_extractor_mismatch: bool = Field(
        False, description="predict bags whose extractor identity differs from the run's (recorded)"
    )
    heatmaps: bool = Field(True, description="per-slide heatmap PNG + GeoJSON (+ top-k strip)")
    tiles: Path | None = Field(
        None, description="folder of tile stores, for thumbnails; default with slides: OUT/tiles"
    )
    slides_root: Path | None = Field(None, description="folder of the slides, for the top-k tile strips")
    top_k: int = Field(8, ge=0, description="tiles in the top-scoring strip; 0 = no strip")
    score_method: str | None = Field(
        None, description="tile scores for heatmaps (wsi_pipeline/models/README.md); default: the model's"
    )
    graph_max_tiles: int = Field(
        50_000,
        ge=1,
        description="heatmaps of larger bags use attention scores, which need no autograd graph of the bag",
    )
    canvas_max_px: int = Field(
        1024, ge=64, description="longer side of the heatmap canvas (thumbnail or blank)"
    )
    overlay_alpha: float = Field(0.5, gt=0, le=1, description="opacity of the scores over the thumbnail")
    weights: Path | None = Field(
        None, description="extractor weights, for slides (checked against the run's)"
    )
    random_init: bool = Field(
        False, description="slides: the run's extractor had random weights (demos, tests)"
    )
    mpp: float | None = Field(
        None, gt=0, description="slides: µm per level-0 pixel for slide files that record no resolution"
    )
    tile_workers: int = Field(1, ge=1, description="slides: CPU cores for tiling")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, ...")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null = the physical cores")

    @field_validator("score_method")
    @classmethod
    def _known_method(cls, value: str | None) -> str | None:
        """Checked against the models' own list (`models.config` is torch-free: `wsi --help` stays instant)."""
        if value is not None and value not in SCORE_METHODS:
            raise ValueError(f"unknown score method {value!r}; choose one of {', '.join(SCORE_METHODS)}")
        return value

    @model_validator(mode="after")
    def _one_input(self) -> "PredictConfig":
        if (self.features is None) == (not self.slides):
            raise ValueError("give either --features BAGS/ or --slides SLIDES..., not both and not neither")
        if self.slides and self.weights is not None and self.random_init:
            raise ValueError("--weights and --random-init exclude each other")
        return self
