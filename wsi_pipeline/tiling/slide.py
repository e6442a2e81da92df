"""Tiling one slide, start to finish: the unit of work of every backend.

`tile_slide(job)` opens its own slide handle (OpenSlide handles must not cross a fork), takes and returns
only picklable values, and writes its outputs atomically, so the same function runs in this process, in a
process pool, or as a Ray task. Per slide: mpp, geometry, thumbnail, tissue mask, grid, tissue filter;
then every candidate tile is read at the best level, resized and judged by the white and blur filters;
then the QC image and the tile store are written, the store last because its presence means "done".
"""

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_pipeline import __version__
from wsi_pipeline.batch import SlideOutcome
from wsi_pipeline.ids import slide_id_for
from wsi_pipeline.slides import SlideReader, open_slide, resolve_mpp
from wsi_pipeline.slides.tiles import read_tile
from wsi_pipeline.stores.atomic import write_bytes_atomic
from wsi_pipeline.stores.tile_store import TileStore, TileStoreMeta, store_path, write_tile_store
from wsi_pipeline.tiling.config import TileConfig
from wsi_pipeline.tiling.filters import TileVerdict, judge_tile
from wsi_pipeline.tiling.geometry import TileGeometry, grid_coords, plan_geometry, tissue_fractions
from wsi_pipeline.tiling.qc import QcTiles, render_qc_png
from wsi_pipeline.tiling.tissue import tissue_mask

QC_SUFFIX = ".qc.png"
# Filters in the order they run; a rejected tile is counted under the first that rejects it.
FILTERS = ("tissue", "white", "blur")
SUMMARY_LABELS = {"tissue": "low tissue", "white": "white", "blur": "blurry"}
# Thumbnail side: enough pixels per tile for a meaningful tissue fraction (8 across), within bounds that
# keep the mask detailed on small slides and the stored thumbnail small on huge ones.
THUMBNAIL_PX_PER_TILE = 8
THUMBNAIL_MIN_PX = 1024
THUMBNAIL_MAX_PX = 4096
# Tiles per unit of work for reader threads and per progress report.
CHUNK_TILES = 32

# Reports ("candidates", n) once the grid is filtered by tissue, then ("tiles", n) as tiles are judged.
ProgressCallback = Callable[[str, int], None]


@dataclass(frozen=True)
class SlideJob:
    slide_path: Path
    out_dir: Path
    config: TileConfig
    threads: int = 1  # reader threads for this slide's tiles (OpenSlide, PIL and the filters release the GIL)


def qc_path(out_dir: Path, slide_id: str) -> Path:
    return out_dir / f"{slide_id}{QC_SUFFIX}"


def thumbnail_px_for(level0_px: tuple[int, int], tile_px_level0: int) -> int:
    longest = max(level0_px)
    wanted = THUMBNAIL_PX_PER_TILE * longest // max(tile_px_level0, 1)
    return int(min(max(wanted, THUMBNAIL_MIN_PX), THUMBNAIL_MAX_PX, longest))


def tile_slide(job: SlideJob, on_progress: ProgressCallback | None = None) -> SlideOutcome:
    """Tile one slide into `job.out_dir`; raises `SlideError` (one line) when the slide cannot be tiled."""
    started = time.perf_counter()
    report = on_progress or (lambda kind, n: None)
    cfg = job.config
    path = Path(job.slide_path)
    slide_id = slide_id_for(path)
    stat = path.stat()  # the version of the file that this store describes (resume compares it)

    with open_slide(path) as reader:
        mpp, mpp_source = resolve_mpp(reader, cfg.mpp)
        geometry = plan_geometry(reader, mpp, cfg.tile_um, cfg.tile_px)
        thumbnail = reader.thumbnail(thumbnail_px_for(reader.level0_px, geometry.tile_px_level0))
        thumbnail_downsample = reader.level0_px[0] / thumbnail.shape[1]
        mask = tissue_mask(thumbnail, cfg.tissue_method, mpp * thumbnail_downsample)
        grid = grid_coords(reader.level0_px, geometry.tile_px_level0)
        fractions = tissue_fractions(mask, reader.level0_px, grid, geometry.tile_px_level0)
        is_candidate = fractions >= cfg.min_tissue
        candidates = grid[is_candidate]
        report("candidates", len(candidates))
        verdicts = judge_tiles(reader, candidates, geometry, cfg, job.threads, report)
        level0_px = reader.level0_px

    reasons = np.array([v.reason or "" for v in verdicts], dtype=object)
    kept = reasons == ""
    rejected = {
        "tissue": int((~is_candidate).sum()),
        "white": int((reasons == "white").sum()),
        "blur": int((reasons == "blur").sum()),
    }
    blur_scores = np.array([v.blur_score for v in verdicts if v.reason is None], dtype=np.float32)
    warning = zero_kept_reason(len(grid), len(candidates), rejected, cfg) if not kept.any() else ""

    # "um": PIL's bundled font has no µ.
    title = (
        f"{slide_id}: {mpp:.4g} um/px ({mpp_source}), {cfg.tile_um:g} um tiles at {cfg.tile_px} px, "
        f"read at level {geometry.read_level} ({geometry.read_px} px)"
    )
    qc_tiles = QcTiles(
        level0_px=level0_px,
        tile_px_level0=geometry.tile_px_level0,
        kept=candidates[kept],
        rejected={
            "tissue": grid[~is_candidate & (fractions > 0)],
            "white": candidates[reasons == "white"],
            "blur": candidates[reasons == "blur"],
        },
        counts=rejected,
    )
    qc_file = qc_path(job.out_dir, slide_id)
    write_bytes_atomic(qc_file, render_qc_png(thumbnail, mask, qc_tiles, title))

    meta = TileStoreMeta(
        slide_id=slide_id,
        slide_path=str(path.resolve()),
        slide_bytes=stat.st_size,
        slide_mtime=stat.st_mtime,
        mpp_level0=mpp,
        mpp_source=mpp_source,
        tile_px=cfg.tile_px,
        tile_um=cfg.tile_um,
        tile_px_level0=geometry.tile_px_level0,
        read_level=geometry.read_level,
        read_downsample=geometry.read_downsample,
        thumbnail_downsample=thumbnail_downsample,
        tissue_method=cfg.tissue_method,
        thresholds=cfg.thresholds(),
        n_candidates=len(candidates),
        n_kept=int(kept.sum()),
        rejected=rejected,
        wsi_version=__version__,
        n_grid=len(grid),
        read_px=geometry.read_px,
        qc_png=qc_file.name,
        config=cfg.model_dump(mode="json"),
    )
    store = TileStore(
        coords=candidates[kept],
        tissue_fraction=fractions[is_candidate][kept],
        blur_score=blur_scores,
        thumbnail=thumbnail,
        tissue_mask=mask,
        meta=meta,
    )
    write_tile_store(store_path(job.out_dir, slide_id), store)

    return SlideOutcome(
        slide_id=slide_id,
        status="done",
        reason=warning,
        seconds=time.perf_counter() - started,
        fields={**summary_fields(meta, job.out_dir), "tiles read": len(candidates)},
    )


def summary_fields(meta: TileStoreMeta, out_dir: Path) -> dict[str, object]:
    """A slide's cells in the summary table, from its store's attributes (also for skipped slides)."""
    return {
        "mpp": meta.mpp_level0,
        "mpp source": meta.mpp_source,
        "level": meta.read_level,
        "kept": meta.n_kept,
        **{SUMMARY_LABELS[f]: meta.rejected.get(f, 0) for f in FILTERS},
        "qc": str(qc_path(out_dir, meta.slide_id)),
    }


def judge_tiles(
    reader: SlideReader,
    coords: np.ndarray,
    geometry: TileGeometry,
    cfg: TileConfig,
    threads: int,
    report: ProgressCallback,
) -> list[TileVerdict]:
    """Read and judge every tile at `coords`, in order; with threads, each opens its own reader."""
    chunks = [coords[i : i + CHUNK_TILES] for i in range(0, len(coords), CHUNK_TILES)]

    def judge_chunk(chunk: np.ndarray, chunk_reader: SlideReader) -> list[TileVerdict]:
        return [
            judge_tile(
                read_tile(chunk_reader, geometry, x, y),  # the pixels `wsi extract` will see
                white_gray=cfg.white_gray,
                max_white_fraction=cfg.max_white_fraction,
                min_edge_fraction=cfg.min_edge_fraction,
            )
            for x, y in chunk
        ]

    verdicts: list[TileVerdict] = []
    if threads <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            verdicts.extend(judge_chunk(chunk, reader))
            report("tiles", len(chunk))
        return verdicts

    with ThreadReaders(reader.path) as reader_for_thread, ThreadPoolExecutor(threads) as pool:
        for chunk, chunk_verdicts in zip(
            chunks, pool.map(lambda c: judge_chunk(c, reader_for_thread()), chunks), strict=True
        ):
            verdicts.extend(chunk_verdicts)
            report("tiles", len(chunk))
    return verdicts


class ThreadReaders:
    """One slide handle per worker thread, all closed on exit (readers keep per-handle caches and state)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._opened: list[SlideReader] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Callable[[], SlideReader]:
        return self._get

    def _get(self) -> SlideReader:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = open_slide(self._path)
            self._local.reader = reader
            with self._lock:
                self._opened.append(reader)
        return reader

    def __exit__(self, *exc: object) -> None:
        for reader in self._opened:
            reader.close()


def zero_kept_reason(n_grid: int, n_candidates: int, rejected: dict[str, int], cfg: TileConfig) -> str:
    """Why a slide kept no tiles, naming the filter (and its option) that removed them."""
    if n_grid == 0:
        return f"0 tiles kept: the slide is smaller than one {cfg.tile_um:g} µm tile"
    if n_candidates == 0:
        return (
            f"0 tiles kept: the tissue filter removed all {n_grid} grid tiles "
            f"(--tissue-method {cfg.tissue_method} found no region with tissue >= --min-tissue {cfg.min_tissue:g})"
        )
    parts = []
    if rejected["white"]:
        parts.append(
            f"the white filter removed {rejected['white']} (--max-white-fraction {cfg.max_white_fraction:g})"
        )
    if rejected["blur"]:
        parts.append(
            f"the blur filter removed {rejected['blur']} (--min-edge-fraction {cfg.min_edge_fraction:g})"
        )
    return f"0 tiles kept of {n_candidates} tissue tiles: " + " and ".join(parts)
