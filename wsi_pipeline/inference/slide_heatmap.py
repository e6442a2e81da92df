"""One slide's heatmap files: the PNG over the thumbnail, the GeoJSON for QuPath, and the top-k strip.

`wsi eval` and `wsi predict` both call `write_slide_heatmap`, so a map looks the same whichever made it;
only the title (true label or not, fold or ensemble) is the caller's.
"""

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from wsi_pipeline.batch import SlideOutcome
from wsi_pipeline.errors import WsiError
from wsi_pipeline.inference import heatmaps as hm
from wsi_pipeline.inference.fold_models import FoldModel
from wsi_pipeline.inference.heatmap_settings import HeatmapSettings
from wsi_pipeline.slides import open_slide, resolve_mpp
from wsi_pipeline.stores.feature_bag import load_bag
from wsi_pipeline.stores.tile_store import read_tile_store_meta, store_path

HEATMAP_DIR = "heatmaps"
STRIP_TILE_PX = 224


@dataclass(frozen=True)
class MapSettings:
    """What drawing one slide's map needs: the command's heatmap options and where its tile stores are."""

    tiles: Path | None  # folder of tile stores, for thumbnails
    slides_root: Path | None  # folder of the slides, for the top-k strips
    top_k: int
    score_method: str | None  # None: the model's default
    canvas_max_px: int
    overlay_alpha: float

    @classmethod
    def of(cls, options: HeatmapSettings, tiles: Path | None) -> "MapSettings":
        """From `wsi eval`'s or `wsi predict`'s config (both are HeatmapSettings)."""
        return cls(
            tiles, options.slides_root, options.top_k, options.score_method, options.canvas_max_px,
            options.overlay_alpha,
        )  # fmt: skip


def write_slide_heatmap(
    folder: Path,
    slide_id: str,
    bag: Any,
    x: torch.Tensor,
    fm: FoldModel,
    title: str,
    settings: MapSettings,
    scores: np.ndarray | None = None,
    *,
    explained_class: str | None = None,
    bound: float | None = None,
) -> str:
    """Write the PNG, GeoJSON and (when the slide is reachable) top-k strip; return a note or ''.

    `scores` (N,) computed by the caller (an ensemble's, `inference.ensemble`) replace `fm`'s own, which
    then only names the default score method. `explained_class` names the class the scores are evidence
    for (colour bar, strip title); `bound` is a colour scale shared by a cohort (None: this slide's own).
    """
    method = settings.score_method or fm.model.default_score_method
    if scores is None:
        scores = fm.model.tile_scores(x, method=method)[0].cpu().numpy()
    coords = bag.coords
    tile_px = hm.tile_px_level0_of(bag.meta, coords, Path(bag.meta.get("path", slide_id)))
    canvas, raster = _painted(slide_id, coords, tile_px, np.asarray(scores), settings)
    hm.save_heatmap_png(
        folder / f"{slide_id}.png",
        canvas,
        raster,
        title,
        method,
        settings.overlay_alpha,
        explained_class=explained_class,
        bound=bound,
        mpp_level0=bag.meta.get("mpp_level0"),
    )
    hm.write_tiles_geojson(folder / f"{slide_id}.geojson", coords, tile_px, scores, method)
    if settings.top_k == 0:
        return ""
    slide = hm.find_slide(slide_id, bag.meta.get("slide_path"), settings.slides_root)
    if slide is None:
        return "slide not reachable: no top-k strip"
    shown = hm.save_top_tiles(
        folder / f"{slide_id}.topk.png",
        slide,
        coords,
        tile_px,
        np.asarray(scores),
        settings.top_k,
        STRIP_TILE_PX,
        f"{slide_id} ({method})",
        explained_class=explained_class,
    )
    return "" if shown else "no tile scored as evidence for the class: no top-k strip"


@dataclass(frozen=True)
class HeldMap:
    """A slide's map, scored but not drawn: its tiles' places and scores, never its features."""

    slide_id: str
    where: SimpleNamespace  # the bag's coords and meta
    fm: FoldModel
    title: str
    scores: np.ndarray
    explained_class: str
    settings: MapSettings


@dataclass
class CohortScaleMaps:
    """Where `wsi eval` and `wsi predict` send each slide's scored map. With `--scale slide` it is drawn at
    once on its own scale; with `--scale global` it is held back until every slide is scored, then drawn on
    one colour scale over all of them (`draw`), so that the same colour means the same score on every slide.
    Shared, so the two commands draw alike."""

    folder: Path
    scale: str  # HeatmapSettings.heatmap_scale: slide | global
    held: list[HeldMap] = field(default_factory=list)

    def write_or_hold(
        self,
        slide_id: str,
        bag: Any,
        fm: FoldModel,
        title: str,
        scores: np.ndarray,
        *,
        explained_class: str,
        settings: MapSettings,
    ) -> str:
        """The map's note ('' when fine, or when held: its note comes with `draw`)."""
        if self.scale != "global":
            return write_slide_heatmap(
                self.folder, slide_id, bag, torch.empty(0), fm, title, settings, scores,
                explained_class=explained_class,
            )  # fmt: skip
        where = SimpleNamespace(coords=bag.coords, meta=bag.meta)  # not the features: kept for every slide
        self.held.append(HeldMap(slide_id, where, fm, title, np.asarray(scores), explained_class, settings))
        return ""

    def draw(
        self, outcomes: list[SlideOutcome], describe: Callable[[BaseException], str]
    ) -> list[SlideOutcome]:
        """Draw the held maps on their common scale; each map's note joins its slide's reason, and a slide
        whose map fails becomes failed (`describe` words the error) without stopping the others."""
        if not self.held:
            return outcomes
        bound = hm.score_bound(np.concatenate([m.scores for m in self.held]))
        by_slide = {o.slide_id: o for o in outcomes}
        for m in self.held:
            done = by_slide[m.slide_id]
            try:
                note = write_slide_heatmap(
                    self.folder, m.slide_id, m.where, torch.empty(0), m.fm, m.title, m.settings, m.scores,
                    explained_class=m.explained_class, bound=bound,
                )  # fmt: skip
            except Exception as exc:  # one slide's failure must not stop the batch
                reason = f"heatmap: {describe(exc)}"
                by_slide[m.slide_id] = dataclasses.replace(done, status="failed", reason=reason)
                continue
            reason = "; ".join(r for r in (done.reason, note) if r)
            by_slide[m.slide_id] = dataclasses.replace(done, reason=reason)
        self.held.clear()
        return [by_slide[o.slide_id] for o in outcomes]


def _painted(
    slide_id: str, coords: np.ndarray, tile_px: int, scores: np.ndarray, settings: MapSettings
) -> tuple[hm.Canvas, np.ndarray]:
    """The canvas (the tile store's thumbnail, else an outline of the tile grid) and the scores painted on it."""
    canvas = None
    if settings.tiles is not None and store_path(settings.tiles, slide_id).is_dir():
        canvas = hm.thumbnail_canvas(store_path(settings.tiles, slide_id), settings.canvas_max_px)
    canvas = canvas or hm.grid_canvas(coords, tile_px, settings.canvas_max_px)
    inside = _inside_canvas(coords, canvas, slide_id)
    raster = hm.paint_scores(
        canvas.image.shape[:2], coords[inside], tile_px, scores[inside], canvas.downsample
    )
    return canvas, raster


# Tiles a canvas may miss (rounding at the slide's edge) before the map is refused as mis-registered.
MAX_OUTSIDE_FRACTION = 0.01


def _inside_canvas(coords: np.ndarray, canvas: hm.Canvas, slide_id: str) -> np.ndarray:
    """(N,) bool of the tiles the canvas shows; more than 1% outside means the coordinates do not fit the
    slide (wrong mpp or units), which clamping to the edge would hide."""
    outside = hm.outside_canvas(coords, canvas)
    n_outside = int(outside.sum())
    if n_outside > MAX_OUTSIDE_FRACTION * len(coords):
        height, width = canvas.image.shape[:2]
        raise WsiError(
            f"{slide_id}: {n_outside} of {len(coords)} tiles ({n_outside / len(coords):.0%}) lie outside the "
            f"slide's {canvas.source} ({round(width * canvas.downsample)}x{round(height * canvas.downsample)} "
            "level-0 px): check the bag's mpp and coordinate units (level-0 px; STAMP bags store µm)"
        )
    return ~outside


def slide_mpp(slide_id: str, meta: dict[str, Any], settings: MapSettings) -> float | None:
    """µm per level-0 pixel of the slide behind a bag that does not record it: from its tile store, else
    from the slide file itself; None when neither is reachable."""
    if settings.tiles is not None and store_path(settings.tiles, slide_id).is_dir():
        with contextlib.suppress(WsiError):
            return float(read_tile_store_meta(store_path(settings.tiles, slide_id)).mpp_level0)
    slide = hm.find_slide(slide_id, meta.get("slide_path"), settings.slides_root)
    if slide is None:
        return None
    try:
        with open_slide(slide) as reader:
            return resolve_mpp(reader, None)[0]
    except (WsiError, OSError):
        return None


def bag_with_level0_coords(bag: Any, path: Path, slide_id: str, settings: MapSettings) -> tuple[Any, str]:
    """The bag with coordinates in level-0 px, or (None, why not). A STAMP bag stores µm and no
    resolution: the tile store or the slide supplies it; without either the heatmap is skipped."""
    if bag.has_coords:
        return bag, ""
    if path.suffix.lower() == ".pt":
        return None, "a CLAM .pt feature file has no tile coordinates (give its .h5)"
    mpp = slide_mpp(slide_id, bag.meta, settings)
    if mpp is None:
        return None, (
            "the bag's coordinates are in µm and its resolution is unknown; give --tiles (tile stores) "
            "or --slides-root (slides) to read it from"
        )
    return load_bag(path, mpp_level0=mpp), ""
