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
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    n = len(coords)
    stat = slide.stat()
    meta = TileStoreMeta(
        slide_id=slide_id_for(slide),
        slide_path=str(slide),
        slide_bytes=stat.st_size,
        slide_mtime=stat.st_mtime,
        mpp_level0=mpp,
        mpp_source="metadata",
        tile_px=TILE_PX,
        tile_um=TILE_UM,
        tile_px_level0=tile_px_level0,
        read_level=level,
        read_downsample=read_downsample,
        thumbnail_downsample=1.0,
        tissue_method="test",
        thresholds={},
        n_candidates=n,
        n_kept=n,
        rejected={"tissue": 0},
        wsi_version=__version__,
    )
    path = store_path(tiles_dir, meta.slide_id)
    write_tile_store(
        path,
        TileStore(
            coords=coords,
            tissue_fraction=np.ones(n, np.float32),
            blur_score=np.ones(n, np.float32),
            thumbnail=thumbnail,
            tissue_mask=np.ones(thumbnail.shape[:2], bool),
            meta=meta,
        ),
    )
    return path


def torchvision_resnet50_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ResNet-50 in the layout of the RetCCL checkpoint: torchvision keys, no fc (318 tensors)."""
    import torchvision

    torch.manual_seed(seed)
    state = torchvision.models.resnet50(weights=None).state_dict()
    return {k: v for k, v in state.items() if not k.startswith("fc.")}
