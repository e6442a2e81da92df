"""Settings of `wsi predict`: a trained run on new, unlabelled slides.

Two inputs, exactly one of them: `features` (a folder of bags made like the run's training bags) or
`slides` (slide files or folders, tiled and extracted here with the geometry, filters and extractor recorded
in the run's `extractor.json`). Heatmap settings mean what they mean for `wsi eval`.
"""

from pathlib import Path

from pydantic import Field, model_validator

from wsi_pipeline.inference.heatmap_settings import HeatmapSettings


class PredictConfig(HeatmapSettings):
    """The heatmap fields (`heatmaps`, `top_k`, `score_method`, ...) are `wsi eval`'s too: HeatmapSettings."""

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
    tiles: Path | None = Field(
        None, description="folder of tile stores, for thumbnails; default with slides: OUT/tiles"
    )
    graph_max_tiles: int = Field(
        50_000,
        ge=1,
        description="heatmaps of larger bags use attention scores, which need no autograd graph of the bag",
    )
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

    @model_validator(mode="after")
    def _one_input(self) -> "PredictConfig":
        if (self.features is None) == (not self.slides):
            raise ValueError("give either --features BAGS/ or --slides SLIDES..., not both and not neither")
        if self.slides and self.weights is not None and self.random_init:
            raise ValueError("--weights and --random-init exclude each other")
        return self
