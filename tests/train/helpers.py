"""Small cohorts and fast settings for the training tests (the loop's mechanics do not depend on width)."""

import csv
from pathlib import Path
from typing import Any

from tests.bags import SyntheticSlide, make_cohort, write_labels
from wsi_pipeline.train import TrainConfig

# A narrow softmax-free ViT with dropout, so resuming must restore the RNG to give identical weights.
NARROW_VIT_SF: dict[str, Any] = {"dim": 32, "heads": 2, "dim_head": 16, "mlp_dim": 32, "dropout": 0.1}
SMALL_DIM = 64


def small_cohort(
    root: Path,
    n_slides: int = 24,
    *,
    slides_per_patient: int = 1,
    seed: int = 0,
    planted_fraction: float = 0.3,
    tiles: tuple[int, int] = (20, 60),
) -> list[SyntheticSlide]:
    """`n_slides` 64-d bags in root/features and root/labels.csv."""
    slides = make_cohort(
        root / "features",
        n_slides,
        planted_fraction=planted_fraction,
        tiles=tiles,
        dim=SMALL_DIM,
        seed=seed,
        slides_per_patient=slides_per_patient,
    )
    write_labels(root / "labels.csv", slides)
    return slides


def quick_config(root: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "features": root / "features",
        "labels": root / "labels.csv",
        "model": "vit_sf",
        "model_overrides": NARROW_VIT_SF,
        "epochs": 3,
        "lr": 1e-3,
        "warmup_epochs": 0.5,
        "patience": 10,
        "min_epochs": 1,
        "device": "cpu",
        "threads": 1,
    }
    values.update(overrides)
    return TrainConfig(**values)


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path
