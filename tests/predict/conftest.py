"""A 3-fold run on synthetic bags with a planted signal, and new unlabelled bags from the same generator.

Bags carry the attributes `wsi extract` writes (extractor, weights fingerprint, tile geometry), so the
extractor-identity checks have something to compare. The planted truth of the new bags is kept here and
never written next to them: `wsi predict` sees no labels.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.bags import MPP_LEVEL0, TILE_PX_LEVEL0, grid_coords, planted_blob, signal_direction
from tests.threads import one_torch_thread, single_thread  # noqa: F401 (autouse: one torch thread)
from tests.train.helpers import write_table
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


def planted_run(
    root: Path,
    n_bags: int,
    epochs: int,
    folds: int = 1,
    embed_dim: int = 32,
    dim: int = DIM,
    **bag_changes: object,
) -> Path:
    """An abmil run trained on `n_bags` labelled planted `dim`-d bags written into `root` (features and labels
    beside the run); `bag_changes` go into every bag's attributes (`write_planted_bag`)."""
    rng = np.random.default_rng(0)
    (root / "features").mkdir()
    rows = []
    for i in range(n_bags):
        slide_id = f"TRAIN-{i:03d}"
        write_planted_bag(root / "features", slide_id, bool(i % 2), rng, dim, **bag_changes)
        rows.append([slide_id, CLASSES[i % 2]])
    write_table(root / "labels.csv", ["slide_id", "label"], rows)
    cfg = TrainConfig(
        features=root / "features",
        labels=root / "labels.csv",
        model="abmil",
        members=1,  # one model per fold here; a run with members is predicted in tests/train/test_members.py
        model_overrides={"embed_dim": embed_dim, "attention_dim": embed_dim // 2},
        epochs=epochs,
        lr=1e-3,
        warmup_epochs=0.5,
        folds=folds,
        device="cpu",
    )
    with single_thread():
        run_training(cfg, root / "run")
    return root / "run"


@pytest.fixture(scope="session")
def kfold_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-fold abmil run on 30 labelled 64-d bags (features and labels beside it)."""
    return planted_run(tmp_path_factory.mktemp("predict_run"), 30, epochs=4, folds=3)


@pytest.fixture(scope="session")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[NewBag]]:
    folder = tmp_path_factory.mktemp("new_bags") / "bags"
    return folder, new_bags(folder, 16, seed=99)
