"""The run folder `runs/<name>/` (DESIGN §3): the contract between `wsi train` and `wsi eval`.

`config.yaml` (resolved training config: inputs, class names in index order, folds), `splits.csv`
(slide, patient, label, fold, split), and per fold a `checkpoint.pt` (best val AUROC) and `history.csv`.
A single split keeps its files in the run folder itself; `k` folds use `fold_0/` .. `fold_<k-1>/`.

Checkpoints are plain dicts of tensors and built-in types, so they load with `torch.load(weights_only=True)`
and carry what is needed to rebuild the model (name, resolved model config, input width, class names)
without the training code.
"""

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_pipeline.config import read_yaml_mapping
from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.atomic import write_bytes_atomic, write_text_atomic
from wsi_pipeline.stores.torch_files import load_torch_data

CONFIG_FILE = "config.yaml"
SPLITS_FILE = "splits.csv"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.csv"
CHECKPOINT_FORMAT = "wsi-checkpoint-v1"
SPLIT_COLUMNS = ("slide_id", "patient_id", "label", "fold", "split")


def fold_dir(run_dir: Path, fold: int, n_folds: int) -> Path:
    return run_dir if n_folds == 1 else run_dir / f"fold_{fold}"


@dataclass(frozen=True)
class RunInfo:
    """What `wsi eval` needs from a run's config.yaml."""

    run_dir: Path
    features: Path
    labels: Path
    class_names: tuple[str, ...]
    folds: int


def read_run_info(run_dir: Path) -> RunInfo:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise WsiError(f"{run_dir}: not a run folder (no {CONFIG_FILE}); train one with `wsi train`")
    data = read_yaml_mapping(path)
    try:
        return RunInfo(
            run_dir=run_dir,
            features=Path(data["features"]),
            labels=Path(data["labels"]),
            class_names=tuple(str(c) for c in data["classes"]),
            folds=int(data["folds"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WsiError(f"{path}: incomplete run config ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class SplitRow:
    slide_id: str
    patient_id: str
    label: str
    fold: int
    split: str


def write_splits(path: Path, rows: list[SplitRow]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SPLIT_COLUMNS)
    for r in rows:
        writer.writerow([r.slide_id, r.patient_id, r.label, r.fold, r.split])
    write_text_atomic(path, buffer.getvalue())


def read_splits(path: Path) -> list[SplitRow]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [
                SplitRow(r["slide_id"], r["patient_id"], r["label"], int(r["fold"]), r["split"])
                for r in csv.DictReader(fh)
            ]
    except FileNotFoundError:
        raise WsiError(f"{path}: no such splits file; is this a complete run folder?") from None
    except (KeyError, ValueError) as exc:
        raise WsiError(f"{path}: damaged splits file ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class Checkpoint:
    model_name: str
    model_config: dict[str, Any]
    in_dim: int
    class_names: tuple[str, ...]
    state_dict: dict[str, Any]
    epoch: int
    val_auroc: float


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:

    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_name": checkpoint.model_name,
        "model_config": dict(checkpoint.model_config),
        "in_dim": int(checkpoint.in_dim),
        "class_names": list(checkpoint.class_names),
        "state_dict": {k: v.detach().cpu() for k, v in checkpoint.state_dict.items()},
        "epoch": int(checkpoint.epoch),
        "val_auroc": float(checkpoint.val_auroc),
    }
    write_bytes_atomic(path, torch_bytes(payload))


def torch_bytes(payload: Any) -> bytes:
    """`torch.save` into memory: written to a file, a full disk would surface as a bare RuntimeError of
    torch's zip writer instead of the OSError that `write_bytes_atomic` turns into a one-line message."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_checkpoint(path: Path) -> Checkpoint:
    """Load with `weights_only=True`: a checkpoint from elsewhere can hold data, never code."""

    if not path.is_file():
        raise WsiError(f"{path}: no such checkpoint; did training finish?")
    payload = load_torch_data(
        path, kind="loadable checkpoint", allowed="a wsi checkpoint holds only tensors and plain values"
    )
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise WsiError(f"{path}: not a wsi checkpoint (expected format {CHECKPOINT_FORMAT})")
    return Checkpoint(
        model_name=payload["model_name"],
        model_config=payload["model_config"],
        in_dim=payload["in_dim"],
        class_names=tuple(payload["class_names"]),
        state_dict=payload["state_dict"],
        epoch=payload["epoch"],
        val_auroc=payload["val_auroc"],
    )
