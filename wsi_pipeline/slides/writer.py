"""Writing small whole-slide images: pyramidal, tiled, JPEG-compressed TIFFs with tifffile.

The demo cohort (`wsi_pipeline.demo`) writes crops of real slides with it, and the tests build slides with
exactly the property under test (a resolution or none, several pyramid levels, a vendor layout). Files are
written where they are asked for; callers that need "complete or absent" wrap it in `atomic_path`.

Layouts, and what OpenSlide 4 makes of them:

- "levels": a generic tiled TIFF, one top-level page per pyramid level (the later ones marked as reduced
  images), resolution tags in pixels per centimetre. OpenSlide: vendor `generic-tiff`, every level, and
  `openslide.mpp-x` from the tags; `mpp=None` writes no tags, so the slide has no resolution.
- "subifds": the pyramid in SubIFDs of the first page (the OME-TIFF convention). OpenSlide's generic
  reader sees level 0 only; tiatoolbox's readers see the pyramid.
- "aperio": an Aperio SVS, levels as top-level pages and an ImageDescription starting with
  `Aperio Image Library` that carries `MPP = ...` and/or `AppMag = ...`. OpenSlide: vendor `aperio`, mpp
  and objective power from the description (give `mpp=None, objective_power=20` to test the fallback).
"""

from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile
from PIL import Image

Layout = Literal["levels", "subifds", "aperio"]
# Levels with a side below this are not written: no reader picks them, and JPEG needs a few blocks.
MIN_LEVEL_PX = 16


def write_slide(
    path: Path,
    image: np.ndarray,
    *,
    mpp: float | None = 0.5,
    objective_power: float | None = None,
    layout: Layout = "levels",
    downsamples: tuple[int, ...] = (1, 2, 4),
    tile_px: int = 256,
    jpeg_quality: int = 90,
) -> Path:
    """Write `image` (RGB uint8, level 0) as a tiled JPEG pyramid; returns `path`.

    `downsamples` are powers of two starting at 1; levels smaller than `MIN_LEVEL_PX` are dropped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    levels = [level for level in pyramid(image, downsamples) if min(level.shape[:2]) >= MIN_LEVEL_PX]
    options = {
        "tile": (tile_px, tile_px),
        "compression": "jpeg",
        "compressionargs": {"level": jpeg_quality},
        "photometric": "rgb",
        "metadata": None,
    }

    with tifffile.TiffWriter(path, bigtiff=image.nbytes > 2**31) as tiff:
        if layout == "aperio":
            for index, level in enumerate(levels):
                description = (
                    _aperio_description(image, tile_px, jpeg_quality, mpp, objective_power)
                    if index == 0
                    else f"Aperio Image Library\r\n{level.shape[1]}x{level.shape[0]} -> reduced level {index}"
                )
                tiff.write(level, description=description, subfiletype=0 if index == 0 else 1, **options)
        elif layout == "levels":
            for index, (level, downsample) in enumerate(zip(levels, downsamples, strict=False)):
                tiff.write(
                    level, subfiletype=0 if index == 0 else 1, **_resolution(mpp, downsample), **options
                )
        elif layout == "subifds":
            tiff.write(levels[0], subifds=len(levels) - 1, **_resolution(mpp, 1), **options)
            for level, downsample in zip(levels[1:], downsamples[1:], strict=False):
                tiff.write(level, subfiletype=1, **_resolution(mpp, downsample), **options)
        else:
            raise ValueError(f"unknown layout {layout!r}")
    return path


def pyramid(image: np.ndarray, downsamples: tuple[int, ...]) -> list[np.ndarray]:
    """Level images by 2x2 box averaging, as scanners build their pyramids."""
    if downsamples[0] != 1 or any(b != 2 * a for a, b in pairwise(downsamples)):
        raise ValueError(f"downsamples must be 1, 2, 4, ...; got {downsamples}")
    levels = [np.ascontiguousarray(image)]
    current = Image.fromarray(image)
    for _ in downsamples[1:]:
        current = current.reduce(2)
        levels.append(np.asarray(current))
    return levels


def _resolution(mpp: float | None, downsample: int) -> dict[str, object]:
    if mpp is None:
        return {}
    pixels_per_cm = 1e4 / (mpp * downsample)
    return {"resolution": (pixels_per_cm, pixels_per_cm), "resolutionunit": "CENTIMETER"}


def _aperio_description(
    image: np.ndarray, tile_px: int, quality: int, mpp: float | None, objective_power: float | None
) -> str:
    height, width = image.shape[:2]
    fields = [f"{width}x{height} [0,0 {width}x{height}] ({tile_px}x{tile_px}) JPEG/RGB Q={quality}"]
    if objective_power is not None:
        fields.append(f"AppMag = {objective_power:g}")
    if mpp is not None:
        fields.append(f"MPP = {mpp}")
    return "Aperio Image Library v12.0.15\r\n" + "|".join(fields)
