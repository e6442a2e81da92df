"""Matching labels to feature bags, checking the bags, and keeping them in memory across epochs.

Whole-bag training reads every bag every epoch; re-reading HDF5 each time would dominate an epoch on a GPU,
so bags are read once (fp16, half the bytes of fp32) into RAM or onto the training device. Every bag is read
once before training in every cache mode, so a bad bag (wrong width, NaN) fails the run at the start, not
in epoch 40.
"""

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from wsi_pipeline.errors import WsiError
from wsi_pipeline.progress import progress_bar
from wsi_pipeline.stores.feature_bag import bag_feature_dim, bags_in_folder, load_bag, model_features
from wsi_pipeline.stores.labels import LabelTable
from wsi_pipeline.train.config import CacheMode


def _listing(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class Cohort:
    """The labelled slides that have a bag, and what was left out."""

    table: LabelTable  # rows restricted to slides with a bag
    paths: dict[str, Path]
    n_missing: int  # labelled slides without a bag (only with allow_missing)
    n_unlabelled: int  # bags without a label, ignored
    in_dim: int  # feature width, the same in every bag


def match_bags(features_dir: Path, table: LabelTable, allow_missing: bool) -> Cohort:
    bags = bags_in_folder(features_dir)
    labelled = [row.slide_id for row in table.rows]
    missing = [s for s in labelled if s not in bags]
    if missing and not allow_missing:
        raise WsiError(
            f"{table.path}: {len(missing)} labelled slide(s) have no bag in {features_dir}: {_listing(missing)} "
            "(--allow-missing trains without them)"
        )
    rows = tuple(row for row in table.rows if row.slide_id in bags)
    if not rows:
        raise WsiError(f"{features_dir}: none of the {len(labelled)} labelled slides has a bag")
    paths = {row.slide_id: bags[row.slide_id] for row in rows}
    return Cohort(
        table=replace(table, rows=rows),
        paths=paths,
        n_missing=len(missing),
        n_unlabelled=len(set(bags) - set(labelled)),
        in_dim=common_feature_dim(paths),
    )


def common_feature_dim(paths: dict[str, Path]) -> int:
    """The width shared by all bags, from their headers only; bags of another width are named."""
    dims = {slide_id: bag_feature_dim(path) for slide_id, path in paths.items()}
    common, _ = Counter(dims.values()).most_common(1)[0]
    odd = [f"{paths[s]} ({d})" for s, d in dims.items() if d != common]
    if odd:
        folder = next(iter(paths.values())).parent
        raise WsiError(
            f"{folder}: feature widths differ: {len(odd)} bag(s) are not {common}-d like the rest: {_listing(odd)}"
        )
    return common


def read_bag_features(path: Path, slide_id: str | None = None) -> np.ndarray:
    """The (N, D) features of a bag through the one reader and precision policy eval and predict use
    (`stores.feature_bag.model_features`: float16, non-empty, finite, errors naming the slide)."""
    return model_features(load_bag(path).features, slide_id or path.stem, path)


class BagCache:
    """slide_id -> (N, D) float16 tensor on the training device; filled once by `load`.

    `memory` keeps bags in RAM and copies each to the device when it is used (on CPU that copy is free);
    `device` keeps them on the device (no copies; needs the cohort to fit in GPU memory); `none` re-reads.
    """

    def __init__(self, paths: dict[str, Path], mode: CacheMode, device: torch.device) -> None:
        self.paths = paths
        self.mode = mode
        self.device = device
        self.n_tiles: dict[str, int] = {}
        self._bags: dict[str, torch.Tensor] = {}

    @classmethod
    def of_tensors(cls, bags: dict[str, torch.Tensor], device: torch.device) -> "BagCache":
        """A memory cache over bags already in memory (benchmarks on published MIL sets, tests): no files."""
        cache = cls({slide_id: Path(slide_id) for slide_id in bags}, "memory", device)
        cache._bags = {s: bag.to(torch.float16) for s, bag in bags.items()}
        cache.n_tiles = {s: bag.shape[0] for s, bag in bags.items()}
        return cache

    def load(self, console: Console | None) -> None:
        """Read and check every bag; keep them unless `mode == "none"`."""
        with progress_bar(console, label="reading bags") as progress:
            task = progress.add_task("bags", total=len(self.paths))
            for slide_id, path in self.paths.items():
                features = read_bag_features(path, slide_id)
                self.n_tiles[slide_id] = features.shape[0]
                if self.mode != "none":
                    bag = torch.from_numpy(features)
                    self._bags[slide_id] = bag.to(self.device) if self.mode == "device" else bag
                progress.advance(task)

    def get(self, slide_id: str) -> torch.Tensor:
        if self.mode == "none":
            return torch.from_numpy(read_bag_features(self.paths[slide_id], slide_id)).to(self.device)
        return self._bags[slide_id].to(self.device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._bags.values())


# A feature whose std over the training tiles is below this is constant for the model: dividing by a
# smaller number would blow float16 rounding noise up into signal.
STD_FLOOR = 1e-6


@dataclass(frozen=True)
class TileStatistics:
    """What training learns from its tiles before the first step; all float32."""

    mean: torch.Tensor  # (D,) per-feature mean over every training tile
    std: torch.Tensor  # (D,) per-feature std, floored at STD_FLOOR
    class_means: torch.Tensor  # (n_classes, D) mean tile of each class; zeros for a class without tiles


class _Moments:
    """Count, mean and sum of squared deviations of the tiles seen, float64, merged with Chan's pairwise
    formula: features with a large offset and a tiny spread (random-init extractors) would lose their
    variance to cancellation in a sum-of-squares formula."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = torch.zeros(0, dtype=torch.float64)
        self.m2 = torch.zeros(0, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=0)
        self.merge(x.shape[0], mean, ((x - mean) ** 2).sum(dim=0))

    def merge(self, count: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        if count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * count / total)
        self.count = total


def tile_statistics(
    cache: BagCache, slide_ids: list[str], targets: dict[str, int], n_classes: int
) -> TileStatistics:
    """Per-feature mean and std over every tile of `slide_ids`, and each class's mean tile, in one pass that
    streams one bag at a time (with `cache: none` every bag is read from disk once)."""
    if not slide_ids:
        raise WsiError("feature standardisation needs at least one training bag")
    per_class = [_Moments() for _ in range(n_classes)]
    for slide_id in slide_ids:
        per_class[targets[slide_id]].add(cache.get(slide_id).to(device="cpu", dtype=torch.float64))
    total = _Moments()
    for moments in per_class:
        total.merge(moments.count, moments.mean, moments.m2)
    std = (total.m2 / total.count).sqrt().clamp_min(STD_FLOOR)
    class_means = [m.mean if m.count else torch.zeros_like(total.mean) for m in per_class]
    return TileStatistics(total.mean.float(), std.float(), torch.stack(class_means).float())
