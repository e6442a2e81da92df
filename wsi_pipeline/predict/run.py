"""`wsi predict` as a library call: a trained run + new bags (or slides) -> predictions and heatmaps.

No labels anywhere. A run of k folds predicts with all k fold models (mean of their probabilities) unless
`fold` picks one; its heatmap shows the mean of the folds' tile scores for the ensemble's predicted class.
Every bag is checked against the run's extractor identity first (`compat`). One bag in memory at a time
and one fold's graph at a time, so memory follows the model and the largest bag, not the cohort. A slide
that fails (refused, damaged, no tiles) is reported and the others go on.
"""

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console

from wsi_pipeline.batch import SlideOutcome
from wsi_pipeline.config import write_resolved_config
from wsi_pipeline.devices import resolve_device, torch_threads
from wsi_pipeline.errors import WsiError
from wsi_pipeline.inference import faithfulness
from wsi_pipeline.inference.ensemble import ensemble_tile_scores, fold_probabilities
from wsi_pipeline.inference.faithfulness import DeletionTest, deletion_test
from wsi_pipeline.inference.fold_models import FoldModel, load_fold_models, unfinished_training
from wsi_pipeline.inference.slide_heatmap import (
    HEATMAP_DIR,
    CohortScaleMaps,
    MapSettings,
    bag_with_level0_coords,
)
from wsi_pipeline.models.chunked import supports_chunking
from wsi_pipeline.models.ensemble import members_of
from wsi_pipeline.predict.compat import CHECK_OK, check_bag, run_identity
from wsi_pipeline.predict.config import PredictConfig
from wsi_pipeline.predict.outputs import (
    PATIENT_POOLING,
    SlidePrediction,
    fold_probabilities_csv,
    patient_of,
    patients_csv,
    predictions_csv,
    read_patients,
)
from wsi_pipeline.predict.slides import features_from_slides
from wsi_pipeline.progress import SLIDE, progress_bar
from wsi_pipeline.stores.atomic import claimed_folder, clean_stale_temporaries, write_text_atomic
from wsi_pipeline.stores.feature_bag import Bag, bags_in_folder, load_bag, model_features
from wsi_pipeline.stores.run_folder import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ExtractorIdentity,
    RunInfo,
    fold_dir,
    read_run_info,
)
from wsi_pipeline.stores.yaml_file import read_yaml_mapping

SUMMARY_COLUMNS = ["tiles", "predicted", "p"]
PREDICT_CHUNK_TOKENS = 32_768


@dataclass(frozen=True)
class PredictResult:
    out_dir: Path
    predictions: list[SlidePrediction]
    outcomes: list[SlideOutcome]
    folds: tuple[int, ...]

    def final_line(self) -> str:
        used = f"ensemble of {len(self.folds)} folds" if len(self.folds) > 1 else f"fold {self.folds[0]}"
        return f"{len(self.predictions)} slides predicted ({used}); outputs in {self.out_dir}"


def checked_run(run_dir: Path, fold: int | None) -> tuple[RunInfo, list[int]]:
    """The run and the folds to use; a missing or unfinished run or a fold it lacks is one line."""
    if not run_dir.is_dir():
        raise WsiError(f"{run_dir}: no such run folder; train one with `wsi train`")
    info = read_run_info(run_dir)
    if fold is not None and fold >= info.folds:
        raise WsiError(
            f"--fold {fold}: the run {run_dir} has {info.folds} fold(s), numbered 0..{info.folds - 1}"
        )
    folds = list(range(info.folds)) if fold is None else [fold]
    for f in folds:
        path = fold_dir(run_dir, f, info.folds) / CHECKPOINT_FILE
        if not path.is_file():
            raise WsiError(
                f"{run_dir}: unfinished run, no {path.relative_to(run_dir)}; finish it with `wsi train --resume`"
            )
    return info, folds


def list_bags(features: Path) -> dict[str, Path]:
    """slide_id -> bag in `features` (an `.h5` wins over a CLAM `.pt` of the same name); none is an error."""
    bags = bags_in_folder(features)
    if not bags:
        raise WsiError(f"{features}: no feature bags (<slide_id>.h5 or .pt) in this folder")
    return bags


def bound_memory(models: list[FoldModel]) -> None:
    """Inference only: frozen weights (autograd then keeps no layer inputs for weight gradients), and
    `vit_sf` logits computed chunk by chunk (wsi_pipeline/models/chunked.py), so a bag of 10^5-10^6 tiles
    costs the bag plus a few hidden states."""
    for fm in models:
        fm.model.requires_grad_(False)
        for model in members_of(fm.model):
            if hasattr(model, "use_chunks") and supports_chunking(model):
                model.use_chunks(PREDICT_CHUNK_TOKENS)


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise WsiError(f"{out_dir}: exists and is a file, not a folder; choose another --out")


class _SlidePredictor:
    """One slide at a time: the bag, its compatibility check, the fold probabilities, the heatmap."""

    def __init__(
        self,
        cfg: PredictConfig,
        models: list[FoldModel],
        classes: tuple[str, ...],
        identity: ExtractorIdentity | None,
        patients: dict[str, str],
        out_dir: Path,
        device: torch.device,
        tiles: Path | None,
        amp: bool,
    ) -> None:
        self.cfg, self.models, self.classes, self.identity = cfg, models, classes, identity
        self.patients, self.out_dir, self.device = patients, out_dir, device
        self.amp = amp
        self.deletion: dict[str, DeletionTest] = {}  # per slide with a heatmap: does the map explain it?
        self.settings = MapSettings.of(cfg, tiles)
        # With one colour scale over the slides (`heatmap_scale: global`) maps are drawn once all are scored.
        self.cohort_maps = CohortScaleMaps(out_dir / HEATMAP_DIR, cfg.heatmap_scale)

    def __call__(
        self, slide_id: str, path: Path, n_run_folds: int
    ) -> tuple[SlideOutcome, SlidePrediction | None]:
        start = time.perf_counter()
        try:
            bag, x, pred = self._predict(slide_id, path)
        except WsiError as exc:
            return SlideOutcome(
                slide_id, "failed", " ".join(str(exc).split()), time.perf_counter() - start
            ), None
        target = int(pred.probs.argmax())
        fields: dict[str, object] = {
            "tiles": bag.n_tiles,
            "predicted": self.classes[target],
            "p": float(pred.probs[target]),
        }
        reason = "" if pred.extractor_check == CHECK_OK else pred.extractor_check
        if self.cfg.heatmaps:
            try:
                note = self._heatmap(slide_id, path, bag, x, pred, n_run_folds)
            except WsiError as exc:
                reason = f"heatmap: {' '.join(str(exc).split())}"
                return SlideOutcome(slide_id, "failed", reason, time.perf_counter() - start, fields), pred
            reason = "; ".join(r for r in (reason, note) if r)
        return SlideOutcome(slide_id, "done", reason, time.perf_counter() - start, fields), pred

    def _predict(self, slide_id: str, path: Path) -> tuple[Bag, torch.Tensor, SlidePrediction]:
        """The bag, checked against the run's extractor, as the models' input, and each fold's probabilities
        under the autocast the run was validated with."""
        bag = load_bag(path)
        check = check_bag(
            path,
            slide_id,
            bag.meta,
            bag.feature_dim,
            self.models[0].in_dim,
            self.identity,
            self.cfg.allow_extractor_mismatch,
        )
        x = torch.from_numpy(model_features(bag.features, slide_id, path)).to(self.device).unsqueeze(0)
        probs = fold_probabilities(self.models, x, self.amp)
        folds = tuple(fm.fold for fm in self.models)
        patient = patient_of(slide_id, self.patients)
        return bag, x, SlidePrediction(slide_id, patient, probs, folds, bag.n_tiles, check)

    def _heatmap(
        self, slide_id: str, path: Path, bag: Bag, x: torch.Tensor, pred: SlidePrediction, n_run_folds: int
    ) -> str:
        """The ensemble's map: the folds' mean tile scores for the ensemble's predicted class."""
        located, problem = bag_with_level0_coords(bag, path, slide_id, self.settings)
        if located is None:
            return f"no heatmap: {problem}"
        target = int(pred.probs.argmax())
        method, bounded = self._method(bag.n_tiles)
        scores = ensemble_tile_scores(self.models, x, method, target)
        self.deletion[slide_id] = deletion_test(
            lambda bag_x: torch.as_tensor(fold_probabilities(self.models, bag_x, self.amp).mean(axis=0)),
            x,
            torch.as_tensor(scores),
            whole=torch.as_tensor(pred.probs),
        )
        title = f"{self._title(slide_id, pred, target, n_run_folds)}\n{faithfulness.caption(self.deletion[slide_id])}"
        note = self.cohort_maps.write_or_hold(
            slide_id, located, self.models[0], title, scores,
            explained_class=self.classes[target], settings=replace(self.settings, score_method=method),
        )  # fmt: skip
        return "; ".join(r for r in (bounded, note) if r)

    def _method(self, n_tiles: int) -> tuple[str, str]:
        """The score method for a bag of `n_tiles`, and a note when the bag is too large for the asked one:
        gradient methods keep an autograd graph of the whole bag (benchmarks/RESULTS.md, "Predict"),
        attention needs none."""
        method = self.cfg.score_method or self.models[0].model.default_score_method
        if n_tiles <= self.cfg.graph_max_tiles or method == "attention":
            return method, ""
        return "attention", f"heatmap: attention scores ({method} on {n_tiles} tiles > graph_max_tiles)"

    def _title(self, slide_id: str, pred: SlidePrediction, target: int, n_run_folds: int) -> str:
        head = f"{slide_id}: predicted {self.classes[target]} (p={float(pred.probs[target]):.2f})"
        cls = self.classes[target]
        if len(self.models) > 1:
            return f"{head}, ensemble of {len(self.models)} folds; map: their mean tile scores for {cls}"
        return f"{head}, fold {self.models[0].fold} of {n_run_folds}" if n_run_folds > 1 else head


def run_prediction(
    cfg: PredictConfig, run_dir: Path, out_dir: Path, console: Console | None = None, debug: bool = False
) -> PredictResult:
    """Predict every bag of `cfg.features` (or every slide of `cfg.slides`) with the run; write OUT."""
    check_out_dir(out_dir)
    info, folds = checked_run(run_dir, cfg.fold)
    identity, identity_note = run_identity(info)
    if identity_note and console is not None:
        console.print(f"[yellow]note:[/] {identity_note}")
    unfinished = unfinished_training(info, folds)
    for line in unfinished if console is not None else []:
        console.print(f"[yellow]warning:[/] {line}")
    if cfg.slides and identity is None:
        raise WsiError(f"{run_dir}: records no extractor identity, so --slides cannot know how to extract")
    patients = read_patients(cfg.patients) if cfg.patients is not None else {}
    bags = list_bags(cfg.features) if cfg.features is not None else {}
    device = resolve_device(cfg.device)
    models = load_fold_models(info, device, folds)
    bound_memory(models)
    with torch_threads(cfg.threads), claimed_folder(out_dir):
        failed: list[SlideOutcome] = []
        tiles, features = cfg.tiles, cfg.features
        if cfg.slides and identity is not None:  # None with slides was refused above
            made = features_from_slides(cfg, identity, out_dir, console or Console(stderr=True), debug)
            tiles, features, failed = tiles or made.tiles, made.features, made.failed
            bags = {s: made.features / f"{s}.h5" for s in made.slide_ids}
        if cfg.heatmaps:
            (out_dir / HEATMAP_DIR).mkdir(exist_ok=True)
            clean_stale_temporaries(out_dir / HEATMAP_DIR)
        amp = bool(read_yaml_mapping(run_dir / CONFIG_FILE).get("amp", True))
        predict = _SlidePredictor(
            cfg, models, info.class_names, identity, patients, out_dir, device, tiles, amp
        )
        outcomes, preds = _predict_all(predict, bags, info.folds, console)
        outcomes = predict.cohort_maps.draw(outcomes, lambda exc: " ".join(str(exc).split()))
        _write_outputs(
            cfg, info, out_dir, features, folds, preds, failed + outcomes, identity_note, predict.deletion,
            unfinished,
        )  # fmt: skip
        return PredictResult(out_dir, preds, failed + outcomes, tuple(folds))


def _predict_all(
    predict: _SlidePredictor, bags: dict[str, Path], n_run_folds: int, console: Console | None
) -> tuple[list[SlideOutcome], list[SlidePrediction]]:
    outcomes, preds = [], []
    with progress_bar(console, SLIDE, label="predicting") as progress:
        task = progress.add_task("slides", total=len(bags), slide="")
        for slide_id, path in bags.items():
            progress.update(task, slide=slide_id)
            outcome, pred = predict(slide_id, path, n_run_folds)
            outcomes.append(outcome)
            if outcome.status == "failed" and console is not None:  # one line as it happens
                named = outcome.reason if slide_id in outcome.reason else f"{slide_id}: {outcome.reason}"
                console.print(f"error: {named}", style="red", soft_wrap=True, markup=False, highlight=False)
            if pred is not None:
                preds.append(pred)
            progress.advance(task)
    return outcomes, preds


def _write_outputs(
    cfg: PredictConfig,
    info: RunInfo,
    out_dir: Path,
    features: Path | None,
    folds: list[int],
    preds: list[SlidePrediction],
    outcomes: list[SlideOutcome],
    identity_note: str,
    deletion: dict[str, DeletionTest],
    warnings: list[str],
) -> None:
    classes = info.class_names
    write_text_atomic(out_dir / "predictions.csv", predictions_csv(preds, classes))
    faithfulness.annotate_predictions(out_dir / "predictions.csv", deletion)
    write_text_atomic(out_dir / "fold_probabilities.csv", fold_probabilities_csv(preds, classes))
    if cfg.patient_level:
        write_text_atomic(out_dir / "patients.csv", patients_csv(preds, classes))
    write_resolved_config(out_dir / "predict_config.yaml", cfg.model_copy(update={"features": features}))
    summary = {
        "run": str(info.run_dir),
        "classes": list(classes),
        "folds": folds,
        "pooling": "mean probability over the folds' models" if len(folds) > 1 else "one model",
        "heatmap_scores": "mean of the folds' tile scores for the ensemble's predicted class"
        if len(folds) > 1
        else "the model's tile scores for its predicted class",
        "patient_pooling": PATIENT_POOLING if cfg.patient_level else None,
        "allow_extractor_mismatch": cfg.allow_extractor_mismatch,
        "extractor_identity_note": identity_note or None,
        "n_predicted": len(preds),
        "failed": {o.slide_id: o.reason for o in outcomes if o.status == "failed"},
        "heatmap_faithfulness": faithfulness.summary(deletion),
        "warnings": warnings,
    }
    write_text_atomic(out_dir / "predict_summary.json", json.dumps(summary, indent=2) + "\n")
