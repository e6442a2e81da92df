"""Scoring one slide at a time: its bag read through the one numeric path, each assigned fold's
probabilities, and its heatmap.

Whatever goes wrong with one slide (no bag, a damaged bag, NaN features, an out-of-memory error on a huge
bag, an unreadable thumbnail) ends that slide as `failed` with one line in the table; the others go on.
"""

import time
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.batch import SlideOutcome
from wsi_pipeline.errors import WsiError
from wsi_pipeline.evaluate.config import EvalConfig
from wsi_pipeline.inference import faithfulness
from wsi_pipeline.inference.ensemble import ensemble_tile_scores, fold_probabilities
from wsi_pipeline.inference.faithfulness import DeletionTest, deletion_test
from wsi_pipeline.inference.fold_models import FoldModel
from wsi_pipeline.inference.slide_heatmap import (
    HEATMAP_DIR,
    CohortScaleMaps,
    MapSettings,
    bag_with_level0_coords,
)
from wsi_pipeline.stores.baseline import mean_pool
from wsi_pipeline.stores.feature_bag import Bag, find_bag, load_bag, model_features
from wsi_pipeline.stores.labels import LabelTable

# Probabilities per fold: fold -> slide_id -> (n_classes,) float array.
FoldProbs = dict[int, dict[str, np.ndarray]]


def failure_line(exc: BaseException, n_tiles: int | None) -> str:
    """One line for the table: our own errors as they are, memory errors with what to try, others by type."""
    if isinstance(exc, WsiError):
        return " ".join(str(exc).split())
    text = " ".join(str(exc).split())[:240]
    lowered = text.lower()
    if (
        isinstance(exc, MemoryError | torch.OutOfMemoryError)
        or "out of memory" in lowered
        or ("can't allocate" in lowered)
    ):
        tiles = f" on its {n_tiles} tiles" if n_tiles else ""
        return f"out of memory{tiles} ({type(exc).__name__}); try --device cpu or a machine with more memory"
    return f"{type(exc).__name__}: {text}"


def who_scored(source: str, folds: list[int], n_folds: int) -> str:
    """The model behind a prediction, as the heatmap title and predictions.csv state it."""
    if source == "ensemble":
        return f"ensemble of {len(folds)} folds"
    if n_folds == 1:
        return "the run's model" + (" (SEEN in training/validation)" if source == "seen" else "")
    names = ", ".join(str(f) for f in folds)
    label = "fold" if len(folds) == 1 else "mean of folds"
    return f"{label} {names}" + (" (SEEN in training/validation)" if source == "seen" else " (held out)")


class SlideScorer:
    """Predictions and heatmap files for one slide at a time (one bag in memory)."""

    def __init__(
        self,
        cfg: EvalConfig,
        models: dict[int, FoldModel],
        table: LabelTable,
        features: Path,
        out_dir: Path,
        device: torch.device,
        amp: bool,
    ) -> None:
        self.cfg, self.models, self.table, self.features = cfg, models, table, features
        self.out_dir, self.device, self.amp = out_dir, device, amp
        self.labels = table.by_slide()
        self.mean_features: dict[str, np.ndarray] = {}  # slide -> mean tile feature, for baseline.py
        self.deletion: dict[str, DeletionTest] = {}  # per slide with a heatmap: does the map explain it?
        # With one colour scale over the cohort (`heatmap_scale: global`) maps are drawn once all are scored.
        self.cohort_maps = CohortScaleMaps(out_dir / HEATMAP_DIR, cfg.heatmap_scale)
        self.heatmap_settings = MapSettings.of(cfg, cfg.tiles)

    def __call__(self, slide_id: str, folds: list[int], source: str, probs: FoldProbs) -> SlideOutcome:
        start = time.perf_counter()
        path = find_bag(self.features, slide_id)
        if path is None:
            return SlideOutcome(slide_id, "failed", f"no bag in {self.features}")
        bag = None
        try:
            bag = load_bag(path)
            x = self._tensor(bag, slide_id, path)
            self.mean_features[slide_id] = mean_pool(bag.features)
            scored = {fold: self._probabilities(self.models[fold], x, path) for fold in folds}
        except Exception as exc:  # one slide's failure, whatever it is, must not stop the batch
            self._release()
            n_tiles = bag.n_tiles if bag is not None else None
            return SlideOutcome(slide_id, "failed", failure_line(exc, n_tiles), time.perf_counter() - start)
        for fold, p in scored.items():
            probs[fold][slide_id] = p
        mean = np.mean(list(scored.values()), axis=0)
        fields: dict[str, object] = {
            "tiles": bag.n_tiles,
            "label": self.labels[slide_id].label,
            "predicted": self.table.class_names[int(mean.argmax())],
            "scored by": who_scored(source, folds, len(self.models)),
        }
        if not self.cfg.heatmaps:
            return SlideOutcome(slide_id, "done", "", time.perf_counter() - start, fields)
        try:
            note = self._heatmap(slide_id, path, bag, x, folds, mean, str(fields["scored by"]))
        except Exception as exc:
            self._release()
            reason = f"heatmap: {failure_line(exc, bag.n_tiles)}"
            return SlideOutcome(slide_id, "failed", reason, time.perf_counter() - start, fields)
        return SlideOutcome(slide_id, "done", note, time.perf_counter() - start, fields)

    def _tensor(self, bag: Bag, slide_id: str, path: Path) -> torch.Tensor:
        features = model_features(bag.features, slide_id, path)
        return torch.from_numpy(features).to(self.device).unsqueeze(0)

    def _probabilities(self, fm: FoldModel, x: torch.Tensor, path: Path) -> np.ndarray:
        """Softmax probabilities under the autocast of validation (`compute_autocast`)."""
        if x.shape[-1] != fm.in_dim:
            raise WsiError(f"{path}: {x.shape[-1]}-d features, the model takes {fm.in_dim}-d")
        return fold_probabilities([fm], x, self.amp)[0]

    def _heatmap(
        self,
        slide_id: str,
        path: Path,
        bag: Bag,
        x: torch.Tensor,
        folds: list[int],
        mean: np.ndarray,
        who: str,
    ) -> str:
        """The map of the model and class the title names: the scoring folds' mean tile scores for the
        predicted class (one fold's own scores when one fold scored the slide)."""
        bag, problem = bag_with_level0_coords(bag, path, slide_id, self.heatmap_settings)
        if bag is None:
            return f"no heatmap: {problem}"
        target = int(mean.argmax())
        predicted = self.table.class_names[target]
        models = [self.models[f] for f in folds]
        scores = ensemble_tile_scores(models, x, self.cfg.score_method, target)
        self.deletion[slide_id] = deletion_test(
            lambda bag_x: torch.as_tensor(np.mean([self._probabilities(m, bag_x, path) for m in models], 0)),
            x,
            torch.as_tensor(scores),
            whole=torch.as_tensor(mean),
        )
        test = self.deletion[slide_id]
        title = (
            f"{slide_id}: predicted {predicted} (p={float(mean[target]):.2f}), "
            f"true {self.labels[slide_id].label}; map of {who} for {predicted}\n{faithfulness.caption(test)}"
        )
        return self.cohort_maps.write_or_hold(
            slide_id, bag, models[0], title, scores, explained_class=predicted, settings=self.heatmap_settings
        )

    def draw_deferred(self, outcomes: list[SlideOutcome]) -> list[SlideOutcome]:
        """Draw the maps held back for one colour scale over all of them; a slide whose map fails is failed."""
        return self.cohort_maps.draw(outcomes, lambda exc: failure_line(exc, None))

    def _release(self) -> None:
        """After an out-of-memory error on the GPU, hand the cached blocks back before the next slide."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
