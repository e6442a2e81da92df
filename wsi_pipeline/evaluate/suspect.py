"""Warnings printed beside the AUROC when the run behind it is suspect: a fold whose training never finished
(killed before its first early-stopping decision, say), or a model that predicts one class for every slide.
Either makes the figure look like a result when it is not one."""

import csv
from pathlib import Path

import numpy as np

from wsi_pipeline.config import read_yaml_mapping
from wsi_pipeline.stores.run_folder import CONFIG_FILE, HISTORY_FILE, RunInfo, fold_dir

# Written by `wsi train` (wsi_pipeline/train/loop.py) when a fold has finished.
FOLD_RESULT_FILE = "result.json"


def _epochs_done(folder: Path) -> int:
    try:
        with open(folder / HISTORY_FILE, newline="", encoding="utf-8") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    except OSError:
        return 0


def unfinished_training(info: RunInfo) -> list[str]:
    """One warning per fold without its result: the checkpoint is an early epoch's, not the run's best."""
    config = read_yaml_mapping(info.run_dir / CONFIG_FILE)
    epochs, patience = config.get("epochs"), config.get("patience")
    warnings = []
    for fold in range(info.folds):
        folder = fold_dir(info.run_dir, fold, info.folds)
        if (folder / FOLD_RESULT_FILE).is_file():
            continue
        done = _epochs_done(folder)
        where = f"fold {fold}: " if info.folds > 1 else ""
        before = (
            f", before its first early-stopping decision (patience {patience})"
            if isinstance(patience, int) and done < patience
            else ""
        )
        warnings.append(
            f"{where}training did not finish (stopped after epoch {done} of {epochs}{before}); "
            f"resume it with `wsi train --out {info.run_dir} --resume`"
        )
    return warnings


def one_class_predictions(predicted: np.ndarray, class_names: tuple[str, ...]) -> list[str]:
    """A warning when every slide gets the same predicted class (the AUROC may still look fine)."""
    if len(predicted) < 2 or len(np.unique(predicted)) > 1:
        return []
    return [
        f"every slide is predicted {class_names[int(predicted[0])]!r}: the model does not separate the "
        "classes at its decision threshold"
    ]
