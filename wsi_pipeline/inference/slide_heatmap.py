"""One slide's heatmap files: the PNG over the thumbnail, the GeoJSON for QuPath, and the top-k strip.

`wsi eval` and `wsi predict` both call `write_slide_heatmap`, so a map looks the same whichever made it;
only the title (true label or not, fold or ensemble) is the caller's.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_pipeline.inference import heatmaps as hm
from wsi_pipeline.inference.fold_models import FoldModel
from wsi_pipeline.stores.tile_store import store_path

HEATMAP_DIR = "heatmaps"
STRIP_TILE_PX = 224


@dataclass(frozen=True)
class HeatmapSettings:
    tiles: Path | None  # folder of tile stores, for thumbnails
    slides_root: Path | None  # folder of the slides, for the top-k strips
    top_k: int
    score_method: str | None  # None: the model's default
    canvas_max_px: int
    overlay_alpha: float


def write_slide_heatmap(
    folder: Path,
    slide_id: str,
    bag: Any,
    x: torch.Tensor,
    fm: FoldModel,
    title: str,
    settings: HeatmapSettings,
) -> str:
    """Write the PNG, GeoJSON and (when the slide is reachable) top-k strip; return a note or ''."""
    method = settings.score_method or fm.model.default_score_method
    scores = fm.model.tile_scores(x, method=method)[0].cpu().numpy()
    coords = bag.coords
    tile_px = hm.tile_px_level0_of(bag.meta, coords, Path(bag.meta.get("path", slide_id)))
    canvas = None
    if settings.tiles is not None and store_path(settings.tiles, slide_id).is_dir():
        canvas = hm.thumbnail_canvas(store_path(settings.tiles, slide_id), settings.canvas_max_px)
    canvas = canvas or hm.blank_canvas(coords, tile_px, settings.canvas_max_px)
    raster = hm.paint_scores(canvas.image.shape[:2], coords, tile_px, scores, canvas.downsample)
    hm.save_heatmap_png(folder / f"{slide_id}.png", canvas, raster, title, method, settings.overlay_alpha)
    hm.write_tiles_geojson(folder / f"{slide_id}.geojson", coords, tile_px, scores, method)
    if settings.top_k == 0:
        return ""
    slide = hm.find_slide(slide_id, bag.meta.get("slide_path"), settings.slides_root)
    if slide is None:
        return "slide not reachable: no top-k strip"
    hm.save_top_tiles(
        folder / f"{slide_id}.topk.png",
        slide,
        coords,
        tile_px,
        np.asarray(scores),
        settings.top_k,
        STRIP_TILE_PX,
        f"{slide_id}: top {settings.top_k} tiles ({method})",
    )
    return ""
