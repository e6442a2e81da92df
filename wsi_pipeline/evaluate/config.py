"""Evaluation settings: each default stated here once (`wsi eval --print-config` shows them resolved).

Inputs default to the run's own (`features`, `labels` from its config.yaml); `split: all` evaluates every
labelled slide with a bag, for an external cohort (no model ever scores a slide it trained or validated on:
`wsi_pipeline.evaluate.assign`). The bootstrap resamples patients, stratified by class and seeded, so the
confidence interval is reproducible and every resample holds every class.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field

from wsi_pipeline.inference.heatmap_settings import HeatmapSettings

EvalSplit = Literal["test", "val", "train", "all"]
EvalLevel = Literal["slide", "patient"]


class EvalConfig(HeatmapSettings):
    """The heatmap fields (`heatmaps`, `top_k`, `score_method`, ...) are `wsi predict`'s too: HeatmapSettings."""

    features: Path | None = Field(None, description="folder of feature bags; default: the run's")
    labels: Path | None = Field(None, description="labels CSV; default: the run's")
    split: EvalSplit = Field(
        "test", description="slides of this split in splits.csv; all = every labelled slide"
    )
    include_seen: bool = Field(
        False, description="split all on a single-split run: also score its train/val slides, labelled seen"
    )
    level: EvalLevel = Field(
        "slide", description="slide, or patient: AUROC over the mean of each patient's slide probabilities"
    )
    out: Path | None = Field(None, description="folder for the outputs; default: eval[-SPLIT] in the run")
    tiles: Path | None = Field(None, description="folder of tile stores, for slide thumbnails under heatmaps")
    n_bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the AUROC interval; 0 = none")
    ci_level: float = Field(0.95, gt=0, lt=1, description="level of the bootstrap confidence interval")
    ci_min_patients: int = Field(
        10, ge=1, description="no interval below this many patients in a class (too few to resample)"
    )
    seed: int = Field(0, description="seed of the bootstrap")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, ...")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null = the physical cores")
