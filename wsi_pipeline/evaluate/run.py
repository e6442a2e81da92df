"""`wsi eval` as a library call: a run folder + bags -> metrics, predictions, ROC plot, heatmaps.

Each slide's bag is read once and shown to every fold model that evaluates it: with `--split test` that
is the one fold that held it out; with `--split all` (an external cohort) every fold, and the pooled
prediction is the mean of the folds' probabilities. Heatmaps use the first of those folds' models. A slide
that fails (no bag, damaged bag, unreadable thumbnail) is reported and the others go on.
"""

import csv
import io
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from wsi_pipeline.batch import SlideOutcome
from wsi_pipeline.config import write_resolved_config
from wsi_pipeline.devices import resolve_device
from wsi_pipeline.errors import WsiError
from wsi_pipeline.evaluate.config import EvalConfig
from wsi_pipeline.evaluate.metrics import classification_metrics, fold_summary
from wsi_pipeline.evaluate.plots import save_roc_png
from wsi_pipeline.inference.fold_models import FoldModel, load_fold_models
from wsi_pipeline.inference.slide_heatmap import HEATMAP_DIR, HeatmapSettings, write_slide_heatmap
from wsi_pipeline.stores.atomic import claimed_folder, clean_stale_temporaries, write_text_atomic
from wsi_pipeline.stores.labels import LabelTable, read_label_table
from wsi_pipeline.stores.run_folder import SPLITS_FILE, RunInfo, read_run_info, read_splits


@dataclass(frozen=True)
class EvalResult:
    out_dir: Path
    metrics: dict[str, Any]
    outcomes: list[SlideOutcome]

    def final_line(self) -> str:
        value, ci = self.metrics.get("auroc"), self.metrics.get("auroc_ci")
        shown = "undefined" if value is None else f"{value:.4f}"
        interval = f" [{ci['low']:.4f}, {ci['high']:.4f}]" if ci else ""
        return f"{self.metrics['split']} AUROC {shown}{interval} (n={self.metrics['n_slides']}); outputs in {self.out_dir}"


def eval_dir(run_dir: Path, split: str) -> Path:
    """`eval/` for the test split (DESIGN §3); other splits get their own folder so none replaces another."""
    return run_dir / ("eval" if split == "test" else f"eval-{split}")


def slides_by_fold(info: RunInfo, split: str, table: LabelTable) -> dict[str, list[int]]:
    """slide_id -> the folds whose model evaluates it."""
    if split == "all":
        return {row.slide_id: list(range(info.folds)) for row in sorted(table.rows, key=lambda r: r.slide_id)}
    folds_of: dict[str, list[int]] = defaultdict(list)
    for row in read_splits(info.run_dir / SPLITS_FILE):
        if row.split == split:
            folds_of[row.slide_id].append(row.fold)
    if not folds_of:
        raise WsiError(f"{info.run_dir / SPLITS_FILE}: no slides in split {split!r}")
    labelled = table.by_slide()
    unlabelled = sorted(s for s in folds_of if s not in labelled)
    if unlabelled:
        raise WsiError(
            f"{table.path}: {len(unlabelled)} slide(s) of split {split!r} have no label: {', '.join(unlabelled[:8])}"
        )
    return dict(sorted(folds_of.items()))


def _bag_path(features: Path, slide_id: str) -> Path | None:
    for suffix in (".h5", ".pt"):
        path = features / f"{slide_id}{suffix}"
        if path.is_file():
            return path
    return None


def _predictions_csv(slide_ids: list[str], table: LabelTable, probs: np.ndarray) -> str:
    rows = table.by_slide()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["slide_id", "patient_id", "label", *(f"prob_{c}" for c in table.class_names), "predicted"]
    )
    for slide_id, p in zip(slide_ids, probs, strict=True):
        row = rows[slide_id]
        writer.writerow(
            [
                slide_id,
                row.patient_id,
                row.label,
                *(f"{v:.6f}" for v in p),
                table.class_names[int(p.argmax())],
            ]
        )
    return buffer.getvalue()


class _SlideEvaluator:
    """Predictions and heatmap files for one slide at a time (one bag in memory)."""

    def __init__(
        self,
        cfg: EvalConfig,
        models: dict[int, FoldModel],
        table: LabelTable,
        features: Path,
        out_dir: Path,
        device: torch.device,
    ) -> None:
        self.cfg, self.models, self.table, self.features = cfg, models, table, features
        self.out_dir, self.device = out_dir, device
        self.labels = table.by_slide()
        self.heatmap_settings = HeatmapSettings(
            cfg.tiles, cfg.slides_root, cfg.top_k, cfg.score_method, cfg.canvas_max_px, cfg.overlay_alpha
        )

    def __call__(
        self, slide_id: str, folds: list[int], probs: dict[int, dict[str, np.ndarray]]
    ) -> SlideOutcome:
        start = time.perf_counter()
        path = _bag_path(self.features, slide_id)
        if path is None:
            return SlideOutcome(slide_id, "failed", f"no bag in {self.features}")
        try:
            from wsi_pipeline.stores.feature_bag import load_bag

            bag = load_bag(path)
            if bag.n_tiles == 0:
                raise WsiError(f"{path}: bag has no tiles (no tissue found when tiling)")
            x = torch.from_numpy(bag.features).to(self.device).unsqueeze(0)
            for fold in folds:
                fm = self.models[fold]
                if bag.feature_dim != fm.in_dim:
                    raise WsiError(f"{path}: {bag.feature_dim}-d features, the model takes {fm.in_dim}-d")
                with torch.no_grad():
                    probs[fold][slide_id] = torch.softmax(fm.model(x).float(), dim=-1)[0].cpu().numpy()
        except WsiError as exc:
            return SlideOutcome(slide_id, "failed", str(exc), time.perf_counter() - start)
        mean = np.mean([probs[f][slide_id] for f in folds], axis=0)
        predicted = self.table.class_names[int(mean.argmax())]
        fields: dict[str, object] = {
            "tiles": bag.n_tiles,
            "label": self.labels[slide_id].label,
            "predicted": predicted,
        }
        reason = ""
        if self.cfg.heatmaps:
            try:
                fm = self.models[folds[0]]
                fold = f", fold {fm.fold}" if len(self.models) > 1 else ""
                title = (
                    f"{slide_id}: predicted {predicted} (p={float(mean.max()):.2f}), "
                    f"true {self.labels[slide_id].label}{fold}"
                )
                reason = write_slide_heatmap(
                    self.out_dir / HEATMAP_DIR, slide_id, bag, x, fm, title, self.heatmap_settings
                )
            except WsiError as exc:
                return SlideOutcome(
                    slide_id, "failed", f"heatmap: {exc}", time.perf_counter() - start, fields
                )
        return SlideOutcome(slide_id, "done", reason, time.perf_counter() - start, fields)


def run_evaluation(cfg: EvalConfig, run_dir: Path, console: Console | None = None) -> EvalResult:
    info = read_run_info(run_dir)
    features = Path(cfg.features or info.features)
    labels = Path(cfg.labels or info.labels)
    if not features.is_dir():
        raise WsiError(f"{features}: no such folder of feature bags")
    table = read_label_table(labels, info.class_names)
    folds_of = slides_by_fold(info, cfg.split, table)
    device = resolve_device(cfg.device)
    models = {fm.fold: fm for fm in load_fold_models(info, device)}
    out_dir = eval_dir(run_dir, cfg.split)
    with claimed_folder(out_dir):
        if cfg.heatmaps:
            (out_dir / HEATMAP_DIR).mkdir(exist_ok=True)
            clean_stale_temporaries(out_dir / HEATMAP_DIR)

        evaluate = _SlideEvaluator(cfg, models, table, features, out_dir, device)
        probs: dict[int, dict[str, np.ndarray]] = {fold: {} for fold in models}
        outcomes = []
        with Progress(
            TextColumn("evaluating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[slide]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=console is None,
        ) as progress:
            task = progress.add_task("slides", total=len(folds_of), slide="")
            for slide_id, folds in folds_of.items():
                progress.update(task, slide=slide_id)
                outcomes.append(evaluate(slide_id, folds, probs))
                progress.advance(task)

        predicted = [s for s in folds_of if any(s in probs[f] for f in folds_of[s])]
        if not predicted:
            raise WsiError(f"no slide of split {cfg.split!r} could be evaluated (see the table above)")
        metrics = _write_outputs(cfg, info, table, out_dir, predicted, folds_of, probs)
        write_resolved_config(
            out_dir / "config.yaml", cfg.model_copy(update={"features": features, "labels": labels})
        )
        return EvalResult(out_dir, metrics, outcomes)


def _write_outputs(
    cfg: EvalConfig,
    info: RunInfo,
    table: LabelTable,
    out_dir: Path,
    slides: list[str],
    folds_of: dict[str, list[int]],
    probs: dict[int, dict[str, np.ndarray]],
) -> dict[str, Any]:
    labels = table.by_slide()

    def targets_of(ids: list[str]) -> np.ndarray:
        return np.array([table.class_index(labels[s].label) for s in ids], dtype=np.int64)

    def metrics_of(ids: list[str], p: np.ndarray) -> dict[str, Any]:
        return classification_metrics(
            targets_of(ids),
            p,
            table.class_names,
            n_bootstrap=cfg.n_bootstrap,
            ci_level=cfg.ci_level,
            seed=cfg.seed,
        )

    pooled = np.stack([np.mean([probs[f][s] for f in folds_of[s] if s in probs[f]], axis=0) for s in slides])
    metrics: dict[str, Any] = {
        "split": cfg.split,
        "run": str(info.run_dir),
        "classes": list(table.class_names),
        **metrics_of(slides, pooled),
    }
    per_fold_curves = []
    if info.folds > 1:
        metrics["pooling"] = "mean probability over the folds that evaluated each slide"
        per_fold = []
        for fold in range(info.folds):
            ids = [s for s in slides if s in probs[fold]]
            if not ids:
                continue
            fold_probs = np.stack([probs[fold][s] for s in ids])
            fold_metrics = {"fold": fold, **metrics_of(ids, fold_probs)}
            per_fold.append(fold_metrics)
            per_fold_curves.append((targets_of(ids), fold_probs, fold_metrics))
            write_text_atomic(
                out_dir / f"fold_{fold}" / "predictions.csv", _predictions_csv(ids, table, fold_probs)
            )
        metrics["per_fold"] = per_fold
        metrics["fold_summary"] = fold_summary(per_fold)
    write_text_atomic(out_dir / "predictions.csv", _predictions_csv(slides, table, pooled))
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    save_roc_png(out_dir / "roc.png", targets_of(slides), pooled, table.class_names, metrics, per_fold_curves)
    return metrics
