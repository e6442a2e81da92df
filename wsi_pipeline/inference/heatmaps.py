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

from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.atomic import atomic_path

# Several thousand tiles per side are fine; this only guards against a corrupt coordinate.
_MAX_CANVAS_PX = 8192


@dataclass(frozen=True)
class Canvas:
    image: np.ndarray  # (h, w, 3) uint8 background: the thumbnail, or white
    downsample: float  # level-0 px per canvas px
    source: str  # "thumbnail" or "blank"


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


def thumbnail_canvas(store_path: Path, max_px: int) -> Canvas:
    """The tile store's thumbnail, shrunk so its longer side is at most `max_px`."""
    from PIL import Image

    from wsi_pipeline.stores.tile_store import read_tile_store

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


def score_range(scores: np.ndarray, method: str) -> tuple[float, float, str]:
    """Colour limits and colour map: relevances are signed (diverging, centred on 0), attention is not."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return 0.0, 1.0, "inferno"
    if method in ("relevance", "layer_relevance"):
        bound = float(np.quantile(np.abs(finite), 0.99)) or 1.0
        return -bound, bound, "RdBu_r"
    low, high = (float(v) for v in np.quantile(finite, [0.01, 0.99]))
    return low, (high if high > low else low + 1e-9), "inferno"


def save_heatmap_png(
    path: Path, canvas: Canvas, raster: np.ndarray, title: str, method: str, alpha: float
) -> None:
    """The scores blended over the canvas (one image, so drawing costs one resample), a colour bar, a title."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    vmin, vmax, cmap_name = score_range(raster, method)
    norm, cmap = Normalize(vmin=vmin, vmax=vmax, clip=True), colormaps[cmap_name]
    painted = np.isfinite(raster)[..., None]
    colours = cmap(norm(np.nan_to_num(raster)), bytes=True)[..., :3].astype(np.float32)
    mixed = alpha * colours + (1 - alpha) * canvas.image.astype(np.float32)
    blended = np.where(painted, mixed, canvas.image).round().astype(np.uint8)

    height, width = raster.shape
    scale = 8.0 / max(width, height)  # the longer side of the image is 8 inches at 120 dpi
    fig = Figure(figsize=(width * scale + 1.6, height * scale + 0.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.02, 0.8, 0.9))
    ax.imshow(blended)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04, pad=0.02)
    colorbar.set_label(f"tile score ({method})", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


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
    from wsi_pipeline.ids import is_slide_file, slide_id_for

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


def save_top_tiles(
    path: Path,
    slide: Path,
    coords: np.ndarray,
    tile_px_level0: int,
    scores: np.ndarray,
    k: int,
    tile_px: int,
    title: str,
) -> None:
    """A strip of the `k` highest-scoring tiles, read from the slide at about `tile_px` px each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    from wsi_pipeline.slides import open_slide

    top = np.argsort(-scores, kind="stable")[:k]
    images = []
    with open_slide(slide) as reader:
        level = reader.best_level_for_downsample(tile_px_level0 / tile_px)
        side = max(1, round(tile_px_level0 / reader.level_downsamples[level]))
        for i in top:
            region = reader.read_region(int(coords[i, 0]), int(coords[i, 1]), level, side, side)
            images.append(
                np.asarray(Image.fromarray(region).resize((tile_px, tile_px), Image.Resampling.BILINEAR))
            )
    fig = Figure(figsize=(1.6 * len(top), 2.0), dpi=150)
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=8)
    for rank, (i, image) in enumerate(zip(top, images, strict=True)):
        ax = fig.add_subplot(1, len(top), rank + 1)
        ax.imshow(image)
        ax.set_title(f"#{rank + 1} {scores[i]:.3g}\n({coords[i, 0]}, {coords[i, 1]})", fontsize=6)
        ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
