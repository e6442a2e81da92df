"""`wsi tile SLIDES... --out DIR`: slides to tile stores (`DIR/<slide_id>.zarr`) and QC images.

Options are module-level constants so that the command's signature stays one line per option; each
setting's option defaults to None ("not given", so a --config file can set it) and its help shows the
default stated in `TileConfig` (`cli.common.setting_option`).
"""

from pathlib import Path
from typing import Any

import typer

from cli.common import (
    ConfigOption,
    DebugOption,
    PrintConfigOption,
    console,
    resolved_settings,
    setting_option,
    user_errors,
)
from wsi_pipeline.backends import parse_backend
from wsi_pipeline.batch import SlideOutcome, exit_code
from wsi_pipeline.tiling.config import TileConfig


def _setting(key: str) -> Any:
    return setting_option(TileConfig, key)


SLIDES = typer.Argument(
    ...,
    show_default=False,
    help=(
        "Slide files, or folders searched recursively for slides (.svs, .tif, .ndpi, .mrxs, ...) and plain "
        "images (.png, .jpg; these need --mpp)."
    ),
)
OUT = typer.Option(..., "--out", "-o", help="Folder for <slide_id>.zarr stores and <slide_id>.qc.png.")
TILE_UM = _setting("tile_um")
TILE_PX = _setting("tile_px")
MPP = typer.Option(
    None,
    "--mpp",
    help=(
        "µm per level-0 pixel: a fallback, used only for slides (and plain images) whose files record no "
        "resolution. A value more than 25% off the file's own resolution is reported and ignored unless "
        "--mpp-override is given."
    ),
)
MPP_OVERRIDE = typer.Option(
    False, "--mpp-override", help="Use --mpp even for slides whose files record a resolution."
)
TISSUE_METHOD = _setting("tissue_method")
MIN_TISSUE = _setting("min_tissue")
MAX_INK_FRACTION = _setting("max_ink_fraction")
WHITE_GRAY = _setting("white_gray")
MAX_WHITE_FRACTION = _setting("max_white_fraction")
MIN_EDGE_FRACTION = _setting("min_edge_fraction")
MIN_FOCUS = _setting("min_focus")
WORKERS = typer.Option(
    None,
    "--workers",
    "--threads",
    "-j",
    min=1,
    help=(
        "CPU cores to use (--threads is the same option, as in every stage): slides run in parallel "
        "processes, spare cores read tiles in threads "
        "\\[default: 1]. With --backend ray: the cores of the Ray started here \\[default: all]."
    ),
)
BACKEND = typer.Option(
    "local",
    "--backend",
    help="local: this machine's processes; ray: one Ray task per slide (needs the cluster extra).",
)
ADDRESS = typer.Option(
    None,
    "--address",
    help=(
        "Ray cluster to run on: HEAD:6379, auto, or ray://HEAD:10001 \\[default: RAY_ADDRESS, "
        "else start Ray on this machine]. Slides and --out must be on a file system all nodes share."
    ),
)
OVERWRITE = typer.Option(False, "--overwrite", help="Re-tile slides whose complete store exists.")


def tile(
    slides: list[Path] = SLIDES,
    out: Path = OUT,
    config: Path | None = ConfigOption,
    tile_um: float | None = TILE_UM,
    tile_px: int | None = TILE_PX,
    mpp: float | None = MPP,
    mpp_override: bool = MPP_OVERRIDE,
    tissue_method: str | None = TISSUE_METHOD,
    min_tissue: float | None = MIN_TISSUE,
    max_ink_fraction: float | None = MAX_INK_FRACTION,
    white_gray: int | None = WHITE_GRAY,
    max_white_fraction: float | None = MAX_WHITE_FRACTION,
    min_edge_fraction: float | None = MIN_EDGE_FRACTION,
    min_focus: float | None = MIN_FOCUS,
    workers: int | None = WORKERS,
    backend: str = BACKEND,
    address: str | None = ADDRESS,
    overwrite: bool = OVERWRITE,
    show_config: bool = PrintConfigOption,
    debug: bool = DebugOption,
) -> None:
    """Tile slides: tissue and ink masks, a grid of TILE-UM squares, white and blur filters, QC images.

    Writes OUT/<slide_id>.zarr (tile coordinates in level-0 pixels, scores, thumbnail, mask, settings,
    tissue recall), OUT/<slide_id>.qc.png and OUT/tile_config.yaml. Complete stores are skipped on a
    re-run; a bad slide is reported and the others are tiled; the exit code is 1 if any slide failed.
    """
    options = {**locals(), "mpp_override": mpp_override or None}
    with user_errors(debug):
        settings = resolved_settings(TileConfig, config, options, show_config)
        outcomes = _run(slides, out, settings, workers, backend, address, overwrite, debug)
    raise typer.Exit(exit_code(outcomes))


def _run(
    slides: list[Path],
    out: Path,
    settings: TileConfig,
    workers: int | None,
    backend: str,
    address: str | None,
    overwrite: bool,
    debug: bool,
) -> list[SlideOutcome]:
    """Slides and the batch; prints each QC image's path (stdout) for slides that have one."""
    from wsi_pipeline.slides.discover import find_slides  # heavy: numpy, PIL (the slide readers)
    from wsi_pipeline.tiling.runner import tile_slides  # heavy: numpy, PIL (the tiling stack)

    run_on = parse_backend(backend, address, local_cpus=workers)
    outcomes = tile_slides(
        find_slides(slides),
        out,
        settings,
        workers=workers or 1,
        overwrite=overwrite,
        debug=debug,
        console=console,
        backend=run_on,
    )
    for outcome in outcomes:
        if outcome.status != "failed" and "qc" in outcome.fields:
            typer.echo(outcome.fields["qc"])
    return outcomes
