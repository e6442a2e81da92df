"""Synthetic feature bags with a planted signal, written in our bag layout, for the train and eval tests.

Every tile's feature is standard Gaussian noise; in a positive slide a contiguous blob of tiles (a "tumour
region") is shifted along one fixed direction, by `shift` noise standard deviations. A model can only separate the classes by finding those tiles, so the
tests can check both the slide AUROC and that the heatmap scores rank the planted tiles first.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from wsi_pipeline.stores.feature_bag import write_bag

TILE_PX_LEVEL0 = 512
MPP_LEVEL0 = 0.5


@dataclass(frozen=True)
class SyntheticSlide:
    slide_id: str
    patient_id: str
    label: str
    n_tiles: int
    planted: np.ndarray  # (N,) bool


def grid_coords(n_tiles: int, rng: np.random.Generator) -> np.ndarray:
    """Level-0 top-left corners of `n_tiles` cells of a roughly square grid, with a few holes like tissue."""
    side = int(np.ceil(np.sqrt(n_tiles * 1.15)))
    cells = np.sort(rng.choice(side * side, n_tiles, replace=False))
    return np.stack([cells % side, cells // side], axis=1).astype(np.int64) * TILE_PX_LEVEL0


def planted_blob(coords: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """The `fraction` of tiles nearest a random tile: one contiguous region."""
    n_planted = max(1, round(fraction * len(coords)))
    centre = coords[rng.integers(len(coords))]
    order = np.argsort(np.linalg.norm(coords - centre, axis=1), kind="stable")
    mask = np.zeros(len(coords), dtype=bool)
    mask[order[:n_planted]] = True
    return mask


def signal_direction(dim: int, seed: int = 1234) -> np.ndarray:
    u = np.random.default_rng(seed).standard_normal(dim)
    return (u / np.linalg.norm(u)).astype(np.float32)


def write_synthetic_bag(path: Path, features: np.ndarray, coords: np.ndarray, slide_id: str) -> None:
    attrs = {
        "extractor": "synthetic",
        "feature_dim": features.shape[1],
        "tile_px": 224,
        "tile_um": 256.0,
        "mpp_level0": MPP_LEVEL0,
        "tile_px_level0": TILE_PX_LEVEL0,
        "slide_id": slide_id,
        "slide_path": f"/nonexistent/{slide_id}.svs",
        "wsi_version": "test",
    }
    with write_bag(
        path, coords=coords, feature_dim=features.shape[1], dtype="float16", attrs=attrs
    ) as writer:
        writer.write(features)


def write_raw_bag(path: Path, features: np.ndarray, coords: np.ndarray | None = None) -> None:
    """A bag written with h5py directly: for contents our writer refuses (NaN), to test the trainer's checks."""
    coords = coords if coords is not None else np.zeros((len(features), 2), dtype=np.int64)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", data=features)
        h5.create_dataset("coords", data=coords)
        h5.attrs["format"] = "wsi-feature-bag"
        h5.attrs["format_version"] = 1
        h5.attrs["feature_dim"] = features.shape[1]
        h5.attrs["tile_px_level0"] = TILE_PX_LEVEL0


def make_cohort(
    features_dir: Path,
    n_slides: int,
    *,
    planted_fraction: float,
    tiles: tuple[int, int] = (200, 1100),
    dim: int = 2048,
    shift: float = 10.0,
    seed: int = 0,
    slides_per_patient: int = 1,
    classes: tuple[str, str] = ("negative", "positive"),
) -> list[SyntheticSlide]:
    """Write `n_slides` bags (half positive, alternating) into `features_dir`; return what was planted."""
    rng = np.random.default_rng(seed)
    direction = signal_direction(dim)
    features_dir.mkdir(parents=True, exist_ok=True)
    slides = []
    for i in range(n_slides):
        patient = i // slides_per_patient
        label = classes[patient % 2]
        slide_id = f"TCGA-{patient // 100:02d}-{patient % 100:04d}-01Z-00-DX{i % slides_per_patient + 1}"
        n_tiles = int(rng.integers(tiles[0], tiles[1] + 1))
        coords = grid_coords(n_tiles, rng)
        features = rng.standard_normal((n_tiles, dim), dtype=np.float32)
        planted = (
            planted_blob(coords, planted_fraction, rng) if label == classes[1] else np.zeros(n_tiles, bool)
        )
        features[planted] += shift * direction
        write_synthetic_bag(features_dir / f"{slide_id}.h5", features, coords, slide_id)
        slides.append(SyntheticSlide(slide_id, slide_id[:12], label, n_tiles, planted))
    return slides


def write_labels(path: Path, slides: list[SyntheticSlide], *, patient_column: bool = False) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["slide_id", "label", *(["patient_id"] if patient_column else [])])
        for s in slides:
            writer.writerow([s.slide_id, s.label, *([s.patient_id] if patient_column else [])])
    return path
