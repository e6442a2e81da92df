"""What an evaluation writes and prints: metrics.json, predictions.csv (pooled and per fold), roc.png, and
the console lines (pooled and per-fold AUROC, which models scored the slides, warnings).

At `level: patient` the metrics are over patients: a patient's prediction is the mean of its slides'
probabilities, and its label the label its slides share (slides of one patient with different labels are
refused at that level, since the patient has no single label).
"""

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.errors import WsiError
from wsi_pipeline.evaluate.assign import Assignment
from wsi_pipeline.evaluate.config import EvalConfig
from wsi_pipeline.evaluate.metrics import classification_metrics, fold_summary
from wsi_pipeline.evaluate.plots import save_reliability_png, save_roc_png
from wsi_pipeline.evaluate.scoring import FoldProbs, who_scored
from wsi_pipeline.stores.atomic import write_text_atomic
from wsi_pipeline.stores.labels import LabelTable


@dataclass(frozen=True)
class Scored:
    """Predictions of the slides that were scored: ids, patients, class indices, (n, C) probabilities."""

    slide_ids: list[str]
    patients: np.ndarray
    targets: np.ndarray
    probs: np.ndarray


def scored(table: LabelTable, slide_ids: list[str], probs: np.ndarray) -> Scored:
    rows = table.by_slide()
    return Scored(
        slide_ids,
        np.array([rows[s].patient_id for s in slide_ids], dtype=object),
        np.array([table.class_index(rows[s].label) for s in slide_ids], dtype=np.int64),
        probs,
    )


def patient_level(s: Scored, table: LabelTable) -> Scored:
    """One row per patient: the mean of its slides' probabilities, under the label its slides share."""
    ids, inverse = np.unique(s.patients.astype(str), return_inverse=True)
    probs = np.stack([s.probs[inverse == i].mean(axis=0) for i in range(len(ids))])
    targets = []
    for i, patient in enumerate(ids):
        labels = sorted({table.class_names[t] for t in s.targets[inverse == i]})
        if len(labels) > 1:
            raise WsiError(
                f"{table.path}: patient {patient} has slides labelled {' and '.join(labels)}; "
                "--level patient needs one label per patient (use --level slide)"
            )
        targets.append(table.class_index(labels[0]))
    return Scored(list(ids), ids.astype(object), np.array(targets, dtype=np.int64), probs)


def level_metrics(cfg: EvalConfig, table: LabelTable, s: Scored) -> dict[str, Any]:
    """Metrics at the configured level, with the slide and patient counts of the rows behind them."""
    rows = patient_level(s, table) if cfg.level == "patient" else s
    interval = {  # the bootstrap confidence interval's settings
        "n_bootstrap": cfg.n_bootstrap,
        "ci_level": cfg.ci_level,
        "seed": cfg.seed,
        "min_patients_per_class": cfg.ci_min_patients,
    }
    metrics = classification_metrics(
        rows.targets, rows.probs, table.class_names, patients=rows.patients, **interval
    )
    metrics["n_slides"] = len(s.slide_ids)
    return metrics


def predictions_csv(s: Scored, table: LabelTable, assignment: Assignment, n_folds: int) -> str:
    """One row per slide: its probabilities, prediction, and which model scored it (`source`, `scored_by`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["slide_id", "patient_id", "label", *(f"prob_{c}" for c in table.class_names), "predicted"]
    writer.writerow([*header, "source", "scored_by"])
    for slide_id, patient, target, p in zip(s.slide_ids, s.patients, s.targets, s.probs, strict=True):
        source = assignment.source[slide_id]
        writer.writerow(
            [
                slide_id,
                patient,
                table.class_names[target],
                *(f"{v:.6f}" for v in p),
                table.class_names[int(p.argmax())],
                source,
                who_scored(source, assignment.folds_of[slide_id], n_folds),
            ]
        )
    return buffer.getvalue()


def patient_predictions_csv(s: Scored, table: LabelTable) -> str:
    rows = patient_level(s, table)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["patient_id", "label", *(f"prob_{c}" for c in table.class_names), "predicted", "n_slides"]
    )
    counts = dict(zip(*np.unique(s.patients.astype(str), return_counts=True), strict=True))
    for patient, target, p in zip(rows.slide_ids, rows.targets, rows.probs, strict=True):
        predicted = table.class_names[int(p.argmax())]
        writer.writerow(
            [patient, table.class_names[target], *(f"{v:.6f}" for v in p), predicted, counts[patient]]
        )
    return buffer.getvalue()


def write_fold_outputs(
    cfg: EvalConfig,
    table: LabelTable,
    out_dir: Path,
    assignment: Assignment,
    probs: FoldProbs,
    n_folds: int,
) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray, dict[str, Any]]]]:
    """Each fold's metrics (over the slides it scored) and predictions.csv; the curves for roc.png."""
    per_fold, curves = [], []
    for fold in range(n_folds):
        ids = sorted(probs[fold])
        if not ids:
            continue
        s = scored(table, ids, np.stack([probs[fold][i] for i in ids]))
        fold_metrics = {"fold": fold, **level_metrics(cfg, table, s)}
        per_fold.append(fold_metrics)
        rows = patient_level(s, table) if cfg.level == "patient" else s
        curves.append((rows.targets, rows.probs, fold_metrics))
        text = predictions_csv(s, table, assignment, n_folds)
        write_text_atomic(out_dir / f"fold_{fold}" / "predictions.csv", text)
    return per_fold, curves


def write_outputs(
    cfg: EvalConfig,
    table: LabelTable,
    out_dir: Path,
    assignment: Assignment,
    s: Scored,
    probs: FoldProbs,
    n_folds: int,
) -> dict[str, Any]:
    """metrics.json, predictions.csv (+ patient_predictions.csv, per-fold files) and roc.png; the metrics."""
    metrics: dict[str, Any] = {
        "split": cfg.split,
        "level": cfg.level,
        "classes": list(table.class_names),
        **level_metrics(cfg, table, s),
        "scored": assignment.counts(),
    }
    if assignment.excluded:
        metrics["excluded_slides"] = list(assignment.excluded)
    if assignment.counts()["seen"]:
        metrics["seen_note"] = (
            "includes slides a scoring model trained or validated on: not a held-out estimate"
        )
    curves: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = []
    if n_folds > 1:
        metrics["pooling"] = "mean probability over the folds that scored each slide (see assign.py)"
        metrics["per_fold"], curves = write_fold_outputs(cfg, table, out_dir, assignment, probs, n_folds)
        metrics["fold_summary"] = fold_summary(metrics["per_fold"])
    write_text_atomic(out_dir / "predictions.csv", predictions_csv(s, table, assignment, n_folds))
    if cfg.level == "patient":
        write_text_atomic(out_dir / "patient_predictions.csv", patient_predictions_csv(s, table))
    rows = patient_level(s, table) if cfg.level == "patient" else s
    save_roc_png(out_dir / "roc.png", rows.targets, rows.probs, table.class_names, metrics, curves)
    save_reliability_png(out_dir / "reliability.png", rows.targets, rows.probs, metrics)
    return metrics


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> None:
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def _auroc_text(metrics: dict[str, Any]) -> str:
    value, ci = metrics.get("auroc"), metrics.get("auroc_ci")
    shown = "undefined" if value is None else f"{value:.4f}"
    interval = f" [{ci['low']:.4f}, {ci['high']:.4f}]" if ci else ""
    return shown + interval


def console_lines(metrics: dict[str, Any]) -> list[str]:
    """Pooled and per-fold AUROC with mean ± sd for CV runs, the interval's note, and warnings."""
    lines = [scored_text(metrics["scored"])]
    if "per_fold" in metrics:
        lines.append(f"pooled AUROC {_auroc_text(metrics)} ({counts_text(metrics)})")
        for fold in metrics["per_fold"]:
            lines.append(f"  fold {fold['fold']} AUROC {_auroc_text(fold)} ({counts_text(fold)})")
        summary = metrics["fold_summary"].get("auroc")
        if summary:
            lines.append(
                f"per-fold AUROC mean {summary['mean']:.4f} ± {summary['sd']:.4f} (sd over "
                f"{summary['n_folds']} folds)"
            )
    if metrics.get("ci_note"):
        lines.append(f"note: {metrics['ci_note']}")
    if metrics.get("baseline"):
        lines.append(
            f"model AUROC {_auroc_text(metrics)} vs mean-pooled logistic regression baseline AUROC "
            f"{_auroc_text(metrics['baseline'])}"
        )
    lines.extend(f"warning: {w}" for w in metrics.get("warnings", []))
    return lines


def scored_text(counts: dict[str, int]) -> str:
    """How many slides each kind of model scored (see `wsi_pipeline.evaluate.assign`)."""
    return "slides scored: " + ", ".join(
        f"{n} {name}" for name, n in counts.items() if n or name == "excluded"
    )


def counts_text(metrics: dict[str, Any]) -> str:
    return f"n={metrics['n_slides']} slides, {metrics['n_patients']} patients"


def final_line(metrics: dict[str, Any], out_dir: Path) -> str:
    """`<split> AUROC ...`: the figure, its counts, a warning beside it when the run is suspect."""
    level = " patient-level" if metrics.get("level") == "patient" else ""
    warned = " WARNING: " + "; ".join(metrics["warnings"]) + ";" if metrics.get("warnings") else ""
    return (
        f"{metrics['split']}{level} AUROC {_auroc_text(metrics)} ({counts_text(metrics)});{warned} "
        f"outputs in {out_dir}"
    )
