"""`wsi eval` as a library call: a run folder + bags -> metrics, predictions, ROC plot, heatmaps.

Which fold model scores which slide is decided first (`assign`: never a model that trained or validated on
the slide or its patient); each slide's bag is then read once and shown to those folds (`scoring`), and the
outputs are written (`report`). The whole eval folder is built under a temporary name and swapped in at the
end, so a re-evaluation leaves no file of an earlier one behind, and a failed one leaves the earlier intact.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from wsi_pipeline.batch import SlideOutcome
from wsi_pipeline.config import read_yaml_mapping, write_resolved_config
from wsi_pipeline.devices import resolve_device, torch_threads
from wsi_pipeline.errors import WsiError
from wsi_pipeline.evaluate import report
from wsi_pipeline.evaluate.assign import Assignment, assign_slides
from wsi_pipeline.evaluate.baseline import baseline_comparison, baseline_probs
from wsi_pipeline.evaluate.config import EvalConfig
from wsi_pipeline.evaluate.scoring import FoldProbs, SlideScorer
from wsi_pipeline.evaluate.suspect import one_class_predictions
from wsi_pipeline.inference import faithfulness
from wsi_pipeline.inference.fold_models import load_fold_models, unfinished_training
from wsi_pipeline.inference.slide_heatmap import HEATMAP_DIR
from wsi_pipeline.progress import SLIDE, progress_bar
from wsi_pipeline.stores.atomic import TMP_MARKER, atomic_path, claimed_folder
from wsi_pipeline.stores.labels import LabelTable, read_label_table
from wsi_pipeline.stores.run_folder import CONFIG_FILE, RunInfo, fold_dir, read_run_info


@dataclass(frozen=True)
class EvalResult:
    out_dir: Path
    metrics: dict[str, Any]
    outcomes: list[SlideOutcome]

    def final_line(self) -> str:
        return report.final_line(self.metrics, self.out_dir)

    def report_lines(self) -> list[str]:
        """For the console before the final line: which models scored what, per-fold AUROC, notes."""
        return report.console_lines(self.metrics)


class NoSlideEvaluated(WsiError):
    """Every slide failed: the outcomes travel with the error, so the table of reasons is printed first."""

    def __init__(self, message: str, outcomes: list[SlideOutcome]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


def eval_dir(run_dir: Path, split: str, level: str = "slide") -> Path:
    """`eval/` for the test split; other splits and levels get their own folder so none replaces another."""
    name = "eval" if split == "test" else f"eval-{split}"
    return run_dir / (name if level == "slide" else f"{name}-patient")


def _trained_with_amp(run_dir: Path) -> bool:
    return bool(read_yaml_mapping(run_dir / CONFIG_FILE).get("amp", True))


def _warn_about_canvas(cfg: EvalConfig, console: Console | None) -> None:
    """Once per eval, not once per slide: without tile stores the maps have no thumbnail under them."""
    if console is None or not cfg.heatmaps:
        return
    if cfg.tiles is None:
        console.print(
            "warning: no --tiles: heatmaps are drawn over an outline of the tile grid, not the slide"
        )
    elif not Path(cfg.tiles).is_dir():
        console.print(
            f"warning: {cfg.tiles}: no such folder of tile stores; heatmaps are drawn over the tile grid"
        )


def _score_slides(
    scorer: SlideScorer, assignment: Assignment, probs: FoldProbs, console: Console | None
) -> list[SlideOutcome]:
    outcomes = []
    with progress_bar(console, SLIDE, label="evaluating") as progress:
        task = progress.add_task("slides", total=len(assignment.folds_of), slide="")
        for slide_id, folds in assignment.folds_of.items():
            progress.update(task, slide=slide_id)
            outcomes.append(scorer(slide_id, folds, assignment.source[slide_id], probs))
            progress.advance(task)
    return outcomes


def run_evaluation(cfg: EvalConfig, run_dir: Path, console: Console | None = None) -> EvalResult:
    info = read_run_info(run_dir)
    features = Path(cfg.features or info.features)
    labels = Path(cfg.labels or info.labels)
    if not features.is_dir():
        raise WsiError(f"{features}: no such folder of feature bags")
    table = read_label_table(labels, info.class_names)
    assignment = assign_slides(info, cfg.split, table, cfg.include_seen)
    device = resolve_device(cfg.device)
    models = {fm.fold: fm for fm in load_fold_models(info, device)}
    out_dir = Path(cfg.out) if cfg.out is not None else eval_dir(run_dir, cfg.split, cfg.level)
    resolved = cfg.model_copy(update={"features": features, "labels": labels, "out": out_dir})
    with torch_threads(cfg.threads), claimed_folder(out_dir), atomic_path(out_dir) as building:
        _remove_stale_builds(out_dir, building)
        building.mkdir()
        if cfg.heatmaps:
            (building / HEATMAP_DIR).mkdir()
        _warn_about_canvas(cfg, console)
        scorer = SlideScorer(cfg, models, table, features, building, device, _trained_with_amp(run_dir))
        probs: FoldProbs = {fold: {} for fold in models}
        outcomes = scorer.draw_deferred(_score_slides(scorer, assignment, probs, console))
        metrics = _outputs(
            cfg, info, table, building, assignment, probs, outcomes, scorer.deletion, scorer.mean_features
        )
        write_resolved_config(building / "config.yaml", resolved)
    return EvalResult(out_dir, metrics, outcomes)


def _outputs(
    cfg: EvalConfig,
    info: RunInfo,
    table: LabelTable,
    out_dir: Path,
    assignment: Assignment,
    probs: FoldProbs,
    outcomes: list[SlideOutcome],
    deletion: dict[str, faithfulness.DeletionTest],
    mean_features: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Metrics over the slides that were scored; every slide failing is one error (after the table)."""
    done = [s for s in assignment.folds_of if all(s in probs[f] for f in assignment.folds_of[s])]
    if not done:
        raise NoSlideEvaluated(
            f"no slide of split {cfg.split!r} could be evaluated (the table above gives each reason)",
            outcomes,
        )
    pooled = np.stack([np.mean([probs[f][s] for f in assignment.folds_of[s]], axis=0) for s in done])
    scored = report.scored(table, done, pooled)
    metrics = {
        "run": str(info.run_dir),
        **report.write_outputs(cfg, table, out_dir, assignment, scored, probs, info.folds),
        "heatmap_faithfulness": faithfulness.summary({s: t for s, t in deletion.items() if s in done}),
    }
    faithfulness.annotate_predictions(out_dir / "predictions.csv", deletion)
    warnings = unfinished_training(info) + one_class_predictions(pooled.argmax(axis=1), table.class_names)
    warnings += _compare_with_baseline(cfg, info, table, assignment, done, metrics, mean_features)
    if warnings:
        metrics["warnings"] = warnings
    report.write_metrics(out_dir, metrics)
    return metrics


def _compare_with_baseline(
    cfg: EvalConfig,
    info: RunInfo,
    table: LabelTable,
    assignment: Assignment,
    done: list[str],
    metrics: dict[str, Any],
    mean_features: dict[str, np.ndarray],
) -> list[str]:
    """metrics["baseline"]: the mean-pooled logistic regression `wsi train` fitted per fold, scored on the
    same slides with the same folds and bootstrap; a warning when the model falls below its interval."""
    fold_dirs = {fold: fold_dir(info.run_dir, fold, info.folds) for fold in range(info.folds)}
    probs = baseline_probs(fold_dirs, assignment.folds_of, done, mean_features)
    if probs is None:
        return []
    base = report.level_metrics(cfg, table, report.scored(table, done, probs))
    metrics["baseline"], warning = baseline_comparison(metrics, base)
    return [warning] if warning else []


def _remove_stale_builds(out_dir: Path, building: Path) -> None:
    """Temporaries of this output left by killed evals (the claim guarantees none is still being built)."""
    for path in out_dir.parent.glob(f".{out_dir.name}{TMP_MARKER}*"):
        if path != building and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
