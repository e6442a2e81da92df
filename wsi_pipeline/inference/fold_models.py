"""A run folder's fold models, rebuilt from their checkpoints (`wsi_pipeline.stores.run_folder`)."""

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wsi_pipeline.errors import WsiError
from wsi_pipeline.models import build_model
from wsi_pipeline.models.base import IDENTITY_BUFFERS
from wsi_pipeline.stores.run_folder import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    RESULT_FILE,
    Checkpoint,
    RunInfo,
    fold_dir,
    load_checkpoint,
)
from wsi_pipeline.stores.yaml_file import read_yaml_mapping


@dataclass(frozen=True)
class FoldModel:
    fold: int
    model: torch.nn.Module
    in_dim: int


def load_fold_models(info: RunInfo, device: torch.device, folds: list[int] | None = None) -> list[FoldModel]:
    """The models of `folds` (default: every fold of the run), in eval mode on `device`."""
    models = []
    for fold in range(info.folds) if folds is None else folds:
        path = fold_dir(info.run_dir, fold, info.folds) / CHECKPOINT_FILE
        ckpt = load_checkpoint(path)
        if ckpt.class_names != info.class_names:
            raise WsiError(f"{path}: classes {ckpt.class_names} differ from the run's {info.class_names}")
        models.append(FoldModel(fold, checkpoint_model(ckpt, path).to(device).eval(), ckpt.in_dim))
    return models


def checkpoint_model(ckpt: Checkpoint, path: Path) -> torch.nn.Module:
    """The model a checkpoint holds, with its weights: one aggregator, or a `MemberEnsemble` of them."""
    from wsi_pipeline.models.ensemble import MemberEnsemble

    def build() -> torch.nn.Module:
        return build_model(
            ckpt.model_name, in_dim=ckpt.in_dim, n_classes=len(ckpt.class_names), **ckpt.model_config
        )

    model = build() if ckpt.members == 1 else MemberEnsemble([build() for _ in range(ckpt.members)])
    load_weights(model, ckpt.state_dict, ckpt.model_name, path)
    return model


def load_weights(model: torch.nn.Module, state: dict[str, Any], model_name: str, path: Path) -> None:
    """Weights that do not fit the model their checkpoint names (another model's, edited by hand) are one
    line naming the file, not torch's list of every key."""
    target = model.state_dict()
    # A checkpoint from before inputs (or pooled values) were standardised and calibrated: those buffers stay at
    # the built model's initial values, the identity.
    state = {**{k: target[k] for k in IDENTITY_BUFFERS if k in target and k not in state}, **state}
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mis_shaped = [
        k for k, v in target.items() if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    problems = [
        f"{len(keys)} {what} (e.g. {keys[0]})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped))
        if keys
    ]
    if problems:
        raise WsiError(
            f"{path}: its weights do not fit the {model_name} model it names ({', '.join(problems)}); "
            "is it the checkpoint of another model?"
        )
    model.load_state_dict(state)


def _epochs_done(folder: Path) -> int:
    try:
        with open(folder / HISTORY_FILE, newline="", encoding="utf-8") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    except OSError:
        return 0


def unfinished_training(info: RunInfo, folds: list[int] | None = None) -> list[str]:
    """One warning per fold of `folds` (default: all) without its result.json: training was stopped, so its
    checkpoint is an early epoch's, not the run's best, and it was never calibrated. `wsi eval` and
    `wsi predict` both say so beside what they report, rather than refuse: the user may want a first look."""
    config = read_yaml_mapping(info.run_dir / CONFIG_FILE)
    epochs, patience = config.get("epochs"), config.get("patience")
    warnings = []
    for fold in range(info.folds) if folds is None else folds:
        folder = fold_dir(info.run_dir, fold, info.folds)
        if (folder / RESULT_FILE).is_file():
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
