"""What an output folder holds, by content: the yardstick of the crash and bad-input tests.

`tree_content(root)` maps every path under `root` (relative, `/`-separated) to a comparable value: zarr
stores by arrays (dtype, shape, sha256 of the values) and attributes, HDF5 files by datasets and
attributes, torch checkpoints by tensors and values, CSV / JSON / YAML parsed, PNG by decoded pixels,
anything else by its bytes. Formats that stamp times or that re-encode identically-valued data differently
are thus compared by what they mean.

`Exclusions` drop what legitimately differs between two runs with the same seed (wall-clock columns and
fields); each test says which and why.
"""

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from wsi_pipeline.stores.atomic import OLD_MARKER, TMP_MARKER


@dataclass(frozen=True)
class Exclusions:
    """What differs between two runs of the same command with the same seed, by file name."""

    csv_columns: dict[str, frozenset[str]] = field(default_factory=dict)  # file name -> columns
    json_keys: dict[str, frozenset[str]] = field(default_factory=dict)  # file name -> keys at any depth
    files: frozenset[str] = frozenset()  # names of transient files (present or not)


NONE = Exclusions()


def array_digest(array: Any) -> tuple[str, tuple[int, ...], str]:
    values = np.ascontiguousarray(np.asarray(array))
    return (str(values.dtype), tuple(values.shape), hashlib.sha256(values.tobytes()).hexdigest())


def zarr_content(path: Path) -> dict[str, Any]:
    import zarr

    def group(node: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"attrs": json.loads(json.dumps(dict(node.attrs), sort_keys=True))}
        for name, child in sorted(node.members()):
            out[name] = group(child) if isinstance(child, zarr.Group) else array_digest(child[...])
        return out

    return {"zarr": group(zarr.open_group(str(path), mode="r"))}


def h5_content(path: Path) -> dict[str, Any]:
    import h5py

    def attrs(node: Any) -> dict[str, Any]:
        return {k: _plain(v) for k, v in sorted(node.attrs.items())}

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as h5:
        out["/"] = attrs(h5)

        def visit(name: str, node: Any) -> None:
            if isinstance(node, h5py.Dataset):
                out[name] = (array_digest(node[()]), attrs(node))
            else:
                out[name] = attrs(node)

        h5.visititems(visit)
    return {"hdf5": out}


def torch_content(path: Path) -> Any:
    import pickle

    import torch

    try:
        return {"torch": _plain(torch.load(path, map_location="cpu", weights_only=True))}
    except pickle.UnpicklingError:  # not data only (a planted payload): by its bytes, never unpickled
        return {"bytes": hashlib.sha256(path.read_bytes()).hexdigest()}


def csv_content(path: Path, drop: frozenset[str]) -> dict[str, Any]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {"csv": [{k: v for k, v in row.items() if k not in drop} for row in rows]}


def json_content(path: Path, drop: frozenset[str]) -> dict[str, Any]:
    return {"json": _without(json.loads(path.read_text(encoding="utf-8")), drop)}


def png_content(path: Path) -> dict[str, Any]:
    from PIL import Image

    with Image.open(path) as image:
        return {"png": (image.mode, array_digest(np.asarray(image)))}


def file_content(path: Path, exclusions: Exclusions = NONE) -> Any:
    name = path.name
    if path.is_dir() and name.endswith(".zarr"):
        return zarr_content(path)
    suffix = path.suffix.lower()
    if suffix == ".h5":
        return h5_content(path)
    if suffix in (".pt", ".pth"):
        return torch_content(path)
    if suffix == ".csv":
        return csv_content(path, exclusions.csv_columns.get(name, frozenset()))
    if suffix == ".json":
        return json_content(path, exclusions.json_keys.get(name, frozenset()))
    if suffix in (".yaml", ".yml"):
        return {"yaml": yaml.safe_load(path.read_text(encoding="utf-8"))}
    if suffix == ".png":
        return png_content(path)
    return {"bytes": hashlib.sha256(path.read_bytes()).hexdigest()}


def tree_content(root: Path, exclusions: Exclusions = NONE) -> dict[str, Any]:
    """Every output under `root` by content; zarr stores are one entry, transient files are left out."""
    out: dict[str, Any] = {}
    if not root.exists():
        return out
    for path in sorted(_outputs(root)):
        if path.name in exclusions.files:
            continue
        out[path.relative_to(root).as_posix()] = file_content(path, exclusions)
    return out


def listing(root: Path) -> set[str]:
    """Relative paths of every output under `root` (zarr stores as one), hidden ones included."""
    return {p.relative_to(root).as_posix() for p in _outputs(root)} if root.exists() else set()


def visible(paths: set[str]) -> set[str]:
    return {p for p in paths if not any(part.startswith(".") for part in p.split("/"))}


def leftovers(root: Path) -> list[str]:
    """Temporaries or moved-aside folders anywhere under `root` (there must be none after a run ends)."""
    found = []
    for path in root.rglob("*") if root.exists() else []:
        if TMP_MARKER in path.name or OLD_MARKER in path.name:
            found.append(path.relative_to(root).as_posix())
    return sorted(found)


def describe_difference(expected: dict[str, Any], actual: dict[str, Any]) -> str:
    """A short account of how two `tree_content`s differ, for assertion messages."""
    lines = []
    for key in sorted(set(expected) | set(actual)):
        if key not in actual:
            lines.append(f"missing: {key}")
        elif key not in expected:
            lines.append(f"unexpected: {key}")
        elif expected[key] != actual[key]:
            lines.append(f"differs: {key}: expected {_short(expected[key])}, got {_short(actual[key])}")
    return "\n".join(lines)


def _outputs(root: Path) -> list[Path]:
    found = []
    for path in root.iterdir():
        if path.is_dir() and not path.name.endswith(".zarr") and TMP_MARKER not in path.name:
            found.extend(_outputs(path))
        else:
            found.append(path)
    return found


def _plain(value: Any) -> Any:
    """Tensors and arrays as digests, containers recursively, numpy scalars as Python values."""
    import torch

    if isinstance(value, torch.Tensor):  # by raw bytes: numpy has no bfloat16
        raw = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        return ("tensor", str(value.dtype), tuple(value.shape), hashlib.sha256(raw.tobytes()).hexdigest())
    if isinstance(value, np.ndarray):
        return array_digest(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _without(value: Any, drop: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, drop) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [_without(v, drop) for v in value]
    return value


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
