"""The run folder `runs/<name>/` (docs/ARCHITECTURE.md, "Run folder"): the contract between `wsi train` and `wsi eval`.

`config.yaml` (resolved training config: inputs, class names in index order, folds), `splits.csv`
(slide, patient, label, fold, split), `extractor.json` (what made the training bags' features: extractor,
weights fingerprint, dim, tile geometry; `wsi predict` checks new bags against it), and per fold a `checkpoint.pt` (best val AUROC) and `history.csv`.
A single split keeps its files in the run folder itself; `k` folds use `fold_0/` .. `fold_<k-1>/`.

Checkpoints are plain dicts of tensors and built-in types, so they load with `torch.load(weights_only=True)`
and carry what is needed to rebuild the model (name, resolved model config, input width, class names)
without the training code.
"""

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.atomic import write_bytes_atomic, write_text_atomic
from wsi_pipeline.stores.feature_bag import bag_feature_dim, read_bag_attrs
from wsi_pipeline.stores.tile_store import read_tile_store_meta
from wsi_pipeline.stores.torch_files import load_torch_data
from wsi_pipeline.stores.yaml_file import read_yaml_mapping

CONFIG_FILE = "config.yaml"
SPLITS_FILE = "splits.csv"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.csv"
RESULT_FILE = "result.json"  # a fold is finished once `wsi train` has written it
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
    # > 1: the weights are those of a `MemberEnsemble` of that many models (`wsi train --members`), whose
    # state-dict keys start with `members.<m>.`; `epoch` is then the members' median best epoch.
    members: int = 1


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
        "members": int(checkpoint.members),
    }
    write_bytes_atomic(path, torch_bytes(payload))


def torch_bytes(payload: Any) -> bytes:
    """`torch.save` into memory: written to a file, a full disk would surface as a bare RuntimeError of
    torch's zip writer instead of the OSError that `write_bytes_atomic` turns into a one-line message."""
    import torch  # heavy (seconds): loaded only when a checkpoint is written

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
        members=int(payload.get("members", 1)),  # checkpoints before `--members` hold one model
    )


# ------------------------------------------------------------------------------ extractor identity

EXTRACTOR_FILE = "extractor.json"
# Fields of a bag that must match the run's for its features to mean what the model learned.
IDENTITY_FIELDS = ("extractor", "weights_sha256", "feature_dim", "tile_um", "tile_px", "stain_norm")
# Extraction settings that do not change a feature's value (where and how fast it was computed).
_RUNTIME_EXTRACT_KEYS = {
    "weights",
    "random_init",
    "batch_size",
    "workers",
    "device",
    "slides_root",
    "overwrite",
}


@dataclass(frozen=True)
class ExtractorIdentity:
    """What made the features of a run's training bags: the contract `wsi predict` checks new bags against.

    `mpp` is µm per pixel as the extractor saw the tiles (tile_um / tile_px). `extract_settings` and `tiling`
    are the feature-changing settings of `wsi extract` and `wsi tile` (when the tile stores were reachable at
    training time), so `wsi predict --slides` can make new bags the same way. `mixed` names fields on which
    the training bags disagreed (recorded as null).
    """

    extractor: str | None
    weights_sha256: str | None
    feature_dim: int
    tile_um: float | None
    tile_px: int | None
    mpp: float | None
    stain_norm: str | None
    dtype: str | None
    extract_settings: dict[str, Any]
    tiling: dict[str, Any]
    n_bags: int
    mixed: tuple[str, ...] = ()


def bag_identity(attrs: dict[str, Any], feature_dim: int) -> dict[str, Any]:
    """The identity fields of one bag from its attributes (ours, STAMP's or TRIDENT's names)."""
    settings = attrs.get("extract_config")
    settings = _json_mapping(settings)
    tile_um = attrs.get("tile_um", attrs.get("tile_size_um"))
    tile_px = attrs.get("tile_px", attrs.get("tile_size_px", attrs.get("patch_size")))
    stain = attrs.get("stain_norm", settings.get("stain_norm"))
    return {
        "extractor": attrs.get("extractor") or attrs.get("encoder"),
        "weights_sha256": attrs.get("weights_sha256"),
        "feature_dim": int(feature_dim),
        "tile_um": float(tile_um) if tile_um is not None else None,
        "tile_px": int(tile_px) if tile_px is not None else None,
        "stain_norm": None if stain in (None, "none") else str(stain),
    }


def _json_mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def identity_of_bags(paths: list[Path]) -> ExtractorIdentity:
    """The common identity of `paths` (read from their headers only), with the settings that made them."""
    idents, attrs_first = [], {}
    for path in paths:
        attrs = read_bag_attrs(path) if path.suffix.lower() == ".h5" else {}
        attrs_first = attrs_first or attrs
        idents.append(bag_identity(attrs, bag_feature_dim(path)))
    common: dict[str, Any] = {}
    mixed = []
    for name in IDENTITY_FIELDS:
        values = {json.dumps(i[name]) for i in idents}
        common[name] = idents[0][name] if len(values) == 1 else None
        if len(values) > 1:
            mixed.append(name)
    settings = _json_mapping(attrs_first.get("extract_config"))
    tile_um, tile_px = common["tile_um"], common["tile_px"]
    return ExtractorIdentity(
        **common,
        mpp=tile_um / tile_px if tile_um and tile_px else None,
        dtype=attrs_first.get("dtype"),
        extract_settings={k: v for k, v in settings.items() if k not in _RUNTIME_EXTRACT_KEYS},
        tiling=_tiling_of(attrs_first),
        n_bags=len(paths),
        mixed=tuple(mixed),
    )


def _tiling_of(attrs: dict[str, Any]) -> dict[str, Any]:
    """The tile store's settings (tissue method, filter thresholds), when the store is still there."""
    store = attrs.get("tile_store")
    if not store or not Path(store).is_dir():
        return {}
    try:
        meta = read_tile_store_meta(Path(store)).model_dump(mode="json")
    except WsiError:
        return {}
    keep = ("tile_um", "tile_px", "tissue_method", "mpp_source", "mpp_level0")
    return {**{k: meta[k] for k in keep if k in meta}, **meta.get("thresholds", {})}


def write_extractor_identity(run_dir: Path, bag_paths: list[Path]) -> ExtractorIdentity:
    """Record the training bags' identity in `extractor.json` (atomically)."""
    identity = identity_of_bags(bag_paths)
    body = {**asdict(identity), "mixed": list(identity.mixed)}
    write_text_atomic(run_dir / EXTRACTOR_FILE, json.dumps(body, indent=2) + "\n")
    return identity


def read_extractor_identity(run_dir: Path) -> ExtractorIdentity | None:
    """The run's recorded identity; None for runs trained before it was recorded."""
    path = run_dir / EXTRACTOR_FILE
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return ExtractorIdentity(**{**body, "mixed": tuple(body.get("mixed", ()))})
    except (OSError, ValueError, TypeError) as exc:
        raise WsiError(f"{path}: damaged extractor record ({type(exc).__name__}: {exc})") from exc
