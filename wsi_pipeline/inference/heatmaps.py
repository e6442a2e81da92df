"""Per-slide heatmaps: scores painted over the slide thumbnail (PNG), one polygon per tile (GeoJSON), and a
strip of the top-scoring tiles read from the slide.

Memory stays bounded on 100k-tile slides: scores are painted into a raster the size of the thumbnail
(never the slide), and the GeoJSON is streamed to disk one feature at a time. Every file is written to a
temporary name and renamed when complete.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsi_pipeline.errors import WsiError
from wsi_pipeline.ids import is_slide_file, slide_id_for
from wsi_pipeline.slides import open_slide
from wsi_pipeline.stores.atomic import atomic_path
from wsi_pipeline.stores.tile_store import read_tile_store

# Several thousand tiles per side are fine; this only guards against a corrupt coordinate.
_MAX_CANVAS_PX = 8192
_OUTLINE_GREY = 200


@dataclass(frozen=True)
class Canvas:
    image: np.ndarray  # (h, w, 3) uint8 background: the thumbnail, or white
    downsample: float  # level-0 px per canvas px
    source: str  # "thumbnail", "grid" (tile outlines) or "blank"


def tile_px_level0_of(meta: dict, coords: np.ndarray, path: Path) -> int:
    """The bag's tile side in level-0 px; bags that do not record it get the grid stride of their coords."""
    value = meta.get("tile_px_level0")
    if value:
        return int(value)
    steps = (
        np.concatenate([np.diff(np.unique(axis)) for axis in coords.T]) if len(coords) > 1 else np.array([])
    )
    steps = steps[steps > 0]
    if steps.size == 0:
        raise WsiError(f"{path}: bag records no tile_px_level0 and its coordinates give no grid stride")
    return int(steps.min())


def blank_canvas(coords: np.ndarray, tile_px_level0: int, max_px: int) -> Canvas:
    """A white canvas covering every tile, its longer side `max_px`."""
    extent = (
        coords.max(axis=0) + tile_px_level0 if len(coords) else np.array([tile_px_level0, tile_px_level0])
    )
    downsample = max(float(extent.max()) / max_px, 1e-9)
    width, height = (max(1, math.ceil(float(e) / downsample)) for e in extent)
    return Canvas(np.full((height, width, 3), 255, dtype=np.uint8), downsample, "blank")


def grid_canvas(coords: np.ndarray, tile_px_level0: int, max_px: int) -> Canvas:
    """A white canvas with the outline of every tile drawn in light grey: without a thumbnail, the tissue's
    shape still shows where the scores sit (and where there is no tile)."""
    canvas = blank_canvas(coords, tile_px_level0, max_px)
    image = canvas.image
    height, width = image.shape[:2]
    x0 = np.clip(np.floor(coords[:, 0] / canvas.downsample).astype(np.int64), 0, width - 1)
    y0 = np.clip(np.floor(coords[:, 1] / canvas.downsample).astype(np.int64), 0, height - 1)
    x1 = np.clip(
        np.ceil((coords[:, 0] + tile_px_level0) / canvas.downsample).astype(np.int64) - 1, x0, width - 1
    )
    y1 = np.clip(
        np.ceil((coords[:, 1] + tile_px_level0) / canvas.downsample).astype(np.int64) - 1, y0, height - 1
    )
    for i in range(len(coords)):
        image[y0[i], x0[i] : x1[i] + 1] = image[y1[i], x0[i] : x1[i] + 1] = _OUTLINE_GREY
        image[y0[i] : y1[i] + 1, x0[i]] = image[y0[i] : y1[i] + 1, x1[i]] = _OUTLINE_GREY
    return Canvas(image, canvas.downsample, "grid")


def outside_canvas(coords: np.ndarray, canvas: Canvas) -> np.ndarray:
    """(N,) bool: tiles whose top-left corner lies outside the area the canvas shows (level-0 px)."""
    height, width = canvas.image.shape[:2]
    extent_x, extent_y = width * canvas.downsample, height * canvas.downsample
    x, y = coords[:, 0], coords[:, 1]
    return (x < 0) | (y < 0) | (x >= extent_x) | (y >= extent_y)


def thumbnail_canvas(store_path: Path, max_px: int) -> Canvas:
    """The tile store's thumbnail, shrunk so its longer side is at most `max_px`."""
    store = read_tile_store(store_path)
    image, downsample = np.asarray(store.thumbnail), float(store.meta.thumbnail_downsample)
    height, width = image.shape[:2]
    if max(height, width) > max_px:
        factor = max(height, width) / max_px
        size = (max(1, round(width / factor)), max(1, round(height / factor)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
        downsample *= width / size[0]
    return Canvas(image, downsample, "thumbnail")


def paint_scores(
    shape_hw: tuple[int, int], coords: np.ndarray, tile_px_level0: int, scores: np.ndarray, downsample: float
) -> np.ndarray:
    """(h, w) float32 raster: each tile's score over its footprint, NaN where there is no tile.

    A tile smaller than a canvas pixel still paints that pixel, so sparse tiles never vanish.
    """
    height, width = shape_hw
    if height * width > _MAX_CANVAS_PX**2:
        raise WsiError(f"heatmap canvas {width}x{height} px is implausibly large; check the tile coordinates")
    raster = np.full((height, width), np.nan, dtype=np.float32)
    x0 = np.clip(np.floor(coords[:, 0] / downsample).astype(np.int64), 0, width - 1)
    y0 = np.clip(np.floor(coords[:, 1] / downsample).astype(np.int64), 0, height - 1)
    x1 = np.clip(np.ceil((coords[:, 0] + tile_px_level0) / downsample).astype(np.int64), x0 + 1, width)
    y1 = np.clip(np.ceil((coords[:, 1] + tile_px_level0) / downsample).astype(np.int64), y0 + 1, height)
    for i in range(len(coords)):
        raster[y0[i] : y1[i], x0[i] : x1[i]] = scores[i]
    return raster


# Methods whose scores are all >= 0 (attention weights); every other method is signed: for or against.
UNSIGNED_METHODS = ("attention",)
# Where no tile was scored: a diagonal line every _HATCH_PX canvas px, darkened to this fraction.
_HATCH_PX = 6
_HATCH_DARKEN = 0.6
_SCALE_BAR_UM = (50, 100, 200, 500, 1000, 2000, 5000, 10000)


def score_bound(scores: np.ndarray) -> float:
    """The colour scale's half-width for signed scores: the 99th percentile of |score|, so one outlier
    tile does not wash out the rest."""
    finite = np.abs(scores[np.isfinite(scores)])
    return float(np.quantile(finite, 0.99)) if finite.size and finite.max() > 0 else 1.0


def score_range(scores: np.ndarray, method: str, bound: float | None = None) -> tuple[float, float, str]:
    """Colour limits and map: signed scores on a diverging map centred on 0 (limits +-`bound`, default
    this slide's `score_bound`), attention weights on a sequential one."""
    finite = scores[np.isfinite(scores)]
    if method not in UNSIGNED_METHODS:
        bound = bound if bound is not None else score_bound(scores)
        return -bound, bound, "RdBu_r"
    if finite.size == 0:
        return 0.0, 1.0, "viridis"
    low, high = (float(v) for v in np.quantile(finite, [0.01, 0.99]))
    return low, (high if high > low else low + 1e-9), "viridis"


def greyed(image: np.ndarray) -> np.ndarray:
    """The slide in grey (float RGB): no colour of the map can be confused with eosin pink or haematoxylin
    purple, and both ends of the diverging map stand out against it."""
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat((255 - 0.8 * (255 - grey))[..., None], 3, axis=-1)


def blend(canvas: Canvas, raster: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """uint8 RGB: scored tiles coloured over the greyed slide; elsewhere the greyed slide under diagonal
    hatching, so tissue that was never tiled cannot pass for a tile that scored 0 (near-white)."""
    base = greyed(canvas.image)
    painted = np.isfinite(raster)[..., None]
    scored = alpha * colours + (1 - alpha) * base
    rows, cols = np.indices(raster.shape)
    hatch = ((rows + cols) % _HATCH_PX == 0)[..., None]
    untiled = np.where(hatch, _HATCH_DARKEN * base, base)
    return np.where(painted, scored, untiled).round().astype(np.uint8)


def scale_bar_um(width_px: int, downsample: float, mpp_level0: float) -> tuple[int, float]:
    """A round length in µm about a fifth of the image wide, and its length in canvas px."""
    um_per_px = downsample * mpp_level0
    target = width_px * um_per_px / 5
    length = min(_SCALE_BAR_UM, key=lambda um: abs(um - target))
    return length, length / um_per_px


def save_heatmap_png(
    path: Path,
    canvas: Canvas,
    raster: np.ndarray,
    title: str,
    method: str,
    alpha: float,
    *,
    explained_class: str | None = None,
    bound: float | None = None,
    mpp_level0: float | None = None,
) -> None:
    """The scores over the greyed slide, the tiled area outlined, a colour bar that says which way is
    evidence for `explained_class`, and a scale bar in µm when the slide's resolution is known.

    `bound`: one colour scale shared by a cohort (`--scale global`); None scales each slide to itself."""
    from matplotlib import colormaps  # heavy: matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib
    from matplotlib.cm import ScalarMappable  # heavy: matplotlib
    from matplotlib.colors import Normalize  # heavy: matplotlib
    from matplotlib.figure import Figure  # heavy: matplotlib

    vmin, vmax, cmap_name = score_range(raster, method, bound)
    norm, cmap = Normalize(vmin=vmin, vmax=vmax, clip=True), colormaps[cmap_name]
    colours = cmap(norm(np.nan_to_num(raster)), bytes=True)[..., :3].astype(np.float32)
    height, width = raster.shape
    scale = 8.0 / max(width, height)  # the longer side of the image is 8 inches at 100 dpi
    fig = Figure(figsize=(width * scale + 2.2, height * scale + 0.9), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.03, 0.76, 0.87))
    ax.imshow(blend(canvas, raster, colours, alpha))
    if np.isfinite(raster).any():
        ax.contour(np.isfinite(raster).astype(np.float32), levels=[0.5], colors="black", linewidths=0.6)
    ax.set_axis_off()
    scaled = "this slide" if bound is None else "shared by all slides"
    ax.set_title(f"{title}\ncolour scale: {scaled}; hatched: not tiled; outline: tiled area", fontsize=9)
    if mpp_level0:
        um, bar_px = scale_bar_um(width, canvas.downsample, mpp_level0)
        x0, y0 = 0.03 * width, 0.96 * height
        ax.plot([x0, x0 + bar_px], [y0, y0], color="black", linewidth=3, solid_capstyle="butt")
        ax.text(x0, y0 - 0.015 * height, f"{um:g} µm", fontsize=8, va="bottom")
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04, pad=0.02)
    _label_colorbar(colorbar, method, explained_class)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.1)


def _label_colorbar(colorbar: object, method: str, explained_class: str | None) -> None:
    """Signed maps say in words which end is evidence for the class and which against it."""
    target = explained_class or "the predicted class"
    if method in UNSIGNED_METHODS:
        colorbar.set_label(f"{method} weight (how much each tile is read, not for or against)", fontsize=8)
        return
    colorbar.set_label(f"tile score ({method})", fontsize=8)
    colorbar.ax.text(
        0.5, 1.02, f"towards\n{target}", transform=colorbar.ax.transAxes, ha="center", va="bottom", fontsize=8
    )
    colorbar.ax.text(
        0.5, -0.02, f"away from\n{target}", transform=colorbar.ax.transAxes, ha="center", va="top", fontsize=8
    )


def _number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else "null"


def write_tiles_geojson(
    path: Path, coords: np.ndarray, tile_px_level0: int, scores: np.ndarray, method: str
) -> None:
    """A FeatureCollection with one closed square Polygon per tile, in level-0 px (QuPath's coordinates).

    QuPath reads `objectType` and the `measurements` map (so the score is colourable with its measurement
    maps); `score` and `rank` are repeated as plain properties for other GIS tools.
    """
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    s = int(tile_px_level0)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [\n')
        for i, ((x, y), score) in enumerate(zip(coords.tolist(), scores.tolist(), strict=True)):
            ring = f"[[{x}, {y}], [{x + s}, {y}], [{x + s}, {y + s}], [{x}, {y + s}], [{x}, {y}]]"
            value = _number(score)
            fh.write(
                ("" if i == 0 else ",\n")
                + f'{{"type": "Feature", "geometry": {{"type": "Polygon", "coordinates": [{ring}]}}, '
                f'"properties": {{"objectType": "tile", "name": "tile {i}", "score": {value}, '
                f'"rank": {ranks[i]}, "measurements": {{"{method} score": {value}}}}}}}'
            )
        fh.write("\n]}\n")


def find_slide(slide_id: str, slide_path: str | None, slides_root: Path | None) -> Path | None:
    """The slide file behind a bag: under `slides_root` by file name or slide id, else its recorded path."""
    if slides_root is not None and slides_root.is_dir():
        if slide_path:
            candidate = slides_root / Path(slide_path).name
            if candidate.is_file():
                return candidate
        for candidate in sorted(slides_root.iterdir()):
            if is_slide_file(candidate) and slide_id_for(candidate) == slide_id:
                return candidate
    if slide_path and Path(slide_path).is_file():
        return Path(slide_path)
    return None


def top_tiles(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of at most `k` tiles with a positive score, highest first: a strip shows evidence *for* the
    class, never the least-against tiles of a slide that has fewer than `k` tiles for it."""
    order = np.argsort(-scores, kind="stable")[:k]
    return order[scores[order] > 0]


def save_top_tiles(
    path: Path,
    slide: Path,
    coords: np.ndarray,
    tile_px_level0: int,
    scores: np.ndarray,
    k: int,
    tile_px: int,
    title: str,
    *,
    explained_class: str | None = None,
) -> int:
    """A strip of the (at most) `k` highest positive-scoring tiles, read from the slide at about `tile_px`
    px each, titled `title` with the number actually shown; each tile labelled with its rank, score and
    level-0 position. Returns that number; 0 writes no file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib
    from matplotlib.figure import Figure  # heavy: matplotlib

    top = top_tiles(scores, k)
    if len(top) == 0:
        return 0
    images = []
    with open_slide(slide) as reader:
        level = reader.best_level_for_downsample(tile_px_level0 / tile_px)
        side = max(1, round(tile_px_level0 / reader.level_downsamples[level]))
        for i in top:
            region = reader.read_region(int(coords[i, 0]), int(coords[i, 1]), level, side, side)
            images.append(
                np.asarray(Image.fromarray(region).resize((tile_px, tile_px), Image.Resampling.BILINEAR))
            )
    fig = Figure(figsize=(1.6 * max(len(top), 3), 2.2), dpi=100)
    FigureCanvasAgg(fig)
    target = explained_class or "the predicted class"
    fig.suptitle(f"{title}: top {len(top)} tiles by evidence for {target}", fontsize=8)
    for rank, (i, image) in enumerate(zip(top, images, strict=True)):
        ax = fig.add_subplot(1, max(len(top), 3), rank + 1)
        ax.imshow(image)
        ax.set_title(f"#{rank + 1}  score {scores[i]:.3g}\nx {coords[i, 0]}, y {coords[i, 1]} px", fontsize=6)
        ax.set_axis_off()
    fig.text(
        0.5, 0.01, "x, y: the tile's top-left corner in level-0 pixels of the slide", ha="center", fontsize=6
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.1)
    return len(top)
