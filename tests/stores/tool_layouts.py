"""Feature bags written the way STAMP, CLAM and TRIDENT write them, from one of our bags.

Each writer copies its tool's h5 writer (as of their public repositories, April 2026):

- STAMP `src/stamp/preprocessing/__init__.py`: datasets `coords` (N, 2) float32 **µm** of each tile's
  top-left and `feats` (N, D) float16; root attributes `stamp_version`, `extractor`, `unit="um"`,
  `tile_size_um`, `tile_size_px`, `code_hash`, `feat_type="tile"`. No slide resolution is stored.
- CLAM `extract_features_fp.py` + `utils/file_utils.py:save_hdf5`: `features` (N, D) float32 and `coords`
  (N, 2) int32 level-0 px, chunked and resizable, **no attributes** (`attr_dict=None`); the patch size lives
  only in the separate patching h5.
- TRIDENT `trident/wsi_objects/WSI.py` + `trident/IO.py:coords_to_h5`: `features` (N, D) float32 with
  attributes `name`, `savetodir`, `encoder`; `coords` (N, 2) int64 level-0 px with `patch_size` (at the
  target magnification), `patch_size_level0`, `level0_magnification`, `target_magnification`, `overlap`,
  `name`, `savetodir`, `level0_width`, `level0_height`.
"""

from pathlib import Path

import h5py
import numpy as np


def write_stamp_bag(
    path: Path, features: np.ndarray, coords_level0: np.ndarray, mpp: float, tile_um: float, tile_px: int
) -> None:
    with h5py.File(path, "w") as h5:
        h5["coords"] = (coords_level0 * mpp).astype(np.float32)
        h5["feats"] = features.astype(np.float16)
        h5.attrs["stamp_version"] = "2.3.0"
        h5.attrs["extractor"] = "ctranspath"
        h5.attrs["unit"] = "um"
        h5.attrs["tile_size_um"] = tile_um
        h5.attrs["tile_size_px"] = tile_px
        h5.attrs["code_hash"] = "0123abcd"
        h5.attrs["feat_type"] = "tile"


def write_clam_bag(path: Path, features: np.ndarray, coords_level0: np.ndarray) -> None:
    with h5py.File(path, "w") as h5:
        for key, value in (
            ("features", features.astype(np.float32)),
            ("coords", coords_level0.astype(np.int32)),
        ):
            h5.create_dataset(
                key,
                shape=value.shape,
                maxshape=(None, *value.shape[1:]),
                chunks=(32, *value.shape[1:]),
                dtype=value.dtype,
            )[:] = value


def write_trident_bag(
    path: Path,
    features: np.ndarray,
    coords_level0: np.ndarray,
    patch_size_level0: int,
    level0_wh: tuple[int, int],
) -> None:
    name = path.stem
    with h5py.File(path, "w") as h5:
        feats = h5.create_dataset("features", data=features.astype(np.float32))
        feats.attrs.update({"name": name, "savetodir": str(path.parent), "encoder": "uni_v1"})
        coords = h5.create_dataset("coords", data=coords_level0.astype(np.int64))
        coords.attrs.update(
            {
                "patch_size": patch_size_level0 // 2,
                "patch_size_level0": patch_size_level0,
                "level0_magnification": 40,
                "target_magnification": 20,
                "overlap": 0,
                "name": name,
                "savetodir": str(path.parent),
                "level0_width": level0_wh[0],
                "level0_height": level0_wh[1],
            }
        )
