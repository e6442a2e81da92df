"""`wsi predict --slides`: tile and extract new slides exactly as the run's training bags were made.

Geometry, tissue filters and extractor come from the run's `extractor.json`, not from today's defaults:
a model trained on 256 µm tiles of one encoder must see 256 µm tiles of that encoder. The weights are
checked against the recorded fingerprint before any slide is read. Tiling and extraction are the stages'
own library calls, so they resume (complete stores and bags are skipped) and one bad slide fails alone.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from rich.console import Console

from wsi_pipeline.batch import SlideOutcome, print_summary
from wsi_pipeline.config import describe_validation_error
from wsi_pipeline.errors import ConfigError, WsiError
from wsi_pipeline.extract.config import ExtractConfig
from wsi_pipeline.extract.run import SUMMARY_COLUMNS, extract_stores
from wsi_pipeline.extract.weights import sha256_file
from wsi_pipeline.ids import slide_id_for
from wsi_pipeline.predict.config import PredictConfig
from wsi_pipeline.slides.discover import find_slides
from wsi_pipeline.stores.run_folder import EXTRACTOR_FILE, ExtractorIdentity
from wsi_pipeline.tiling.config import TileConfig
from wsi_pipeline.tiling.runner import tile_slides

TILES_DIR = "tiles"
FEATURES_DIR = "features"
RANDOM_INIT_PREFIX = "random-init:"
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class SlideFeatures:
    features: Path  # OUT/features
    tiles: Path  # OUT/tiles
    slide_ids: list[str]  # of this call's slides that have a bag to predict
    failed: list[SlideOutcome]  # slides that failed tiling or extraction


def tile_config_of(identity: ExtractorIdentity, mpp: float | None) -> TileConfig:
    """The run's tiling settings: geometry from its bags, filters from its tile stores when recorded."""
    if identity.tile_um is None or identity.tile_px is None:
        raise WsiError("the run's bags record no tile geometry (tile_um, tile_px); predict from --features")
    values = {k: v for k, v in identity.tiling.items() if k in TileConfig.model_fields and k != "mpp"}
    values.update(tile_um=identity.tile_um, tile_px=identity.tile_px, mpp=mpp)
    return _validated(TileConfig, values, "the run's tiling settings")


def extract_config_of(identity: ExtractorIdentity, cfg: PredictConfig) -> ExtractConfig:
    """The run's extraction settings with this call's weights and device."""
    values = {k: v for k, v in identity.extract_settings.items() if k in ExtractConfig.model_fields}
    values.update(
        model=identity.extractor,
        weights=cfg.weights,
        random_init=cfg.random_init,
        device="cpu" if cfg.device == "cpu" else "auto",
    )
    if identity.dtype:
        values["dtype"] = identity.dtype
    return _validated(ExtractConfig, values, "the run's extraction settings")


def _validated(model: type[M], values: dict[str, Any], source: str) -> M:
    try:
        return model(**values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from exc


def check_weights(identity: ExtractorIdentity, cfg: PredictConfig) -> str:
    """Refuse, before reading any slide, weights that cannot make the run's features; '' or a note.

    A weights file is compared by its SHA-256 (what `wsi extract` records). Random weights are only known
    once built, so with `random_init` each new bag's fingerprint is checked after extraction instead.
    """
    recorded = identity.weights_sha256
    if identity.extractor is None:
        raise WsiError(f"the run's {EXTRACTOR_FILE} names no extractor; predict from --features instead")
    random_run = str(recorded).startswith(RANDOM_INIT_PREFIX)
    if cfg.random_init:
        mismatch = "" if recorded is None or random_run else "--random-init (random weights)"
    elif cfg.weights is not None:
        if not cfg.weights.is_file():
            raise WsiError(f"{cfg.weights}: no such weights file")
        digest = sha256_file(cfg.weights)
        mismatch = "" if recorded in (None, digest) else f"weights_sha256 {digest[:16]}..."
    else:
        what = (
            "its weights were random: pass --random-init"
            if random_run
            else f"pass --weights W (the run's bags were made with weights sha256 {str(recorded)[:16]}...)"
        )
        raise WsiError(f"--slides: the run's extractor {identity.extractor} needs weights; {what}")
    if not mismatch:
        return ""
    message = f"--slides: {mismatch} differs from the run's weights_sha256 {str(recorded)[:16]}... ({identity.extractor})"
    if not cfg.allow_extractor_mismatch:
        raise WsiError(
            f"{message}; these weights do not make the run's features (--allow-extractor-mismatch)"
        )
    return message


def features_from_slides(
    cfg: PredictConfig, identity: ExtractorIdentity, out_dir: Path, console: Console, debug: bool
) -> SlideFeatures:
    """Tile and extract `cfg.slides` into OUT/tiles and OUT/features; the failures as outcomes."""
    tile_cfg, extract_cfg = tile_config_of(identity, cfg.mpp), extract_config_of(identity, cfg)
    note = check_weights(identity, cfg)
    if note:
        console.print(f"[yellow]warning:[/] {note}; predicting anyway (--allow-extractor-mismatch)")
    slides = find_slides(cfg.slides)
    tiles, features = out_dir / TILES_DIR, out_dir / FEATURES_DIR
    tiled = tile_slides(slides, tiles, tile_cfg, workers=cfg.tile_workers, debug=debug, console=console)
    failed = [o for o in tiled if o.status == "failed"]
    if len(failed) == len(tiled):
        return SlideFeatures(features, tiles, [], failed)
    extracted = extract_stores(tiles, features, extract_cfg, console, debug=debug)
    print_summary(console, "wsi extract", extracted, SUMMARY_COLUMNS)
    failed_ids = {o.slide_id for o in failed}
    failed += [o for o in extracted if o.status == "failed" and o.slide_id not in failed_ids]
    ids = []
    for slide in slides:
        try:
            ids.append(slide_id_for(slide))
        except WsiError:
            continue  # tiling reported it
    bad = {o.slide_id for o in failed}
    return SlideFeatures(features, tiles, [s for s in ids if s not in bad], failed)
