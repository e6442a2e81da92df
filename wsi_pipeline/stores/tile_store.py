"""The tile store `tiles/<slide_id>.zarr`: the contract between `wsi tile` and `wsi extract`.

Layout (docs/ARCHITECTURE.md, "Tile store"): arrays `coords` (N,2) int64 level-0 top-left (x, y), `tissue_fraction` (N,) float32,
`blur_score` (N,) float32 (the focus score the blur filter judged), `thumbnail` (h,w,3) uint8,
`tissue_mask` (h,w) bool (marker ink removed); attributes in `TileStoreMeta`. Written atomically as a whole folder, so a store under its final name is complete.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from wsi_pipeline.errors import WsiError
from wsi_pipeline.resolution import MppSource
from wsi_pipeline.stores.atomic import atomic_path

STORE_SUFFIX = ".zarr"


class TileStoreMeta(BaseModel):
    """Everything a later stage needs to re-read the same pixels, and what the filters did."""

    model_config = ConfigDict(extra="allow")

    slide_id: str
    slide_path: str
    slide_bytes: int
    slide_mtime: float
    mpp_level0: float
    mpp_source: MppSource
    tile_px: int
    tile_um: float
    tile_px_level0: int
    read_level: int
    read_downsample: float
    thumbnail_downsample: float
    tissue_method: str
    thresholds: dict[str, float]
    n_candidates: int
    n_kept: int
    rejected: dict[str, int]
    wsi_version: str
    # Share of the tissue mask covered by kept tiles; None in stores written before it was recorded.
    tissue_recall: float | None = None

    @field_validator("mpp_source", mode="before")
    @classmethod
    def _legacy_source_name(cls, value: Any) -> Any:
        """Stores written before `--mpp` was named a fallback say `override`; they stay readable."""
        return "fallback" if value == "override" else value


@dataclass(frozen=True)
class TileStore:
    coords: np.ndarray
    tissue_fraction: np.ndarray
    blur_score: np.ndarray
    thumbnail: np.ndarray
    tissue_mask: np.ndarray
    meta: TileStoreMeta

    @property
    def n_tiles(self) -> int:
        return int(self.coords.shape[0])


def store_path(out_dir: Path, slide_id: str) -> Path:
    return out_dir / f"{slide_id}{STORE_SUFFIX}"


def write_tile_store(path: Path, store: TileStore) -> None:
    """Write `store` to `path` atomically (replacing a previous store only once the new one is complete)."""
    import zarr  # heavy (about 1 s): loaded only when a store is read or written

    n = store.n_tiles
    if store.coords.shape != (n, 2) or store.tissue_fraction.shape != (n,) or store.blur_score.shape != (n,):
        raise ValueError("tile store arrays disagree on the number of tiles")
    with atomic_path(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        root.create_array("coords", data=np.ascontiguousarray(store.coords, dtype=np.int64))
        root.create_array("tissue_fraction", data=store.tissue_fraction.astype(np.float32))
        root.create_array("blur_score", data=store.blur_score.astype(np.float32))
        root.create_array("thumbnail", data=np.ascontiguousarray(store.thumbnail, dtype=np.uint8))
        root.create_array("tissue_mask", data=store.tissue_mask.astype(bool))
        root.attrs.update(store.meta.model_dump(mode="json"))


def read_tile_store_meta(path: Path) -> TileStoreMeta:
    import zarr  # heavy (about 1 s): loaded only when a store is read or written

    try:
        root = zarr.open_group(str(path), mode="r")
        return TileStoreMeta.model_validate(dict(root.attrs))
    except Exception as exc:
        raise WsiError(f"{path}: not a readable tile store ({type(exc).__name__}: {exc})") from exc


def read_tile_store(path: Path) -> TileStore:
    import zarr  # heavy (about 1 s): loaded only when a store is read or written

    meta = read_tile_store_meta(path)
    try:
        root = zarr.open_group(str(path), mode="r")
        arrays = {
            name: np.asarray(root[name][...])
            for name in ("coords", "tissue_fraction", "blur_score", "thumbnail", "tissue_mask")
        }
    except Exception as exc:
        raise WsiError(f"{path}: tile store is damaged ({type(exc).__name__}: {exc})") from exc
    return TileStore(meta=meta, **arrays)


def list_tile_stores(tiles_dir: Path) -> list[Path]:
    """The complete stores in `tiles_dir` (hidden temporaries of a killed run are not stores)."""
    if not tiles_dir.is_dir():
        raise WsiError(f"{tiles_dir}: no such folder of tile stores")
    return sorted(
        p
        for p in tiles_dir.iterdir()
        if p.is_dir() and p.name.endswith(STORE_SUFFIX) and not p.name.startswith(".")
    )
