"""Extracting one slide's feature bag, start to finish: the unit of work of every backend.

The batch (`run.py`) decides in the driver whether a slide needs doing and where its file is, and hands
over a picklable `SlideTask` with absolute paths. `extract_slide(task, encoder)` streams the slide's tiles
through the encoder into its bag, written atomically. It runs in this process (the local backend) or as a
Ray task (`extract_slide_task`), which receives the extractor the driver built, once, through the object
store: every slide of a run is encoded by the same weights, random-init ones included, and the weights
file need not exist on the workers.
"""

import hashlib
import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from wsi_pipeline import __version__
from wsi_pipeline.batch import SlideOutcome
from wsi_pipeline.errors import SlideError, WsiError
from wsi_pipeline.extract.config import ExtractConfig
from wsi_pipeline.extract.dataset import TileDataset, collate_tiles
from wsi_pipeline.extract.engine import (
    Runtime,
    extract_into,
    prepare_model,
    resolve_batch_size,
    resolve_runtime,
)
from wsi_pipeline.extract.registry import Extractor
from wsi_pipeline.ids import check_slide_id
from wsi_pipeline.slides.reader import open_slide
from wsi_pipeline.stores.feature_bag import bag_path, write_bag
from wsi_pipeline.stores.tile_store import STORE_SUFFIX, TileStoreMeta, read_tile_store


@dataclass(frozen=True)
class SlideTask:
    """One slide to extract, as decided by the driver."""

    store_path: Path
    out_dir: Path
    config: ExtractConfig
    slide_path: Path  # found by the driver (a moved slide via --slides-root); unused for an empty store
    n_tiles: int
    loader_workers: int  # DataLoader processes reading this slide's tiles
    note: str = ""  # why an existing bag is redone
    tile_um: float = 0.0  # the store's geometry, for the run's one geometry warning
    tile_px: int = 0


@dataclass(frozen=True)
class Encoder:
    """An extractor ready on this process's device."""

    extractor: Extractor
    model: nn.Module
    runtime: Runtime
    batch_size: int


def prepare_encoder(extractor: Extractor, config: ExtractConfig) -> Encoder:
    runtime = resolve_runtime(config.device, config.precision, extractor.spec.precision)
    model = prepare_model(extractor.spec.model, runtime)
    batch_size = resolve_batch_size(config.batch_size, model, runtime, extractor.spec.input_px)
    return Encoder(extractor, model, runtime, batch_size)


def store_fingerprint(meta: TileStoreMeta, coords: np.ndarray) -> str:
    """Identifies the tiles a bag was computed from: the slide file as tiled, the geometry, every coordinate."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "slide_bytes": meta.slide_bytes,
                "slide_mtime": meta.slide_mtime,
                "n_tiles": int(coords.shape[0]),
                "tile_px": meta.tile_px,
                "tile_px_level0": meta.tile_px_level0,
                "read_level": meta.read_level,
                "read_downsample": meta.read_downsample,
            },
            sort_keys=True,
        ).encode()
    )
    digest.update(np.ascontiguousarray(coords, dtype="<i8").tobytes())
    return digest.hexdigest()


def extract_slide(
    task: SlideTask, encoder: Encoder, advance: Callable[[int], None] | None = None
) -> SlideOutcome:
    """Write the bag of `task`'s store; raises (one-line `WsiError`s for the slide's own problems)."""
    started = time.perf_counter()
    store = read_tile_store(task.store_path)
    meta, coords = store.meta, store.coords
    slide_id = check_slide_id(meta.slide_id)
    n_tiles = int(coords.shape[0])
    out = bag_path(task.out_dir, slide_id)
    fingerprint = store_fingerprint(meta, coords)
    if n_tiles == 0:
        with write_bag(
            out,
            coords=coords,
            feature_dim=encoder.extractor.feature_dim,
            dtype=task.config.dtype,
            attrs=_bag_attrs(task, encoder, meta, Path(meta.slide_path), fingerprint),
        ):
            pass
        warning = (
            f"{slide_id}: its tile store has 0 tiles (rejected: {meta.rejected}); "
            f"wrote an empty 0 x {encoder.extractor.feature_dim} bag"
        )
        return SlideOutcome(
            slide_id,
            "done",
            "0 tiles: empty bag",
            time.perf_counter() - started,
            {"tiles": 0, "warning": warning},
        )
    _check_slide(task.slide_path, meta)
    extract_started = time.perf_counter()
    _extract_bag(out, task, encoder, meta, coords, fingerprint, advance or (lambda count: None))
    seconds = time.perf_counter() - extract_started
    return SlideOutcome(
        slide_id,
        "done",
        task.note,
        time.perf_counter() - started,
        {"tiles": n_tiles, "tiles/s": n_tiles / seconds},
    )


def failed_outcome(task: SlideTask, exc: BaseException, seconds: float) -> SlideOutcome:
    """A slide's failure as its summary row: the error's message on one line."""
    slide_id = task.store_path.name.removesuffix(STORE_SUFFIX)
    if isinstance(exc, WsiError | OSError):
        reason = " ".join(str(exc).split())
    else:
        reason = " ".join(
            f"unexpected {type(exc).__name__}: {exc} (re-run with --debug for the traceback)".split()
        )
    return SlideOutcome(slide_id, "failed", reason, seconds, {"tiles": task.n_tiles})


def extract_slide_task(task: SlideTask, extractor: Extractor) -> SlideOutcome:
    """Ray entry point: never raises for the slide's own errors, and keeps the traceback for --debug."""
    import ray  # heavy: ray (optional extra `cluster`)

    started = time.perf_counter()
    # The CPUs Ray reserved for this task, whatever torch read from the environment when it was imported.
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, math.floor(cpus)))
    try:
        return extract_slide(task, prepare_encoder(extractor, task.config))
    except Exception as exc:
        outcome = failed_outcome(task, exc, time.perf_counter() - started)
        outcome.fields["traceback"] = traceback.format_exc()
        return outcome


def _extract_bag(
    out: Path,
    task: SlideTask,
    encoder: Encoder,
    meta: TileStoreMeta,
    coords: np.ndarray,
    fingerprint: str,
    advance: Callable[[int], None],
) -> None:
    spec, config = encoder.extractor.spec, task.config
    dataset = TileDataset(task.slide_path, meta, coords, spec.transform)
    workers = min(task.loader_workers, math.ceil(len(coords) / encoder.batch_size))
    loader = DataLoader(
        dataset,
        batch_size=encoder.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_tiles,
        pin_memory=encoder.runtime.is_cuda,
        persistent_workers=False,
    )
    try:
        with write_bag(
            out,
            coords=coords,
            feature_dim=spec.feature_dim,
            dtype=config.dtype,
            attrs=_bag_attrs(task, encoder, meta, task.slide_path, fingerprint),
        ) as writer:
            extract_into(
                encoder.model, spec.transform, loader, encoder.runtime, writer, task.slide_path.name, advance
            )
    finally:
        dataset.close()


def _check_slide(slide_path: Path, meta: TileStoreMeta) -> None:
    """Open once here (closed again before workers fork) so a bad file fails with one clear line."""
    with open_slide(slide_path) as reader:
        if meta.read_level >= reader.level_count:
            raise SlideError(
                f"{slide_path.name}: the tile store reads level {meta.read_level}, but the slide "
                f"has {reader.level_count} levels; re-run wsi tile on it"
            )


def _bag_attrs(
    task: SlideTask, encoder: Encoder, meta: TileStoreMeta, slide_path: Path, fingerprint: str
) -> dict[str, Any]:
    extractor = encoder.extractor
    return {
        "slide_id": meta.slide_id,
        "slide_path": str(slide_path),
        **extractor.attrs(),
        "feature_dim": extractor.feature_dim,
        "dtype": task.config.dtype,
        "tile_px": meta.tile_px,
        "tile_um": meta.tile_um,
        "mpp_level0": meta.mpp_level0,
        "mpp_source": meta.mpp_source,
        "tile_px_level0": meta.tile_px_level0,
        "read_level": meta.read_level,
        "read_downsample": meta.read_downsample,
        "model_input_px": extractor.spec.input_px or meta.tile_px,
        "device": encoder.runtime.device.type,
        "precision": encoder.runtime.precision_name,
        "batch_size": encoder.batch_size,
        "tile_store": str(task.store_path),
        "tile_store_fingerprint": fingerprint,
        "wsi_version": __version__,
        "extract_config": task.config.model_dump(mode="json"),
    }
