"""A 3-fold run on synthetic bags with a planted signal, and new unlabelled bags from the same generator.

Bags carry the attributes `wsi extract` writes (extractor, weights fingerprint, tile geometry), so the
extractor-identity checks have something to compare. The planted truth of the new bags is kept here and
never written next to them: `wsi predict` sees no labels.
"""

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.bags import MPP_LEVEL0, TILE_PX_LEVEL0, grid_coords, planted_blob, signal_direction
from wsi_pipeline.stores.feature_bag import write_bag
from wsi_pipeline.train import TrainConfig, run_training

DIM = 64
WEIGHTS = "synthetic-weights-A"
CLASSES = ("negative", "positive")


@dataclass(frozen=True)
class NewBag:
    slide_id: str
    positive: bool


def bag_attrs(slide_id: str, dim: int, **changes: object) -> dict[str, object]:
    attrs: dict[str, object] = {
        "slide_id": slide_id,
        "slide_path": f"/nonexistent/{slide_id}.svs",
        "extractor": "synthetic",
        "weights_sha256": WEIGHTS,
        "feature_dim": dim,
        "dtype": "float16",
        "tile_px": 224,
        "tile_um": 256.0,
        "mpp_level0": MPP_LEVEL0,
        "tile_px_level0": TILE_PX_LEVEL0,
        "wsi_version": "test",
    }
    attrs.update(changes)
    return attrs


def write_planted_bag(
    folder: Path, slide_id: str, positive: bool, rng: np.random.Generator, dim: int = DIM, **changes: object
) -> None:
    """Gaussian tiles; a positive bag has 30% of them, one contiguous region, shifted along one direction."""
    n_tiles = int(rng.integers(30, 80))
    coords = grid_coords(n_tiles, rng)
    features = rng.standard_normal((n_tiles, dim), dtype=np.float32)
    if positive:
        features[planted_blob(coords, 0.3, rng)] += 3.0 * signal_direction(dim)
    attrs = bag_attrs(slide_id, dim, **changes)
    with write_bag(
        folder / f"{slide_id}.h5", coords=coords, feature_dim=dim, dtype="float16", attrs=attrs
    ) as writer:
        writer.write(features)


def new_bags(folder: Path, n: int, seed: int) -> list[NewBag]:
    """`n` unlabelled bags; which are positive is returned, not written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bags = []
    for i in range(n):
        bag = NewBag(f"NEW-{i:03d}", bool(i % 2))
        write_planted_bag(folder, bag.slide_id, bag.positive, rng)
        bags.append(bag)
    return bags


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, thread hand-offs make small steps 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def kfold_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-fold abmil run on 30 labelled 64-d bags (features and labels beside it)."""
    root = tmp_path_factory.mktemp("predict_run")
    rng = np.random.default_rng(0)
    (root / "features").mkdir()
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["slide_id", "label"])
        for i in range(30):
            slide_id = f"TRAIN-{i:03d}"
            write_planted_bag(root / "features", slide_id, bool(i % 2), rng)
            writer.writerow([slide_id, CLASSES[i % 2]])
    cfg = TrainConfig(
        features=root / "features",
        labels=root / "labels.csv",
        model="abmil",
        model_overrides={"embed_dim": 32, "attention_dim": 16},
        epochs=4,
        lr=1e-3,
        warmup_epochs=0.5,
        folds=3,
        device="cpu",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_training(cfg, root / "run")
    finally:
        torch.set_num_threads(threads)
    return root / "run"


@pytest.fixture(scope="session")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[NewBag]]:
    folder = tmp_path_factory.mktemp("new_bags") / "bags"
    return folder, new_bags(folder, 16, seed=99)
