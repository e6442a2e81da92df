"""Feature bags `features/<slide_id>.h5`: the contract between `wsi extract` and `wsi train` / `wsi eval`.

Our layout (docs/ARCHITECTURE.md, "Feature bag"; every attribute in features/README.md): datasets
`features` (N, D) float16 or float32 and `coords` (N, 2) int64 level-0 top-left (x, y), rows in the tile
store's order; the recipe in root attributes.
A bag is streamed into its temporary file while it is computed (memory independent of N) and renamed into
place only once every row and attribute is written, so a bag under its final name is complete.

`load_bag` also reads bags that other tools made, so users can bring features they already have:
STAMP (`feats`, coords in µm) and CLAM / TRIDENT (`features`, `coords` in level-0 px, CLAM sometimes with a
leading batch axis of 1; CLAM's `.pt` feature files too, which carry no coordinates).

One numeric path: training, validation, `wsi eval` and prediction all take a bag's features through
`model_features` (held as float16 whatever the stored dtype, checked non-empty and finite, the slide named
in every error) and run the model under `compute_autocast`, so the same bag gives the same probabilities
in validation and in evaluation.
"""

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.atomic import atomic_path
from wsi_pipeline.stores.torch_files import load_torch_data

BAG_SUFFIX = ".h5"
BAG_SUFFIXES = (BAG_SUFFIX, ".pt")  # an `.h5` wins over a CLAM `.pt` of the same name
FORMAT_NAME = "wsi-feature-bag"
FORMAT_VERSION = 1
FeatureDtype = Literal["float16", "float32"]
Layout = Literal["wsi", "stamp", "clam"]

# Chunks of at most 1 MiB: HDF5's default chunk cache, so appending a batch never re-reads a chunk.
_CHUNK_BYTES = 1 << 20
# STAMP v1 wrote coordinates in tiles of 224 px covering 256 µm (what STAMP itself assumes when reading).
_STAMP_V1_TILE_PX = 224
_STAMP_V1_TILE_UM = 256.0


def bag_path(out_dir: Path, slide_id: str) -> Path:
    return out_dir / f"{slide_id}{BAG_SUFFIX}"


def find_bag(features: Path, slide_id: str) -> Path | None:
    """The bag of one slide in `features` by the rule of `bags_in_folder` (`.h5` first), or None."""
    for suffix in BAG_SUFFIXES:
        path = features / f"{slide_id}{suffix}"
        if path.is_file():
            return path
    return None


def bags_in_folder(features: Path) -> dict[str, Path]:
    """slide_id -> bag in `features`, sorted: our and CLAM/TRIDENT/STAMP `.h5` files, and CLAM's `.pt`
    feature files where no `.h5` has the name. Train and predict list bags with this, eval finds each
    slide's with `find_bag`: one rule for all three."""
    if not features.is_dir():
        raise WsiError(f"{features}: no such folder of feature bags")
    bags: dict[str, Path] = {}
    for suffix in reversed(BAG_SUFFIXES):
        for path in sorted(features.glob(f"*{suffix}")):
            if path.is_file() and not path.name.startswith("."):
                bags[path.name[: -len(suffix)]] = path
    return dict(sorted(bags.items()))


class Bag:
    """One slide's tile features, coordinates and metadata, whatever tool wrote the file.

    `features` (N, D) float16 or float32 as stored; `coords` (N, 2) int64 level-0 px (x, y) of each tile's
    top-left; `meta` holds at least `layout` ("wsi" | "stamp" | "clam"), `slide_id`, `feature_dim`, `n_tiles`,
    `extractor`, `mpp_level0`, `tile_um`, `tile_px`, `tile_px_level0` (None where the file does not say).
    Coordinates that cannot be expressed in level-0 px (a STAMP bag without the slide's mpp, a CLAM `.pt`)
    raise a one-line error when asked for, so training on features alone still works.
    """

    __slots__ = ("_coords", "_coords_problem", "features", "meta")

    def __init__(
        self, features: np.ndarray, coords: np.ndarray | None, meta: dict[str, Any], coords_problem: str = ""
    ) -> None:
        self.features = features
        self.meta = meta
        self._coords = coords
        self._coords_problem = coords_problem or "this bag has no level-0 coordinates"

    @property
    def coords(self) -> np.ndarray:
        if self._coords is None:
            raise WsiError(self._coords_problem)
        return self._coords

    @property
    def has_coords(self) -> bool:
        return self._coords is not None

    @property
    def n_tiles(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def __repr__(self) -> str:
        return (
            f"Bag(slide_id={self.meta.get('slide_id')!r}, layout={self.meta.get('layout')!r}, "
            f"features={self.features.shape} {self.features.dtype})"
        )


# ---------------------------------------------------------------------------------------------- writing


class BagWriter:
    """Appends feature rows, in store order, to the `features` dataset of a bag being written."""

    def __init__(self, dataset: Any, path: Path) -> None:
        self._dataset = dataset
        self._path = path
        self.n_written = 0

    def write(self, rows: np.ndarray) -> None:
        n_total, feature_dim = self._dataset.shape
        if rows.ndim != 2 or rows.shape[1] != feature_dim:
            raise ValueError(f"feature rows of shape {rows.shape} do not fit a bag of width {feature_dim}")
        end = self.n_written + rows.shape[0]
        if end > n_total:
            raise ValueError(f"{end} feature rows written to a bag of {n_total}")
        with np.errstate(over="ignore"):  # overflow is checked right below, with a message that says why
            converted = rows.astype(self._dataset.dtype, copy=False)
        if not np.isfinite(converted).all():
            hint = "; re-run with --dtype float32" if converted.dtype == np.float16 else ""
            raise WsiError(f"{self._path.name}: the extractor produced non-finite features (overflow?){hint}")
        self._dataset[self.n_written : end] = converted
        self.n_written = end


@contextmanager
def write_bag(
    path: Path, *, coords: np.ndarray, feature_dim: int, dtype: FeatureDtype, attrs: Mapping[str, Any]
) -> Iterator[BagWriter]:
    """Write a bag of `len(coords)` rows atomically; the caller streams features through the writer.

    Attributes are written last and the file is published only when every row arrived, so an interrupted
    or failed extraction leaves no bag (and no temporary) behind.
    """
    import h5py  # heavy: h5py (the HDF5 library)

    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    n_tiles = coords.shape[0]
    row_bytes = feature_dim * np.dtype(dtype).itemsize
    chunk_rows = max(1, min(n_tiles, _CHUNK_BYTES // row_bytes))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("coords", data=coords)
        features = h5.create_dataset(
            "features",
            shape=(n_tiles, feature_dim),
            dtype=dtype,
            chunks=(chunk_rows, feature_dim) if n_tiles else None,
        )
        writer = BagWriter(features, path)
        yield writer
        if writer.n_written != n_tiles:
            raise RuntimeError(f"{path.name}: {writer.n_written} of {n_tiles} feature rows were written")
        h5.attrs["format"] = FORMAT_NAME
        h5.attrs["format_version"] = FORMAT_VERSION
        for key, value in attrs.items():
            if value is not None:
                h5.attrs[key] = _to_attr(value)


def _to_attr(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return value


# ---------------------------------------------------------------------------------------------- reading


def read_bag_attrs(path: Path) -> dict[str, Any]:
    """Root attributes of an HDF5 bag without reading its arrays (cheap: resume checks, listings)."""
    with _open_h5(path) as h5:
        return _attrs(h5.attrs)


def bag_feature_dim(path: Path) -> int:
    """D of a bag in any supported layout. An HDF5 bag gives it from the dataset's shape, without reading
    values; a CLAM `.pt` file has no header to read a shape from, so it is loaded whole."""
    path = Path(path)
    if path.suffix.lower() == ".pt":
        return int(_load_pt_features(path).shape[1])
    with _open_h5(path) as h5:
        name = _features_name(h5, path)
        shape = h5[name].shape
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[0] != 1):
            raise WsiError(f"{path}: dataset '{name}' has shape {shape}, expected (N, D)")
        return int(shape[-1])


def load_bag(path: Path, *, mpp_level0: float | None = None) -> Bag:
    """Read a feature bag made by `wsi extract`, STAMP, CLAM or TRIDENT.

    `mpp_level0` (µm per level-0 pixel of the slide) is needed only for STAMP bags, whose coordinates are
    in µm and which do not store the slide's resolution; our bags store it and CLAM/TRIDENT use pixels.
    """
    path = Path(path)
    if path.suffix.lower() == ".pt":
        features = _load_pt_features(path)
        meta = _base_meta(path, "clam", features)
        return Bag(
            features,
            None,
            meta,
            f"{path}: CLAM .pt feature files carry no coordinates; load the matching .h5 instead",
        )
    with _open_h5(path) as h5:
        name = _features_name(h5, path)
        attrs = _attrs(h5.attrs)
        features = _read_features(h5, name, path)
        if "coords" not in h5:
            raise WsiError(f"{path}: no 'coords' dataset next to '{name}' (found: {_names(h5)})")
        raw_coords = _read_2d(h5["coords"], "coords", path)
        # CLAM and TRIDENT keep their metadata on the datasets rather than the file.
        dataset_attrs = {**_attrs(h5["coords"].attrs), **_attrs(h5[name].attrs)}
    if raw_coords.shape != (features.shape[0], 2):
        raise WsiError(
            f"{path}: '{name}' has {features.shape[0]} rows but 'coords' has shape {raw_coords.shape}"
            f" (expected ({features.shape[0]}, 2))"
        )
    if name == "feats":
        return _stamp_bag(path, features, raw_coords, attrs, mpp_level0)
    if attrs.get("format") == FORMAT_NAME:
        return _wsi_bag(path, features, raw_coords, attrs)
    return _clam_bag(path, features, raw_coords, {**dataset_attrs, **attrs})


# ------------------------------------------------------------------------------------ precision policy

# Features as every consumer holds them: our bags and STAMP's are stored in float16 already; CLAM and
# TRIDENT store float32, which training has always held as float16 (half the memory of a cached cohort).
# Models upcast to float32 themselves (`wsi_pipeline.models.base.upcast`), so compute is float32 on CPU.
HELD_DTYPE = np.float16


def model_features(features: np.ndarray, slide_id: str, path: Path) -> np.ndarray:
    """(N, D) features in `HELD_DTYPE`, refused with the slide's id when empty or not finite after the cast."""
    if features.ndim != 2 or features.shape[0] == 0:
        raise WsiError(
            f"slide {slide_id}: {path} has no tiles (features shape {features.shape}); "
            "drop the slide from the labels table"
        )
    with np.errstate(over="ignore"):
        held = np.ascontiguousarray(features, dtype=HELD_DTYPE)
    bad = int(np.count_nonzero(~np.isfinite(held)))
    if bad:
        raise WsiError(
            f"slide {slide_id}: {path} has {bad} NaN or inf feature values (or beyond float16 range); "
            "re-extract it"
        )
    return held


def compute_autocast(device_type: str, amp: bool) -> Any:
    """The autocast of training and validation (bfloat16 on CUDA when the run used amp, else none); eval
    and predict enter the same one, so a checkpoint's val AUROC is what `wsi eval --split val` gets."""
    import torch  # heavy: torch

    return torch.autocast(
        device_type=device_type, dtype=torch.bfloat16, enabled=amp and device_type == "cuda"
    )


def _wsi_bag(path: Path, features: np.ndarray, coords: np.ndarray, attrs: dict[str, Any]) -> Bag:
    meta = {**attrs, **_base_meta(path, "wsi", features)}
    meta["slide_id"] = attrs.get("slide_id", meta["slide_id"])
    for key in ("extractor", "mpp_level0", "tile_um", "tile_px", "tile_px_level0"):
        meta[key] = attrs.get(key)
    return Bag(features, _as_level0_px(coords, path), meta)


def _clam_bag(path: Path, features: np.ndarray, coords: np.ndarray, attrs: dict[str, Any]) -> Bag:
    meta = {**attrs, **_base_meta(path, "clam", features)}
    meta["extractor"] = attrs.get("encoder") or attrs.get("extractor")  # TRIDENT: `encoder` on `features`
    meta["tile_px"] = _int_or_none(attrs.get("patch_size"))
    level0 = attrs.get("patch_size_level0")  # TRIDENT
    if level0 is None and meta["tile_px"] is not None and attrs.get("downsample") is not None:  # CLAM
        level0 = meta["tile_px"] * float(np.ravel(attrs["downsample"])[0])
    meta["tile_px_level0"] = _int_or_none(level0)
    return Bag(features, _as_level0_px(coords, path), meta)


def _stamp_bag(
    path: Path, features: np.ndarray, coords: np.ndarray, attrs: dict[str, Any], mpp_level0: float | None
) -> Bag:
    meta = {**attrs, **_base_meta(path, "stamp", features)}
    meta["extractor"] = attrs.get("extractor")
    tile_um = attrs.get("tile_size_um")
    if tile_um is None and attrs.get("unit") == "um":  # STAMP 2.0 named it tile_size
        tile_um = attrs.get("tile_size")
    coords_um = coords.astype(np.float64)
    if tile_um is None:
        if features.shape[0] > 1 and round(_grid_stride(coords_um)) != _STAMP_V1_TILE_PX:
            raise WsiError(
                f"{path}: STAMP bag without 'unit'/'tile_size_um' attributes and coordinates not on "
                f"the 224 px grid of STAMP v1; cannot tell their unit"
            )
        tile_um = _STAMP_V1_TILE_UM
        meta["tile_px"] = _STAMP_V1_TILE_PX
        coords_um = coords_um / _STAMP_V1_TILE_PX * _STAMP_V1_TILE_UM
    else:
        meta["tile_px"] = _int_or_none(attrs.get("tile_size_px"))
    meta["tile_um"] = float(tile_um)
    mpp = (
        mpp_level0
        if mpp_level0 is not None
        else _float_or_none(attrs.get("mpp_level0", attrs.get("slide_mpp", attrs.get("mpp"))))
    )
    meta["mpp_level0"] = mpp
    meta["tile_px_level0"] = round(meta["tile_um"] / mpp) if mpp else None
    if not mpp:
        return Bag(
            features,
            None,
            meta,
            f"{path}: STAMP bag stores tile coordinates in µm and not the slide's resolution; "
            "pass mpp_level0 (µm per level-0 pixel) to read them as level-0 pixels",
        )
    return Bag(features, np.rint(coords_um / mpp).astype(np.int64), meta)


def _base_meta(path: Path, layout: Layout, features: np.ndarray) -> dict[str, Any]:
    return {
        "layout": layout,
        "slide_id": path.stem,
        "path": str(path),
        "n_tiles": int(features.shape[0]),
        "feature_dim": int(features.shape[1]),
        "extractor": None,
        "mpp_level0": None,
        "tile_um": None,
        "tile_px": None,
        "tile_px_level0": None,
    }


@contextmanager
def _open_h5(path: Path) -> Iterator[Any]:
    import h5py  # heavy: h5py (the HDF5 library)

    path = Path(path)
    if not path.is_file():
        raise WsiError(f"{path}: no such feature bag")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise WsiError(f"{path}: not a readable HDF5 feature bag (truncated or corrupt: {exc})") from exc
    try:
        yield h5
    except (OSError, KeyError, ValueError) as exc:
        raise WsiError(f"{path}: damaged feature bag ({type(exc).__name__}: {exc})") from exc
    finally:
        h5.close()


def _features_name(h5: Any, path: Path) -> str:
    for name in ("features", "feats"):
        if name in h5:
            return name
    raise WsiError(
        f"{path}: no 'features' (wsi, CLAM, TRIDENT) or 'feats' (STAMP) dataset "
        f"(found: {_names(h5) or 'nothing'})"
    )


def _names(h5: Any) -> str:
    return ", ".join(sorted(h5.keys()))


def _read_features(h5: Any, name: str, path: Path) -> np.ndarray:
    features = _read_2d(h5[name], name, path)
    if features.dtype not in (np.float16, np.float32):
        if not np.issubdtype(features.dtype, np.number):
            raise WsiError(f"{path}: dataset '{name}' holds {features.dtype}, not numbers")
        features = features.astype(np.float32)
    return features


def _read_2d(dataset: Any, name: str, path: Path) -> np.ndarray:
    """A (N, X) array; CLAM sometimes saves (1, N, X)."""
    shape = dataset.shape
    if len(shape) == 3 and shape[0] == 1:
        array = np.asarray(dataset[0])
    elif len(shape) == 2:
        array = np.asarray(dataset[()])
    else:
        raise WsiError(
            f"{path}: dataset '{name}' has shape {shape}, expected (N, {'2' if name == 'coords' else 'D'})"
        )
    return array


def _as_level0_px(coords: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(coords.dtype, np.integer):
        return coords.astype(np.int64, copy=False)
    if not np.isfinite(coords).all():
        raise WsiError(f"{path}: 'coords' holds non-finite values")
    return np.rint(coords).astype(np.int64)


def _grid_stride(coords: np.ndarray) -> float:
    steps = [np.diff(np.unique(axis)) for axis in coords.T]
    positive = np.concatenate([s[s > 0] for s in steps])
    return float(positive.min()) if positive.size else 0.0


def _load_pt_features(path: Path) -> np.ndarray:
    import torch  # heavy: torch

    tensor = load_torch_data(path, kind="readable .pt feature file", allowed="only plain tensors are read")
    if not isinstance(tensor, torch.Tensor):
        raise WsiError(f"{path}: expected one (N, D) tensor, found {type(tensor).__name__}")
    if tensor.dim() == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 2:
        raise WsiError(f"{path}: tensor has shape {tuple(tensor.shape)}, expected (N, D)")
    if tensor.dtype not in (torch.float16, torch.float32):
        tensor = tensor.float()
    return tensor.numpy()


def _attrs(attrs: Any) -> dict[str, Any]:
    return {key: _from_attr(value) for key, value in attrs.items()}


def _from_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _float_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _int_or_none(value: Any) -> int | None:
    number = _float_or_none(value)
    return round(number) if number is not None else None
