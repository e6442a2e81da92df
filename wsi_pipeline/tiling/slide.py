"""Tiling one slide, start to finish: the unit of work of every backend.

`tile_slide(job)` opens its own slide handle (OpenSlide handles must not cross a fork), takes and returns
only picklable values, and writes its outputs atomically, so the same function runs in this process, in a
process pool, or as a Ray task. Per slide: mpp (checked for plausibility before anything is read),
geometry, thumbnail, tissue and ink masks, grid placement, tissue and ink filters (`plan_slide`); then
every candidate tile is read at the best level, resized and judged by the white and blur filters; then the
QC image and the tile store are written, the store last because its presence means "done".
"""

import os
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
from wsi_pipeline.slides.mpp import mpp_disagreement
from wsi_pipeline.slides.tiles import read_tile
from wsi_pipeline.stores.atomic import write_bytes_atomic
from wsi_pipeline.stores.tile_store import TileStore, TileStoreMeta, store_path, write_tile_store
from wsi_pipeline.tiling.config import TileConfig
from wsi_pipeline.tiling.filters import TileVerdict, judge_tile
from wsi_pipeline.tiling.geometry import (
    TileGeometry,
    place_grid,
    plan_geometry,
    tissue_fractions,
    tissue_recall,
)
from wsi_pipeline.tiling.qc import QcTiles, render_qc_png
from wsi_pipeline.tiling.tissue import ink_mask, tissue_mask

QC_SUFFIX = ".qc.png"
# Filters in the order they run; a rejected tile is counted under the first that rejects it.
FILTERS = ("tissue", "ink", "white", "blur")
SUMMARY_LABELS = {"tissue": "low tissue", "ink": "ink", "white": "white", "blur": "blurry"}
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


@dataclass(frozen=True)
class SlidePlan:
    """What is decided from the thumbnail, before any tile is read."""

    mpp: float
    mpp_source: str
    mpp_warning: str
    geometry: TileGeometry
    level0_px: tuple[int, int]
    thumbnail: np.ndarray
    thumbnail_downsample: float
    tissue: np.ndarray  # tissue mask with marker ink removed
    ink: np.ndarray
    grid: np.ndarray
    fractions: np.ndarray  # tissue fraction of each grid tile
    is_tissue: np.ndarray  # grid tiles at or above min_tissue
    is_candidate: np.ndarray  # ... and not under ink: the tiles that are read

    @property
    def candidates(self) -> np.ndarray:
        return self.grid[self.is_candidate]


def qc_path(out_dir: Path, slide_id: str) -> Path:
    return out_dir / f"{slide_id}{QC_SUFFIX}"


def thumbnail_px_for(level0_px: tuple[int, int], tile_px_level0: int) -> int:
    longest = max(level0_px)
    wanted = THUMBNAIL_PX_PER_TILE * longest // max(tile_px_level0, 1)
    return int(min(max(wanted, THUMBNAIL_MIN_PX), THUMBNAIL_MAX_PX, longest))


def plan_slide(reader: SlideReader, cfg: TileConfig) -> SlidePlan:
    """Resolution, geometry, masks and grid; raises `SlideError` before any pixel is read when the
    resolution or the tile size is implausible."""
    mpp, mpp_source = resolve_mpp(reader, cfg.mpp, override=cfg.mpp_override)
    geometry = plan_geometry(reader, mpp, cfg.tile_um, cfg.tile_px)
    level0_px = reader.level0_px
    thumbnail = reader.thumbnail(thumbnail_px_for(level0_px, geometry.tile_px_level0))
    thumbnail_downsample = level0_px[0] / thumbnail.shape[1]
    thumbnail_mpp = mpp * thumbnail_downsample
    ink = ink_mask(thumbnail, thumbnail_mpp)
    tissue = tissue_mask(thumbnail, cfg.tissue_method, thumbnail_mpp) & ~ink
    grid, fractions = place_grid(tissue, level0_px, geometry.tile_px_level0, cfg.min_tissue)
    is_tissue = fractions >= cfg.min_tissue  # min_tissue 0: every grid tile is read
    ink_fractions = tissue_fractions(ink, level0_px, grid, geometry.tile_px_level0)
    return SlidePlan(
        mpp=mpp,
        mpp_source=mpp_source,
        mpp_warning=mpp_disagreement(reader, cfg.mpp, cfg.mpp_override),
        geometry=geometry,
        level0_px=level0_px,
        thumbnail=thumbnail,
        thumbnail_downsample=thumbnail_downsample,
        tissue=tissue,
        ink=ink,
        grid=grid,
        fractions=fractions,
        is_tissue=is_tissue,
        is_candidate=is_tissue & (ink_fractions <= cfg.max_ink_fraction),
    )


def tile_slide(job: SlideJob, on_progress: ProgressCallback | None = None) -> SlideOutcome:
    """Tile one slide into `job.out_dir`; raises `SlideError` (one line) when the slide cannot be tiled."""
    started = time.perf_counter()
    report = on_progress or (lambda kind, n: None)
    path = Path(job.slide_path)
    slide_id = slide_id_for(path)
    stat = path.stat()  # the version of the file that this store describes (resume compares it)
    with open_slide(path) as reader:
        plan = plan_slide(reader, job.config)
        report("candidates", len(plan.candidates))
        verdicts = judge_tiles(reader, plan.candidates, plan.geometry, job.config, job.threads, report)

    reasons = np.array([v.reason or "" for v in verdicts], dtype=object)
    kept = reasons == ""
    rejected = {
        "tissue": int((~plan.is_tissue).sum()),
        "ink": int((plan.is_tissue & ~plan.is_candidate).sum()),
        "white": int((reasons == "white").sum()),
        "blur": int((reasons == "blur").sum()),
    }
    recall = tissue_recall(plan.tissue, plan.level0_px, plan.candidates[kept], plan.geometry.tile_px_level0)
    qc_file = write_qc(job, slide_id, plan, reasons, rejected, recall)
    meta = store_meta(job, slide_id, stat, plan, rejected, int(kept.sum()), recall, qc_file.name)
    store = TileStore(
        coords=plan.candidates[kept],
        tissue_fraction=plan.fractions[plan.is_candidate][kept],
        blur_score=np.array([v.blur_score for v in verdicts if v.reason is None], dtype=np.float32),
        thumbnail=plan.thumbnail,
        tissue_mask=plan.tissue,
        meta=meta,
    )
    write_tile_store(store_path(job.out_dir, slide_id), store)
    notes = [plan.mpp_warning] if plan.mpp_warning else []
    if not kept.any():
        notes.append(zero_kept_reason(len(plan.grid), len(plan.candidates), rejected, job.config))
    return SlideOutcome(
        slide_id=slide_id,
        status="done",
        reason="; ".join(notes),
        seconds=time.perf_counter() - started,
        fields={
            **summary_fields(meta, job.out_dir),
            "tiles read": len(plan.candidates),
            "warning": bool(notes),  # printed as a WARNING line, not only in the summary
        },
    )


def write_qc(
    job: SlideJob,
    slide_id: str,
    plan: SlidePlan,
    reasons: np.ndarray,
    rejected: dict[str, int],
    recall: float,
) -> Path:
    """The QC image (see `qc`), written atomically; returns its path."""
    cfg, candidates = job.config, plan.candidates
    title = (
        f"{slide_id}: {plan.mpp:.4g} µm/px ({plan.mpp_source}), {cfg.tile_um:g} µm tiles at "
        f"{cfg.tile_px} px, read at level {plan.geometry.read_level} ({plan.geometry.read_px} px); "
        f"tissue recall {recall:.2f}"
    )
    qc_tiles = QcTiles(
        level0_px=plan.level0_px,
        tile_px_level0=plan.geometry.tile_px_level0,
        grid=plan.grid,
        kept=candidates[reasons == ""],
        rejected={
            "tissue": plan.grid[~plan.is_tissue & (plan.fractions > 0)],
            "ink": plan.grid[plan.is_tissue & ~plan.is_candidate],
            "white": candidates[reasons == "white"],
            "blur": candidates[reasons == "blur"],
        },
        counts=rejected,
    )
    qc_file = qc_path(job.out_dir, slide_id)
    write_bytes_atomic(qc_file, render_qc_png(plan.thumbnail, plan.tissue, plan.ink, qc_tiles, title))
    return qc_file


def store_meta(
    job: SlideJob,
    slide_id: str,
    stat: os.stat_result,
    plan: SlidePlan,
    rejected: dict[str, int],
    n_kept: int,
    recall: float,
    qc_name: str,
) -> TileStoreMeta:
    """The store's attributes: how to re-read the same pixels, and what the filters did."""
    cfg, geometry = job.config, plan.geometry
    return TileStoreMeta(
        slide_id=slide_id,
        slide_path=str(Path(job.slide_path).resolve()),
        slide_bytes=stat.st_size,
        slide_mtime=stat.st_mtime,
        mpp_level0=plan.mpp,
        mpp_source=plan.mpp_source,
        tile_px=cfg.tile_px,
        tile_um=cfg.tile_um,
        tile_px_level0=geometry.tile_px_level0,
        read_level=geometry.read_level,
        read_downsample=geometry.read_downsample,
        thumbnail_downsample=plan.thumbnail_downsample,
        tissue_method=cfg.tissue_method,
        thresholds=cfg.thresholds(),
        n_candidates=len(plan.candidates),
        n_kept=n_kept,
        rejected=rejected,
        wsi_version=__version__,
        tissue_recall=recall,
        n_grid=len(plan.grid),
        read_px=geometry.read_px,
        qc_png=qc_name,
        config=cfg.model_dump(mode="json"),
    )


def summary_fields(meta: TileStoreMeta, out_dir: Path) -> dict[str, object]:
    """A slide's cells in the summary table, from its store's attributes (also for skipped slides)."""
    return {
        "mpp": meta.mpp_level0,
        "mpp source": meta.mpp_source,
        "level": meta.read_level,
        "kept": meta.n_kept,
        "recall": "-" if meta.tissue_recall is None else f"{meta.tissue_recall:.2f}",
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
                tile_mpp=geometry.tile_um / geometry.tile_px,
                white_gray=cfg.white_gray,
                max_white_fraction=cfg.max_white_fraction,
                min_edge_fraction=cfg.min_edge_fraction,
                min_focus=cfg.min_focus,
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
    if n_candidates == 0 and rejected.get("ink"):
        return (
            f"0 tiles kept: {rejected['ink']} tissue tiles are under marker ink "
            f"(--max-ink-fraction {cfg.max_ink_fraction:g}) and the tissue filter removed the rest"
        )
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
            f"the blur filter removed {rejected['blur']} "
            f"(--min-edge-fraction {cfg.min_edge_fraction:g}, --min-focus {cfg.min_focus:g})"
        )
    return f"0 tiles kept of {n_candidates} tissue tiles: " + " and ".join(parts)
