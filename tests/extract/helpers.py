"""Tile stores over the real test slides, made directly with the tile-store contract (not with `wsi tile`)."""

from pathlib import Path

import numpy as np
import torch

from wsi_pipeline import __version__
from wsi_pipeline.ids import slide_id_for
from wsi_pipeline.slides import open_slide
from wsi_pipeline.stores.tile_store import TileStore, TileStoreMeta, store_path, write_tile_store

DATA = Path(__file__).resolve().parents[1] / "data" / "slides"
CMU = DATA / "CMU-1-Small-Region.svs"  # one level, mpp 0.499
CMU_PYRAMID = DATA / "CMU-1-Small-Region_pyramid4.svs"  # 4 levels, same tissue
TILE_UM = 256.0
TILE_PX = 224
# Level-0 top-left corners of tissue tiles on the 513 px (256 µm) grid of CMU-1-Small-Region.
TISSUE_COORDS = np.array([[1026, 513], [1026, 1026], [513, 2052], [1026, 2052], [1539, 2052]], dtype=np.int64)


def make_store(tiles_dir: Path, slide: Path, coords: np.ndarray, *, level0_tile: bool = False) -> Path:
    """A store for `slide` keeping `coords`, with the geometry `wsi tile` records (README.md, `wsi tile`).

    The read level is the coarsest not coarser than the target scale, unless `level0_tile` forces level 0.
    """
    with open_slide(slide) as reader:
        mpp = float(reader.mpp_from_metadata)
        tile_px_level0 = round(TILE_UM / mpp)
        level = 0 if level0_tile else reader.best_level_for_downsample(tile_px_level0 / TILE_PX)
        read_downsample = reader.level_downsamples[level]
        thumbnail = reader.thumbnail(64)
    geometry = {"tile_px_level0": tile_px_level0, "read_level": level, "read_downsample": read_downsample}
    return write_kept_store(
        tiles_dir, slide, coords, mpp, thumbnail, slide_id=slide_id_for(slide), **geometry
    )


def write_kept_store(
    tiles_dir: Path,
    slide: Path,
    coords: np.ndarray,
    mpp: float,
    thumbnail: np.ndarray,
    *,
    slide_id: str,
    tissue_method: str = "test",
    **geometry: float,
) -> Path:
    """A store keeping every one of `coords` (no filter ran) with the given geometry (`tile_px_level0`,
    `read_level`, `read_downsample`; `tile_um` / `tile_px` default to TILE_UM / TILE_PX): what `wsi extract`
    reads, without running `wsi tile`. Also used by benchmarks/bench_extract.py."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    n, stat = len(coords), slide.stat()
    meta = TileStoreMeta(
        **{"tile_um": TILE_UM, "tile_px": TILE_PX, **geometry},
        slide_id=slide_id,
        slide_path=str(slide),
        slide_bytes=stat.st_size,
        slide_mtime=stat.st_mtime,
        mpp_level0=mpp,
        mpp_source="metadata",
        thumbnail_downsample=1.0,
        tissue_method=tissue_method,
        thresholds={},
        n_candidates=n,
        n_kept=n,
        rejected={},
        wsi_version=__version__,
    )
    path = store_path(tiles_dir, meta.slide_id)
    ones = np.ones(n, np.float32)
    mask = np.ones(thumbnail.shape[:2], bool)
    write_tile_store(
        path,
        TileStore(
            coords, tissue_fraction=ones, blur_score=ones, thumbnail=thumbnail, tissue_mask=mask, meta=meta
        ),
    )
    return path


def torchvision_resnet50_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ResNet-50 in the layout of the RetCCL checkpoint: torchvision keys, no fc (318 tensors)."""
    import torchvision

    torch.manual_seed(seed)
    state = torchvision.models.resnet50(weights=None).state_dict()
    return {k: v for k, v in state.items() if not k.startswith("fc.")}
