"""`wsi tile SLIDES... --out DIR`: slides to tile stores (`DIR/<slide_id>.zarr`) and QC images."""

from pathlib import Path

import typer

from cli.common import DebugOption, console, user_errors
from wsi_pipeline.tiling.config import TileConfig

_DEFAULTS = TileConfig()


def _help(text: str, key: str) -> str:
    """Options default to None ("not given", so a --config file can set them); help shows the real default.

    The backslash keeps rich from reading "[default: ...]" as markup.
    """
    return f"{text} \\[default: {getattr(_DEFAULTS, key)}]"


def tile(
    slides: list[Path] = typer.Argument(
        ...,
        show_default=False,
        help="Slide files, or folders searched recursively for slides (.svs, .tif, .ndpi, .mrxs, ...).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for <slide_id>.zarr stores and <slide_id>.qc.png."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="YAML file of settings (keys as in configs/tile.yaml); options override it.",
    ),
    tile_um: float | None = typer.Option(
        None, "--tile-um", help=_help("Tile side on the glass, in µm.", "tile_um")
    ),
    tile_px: int | None = typer.Option(
        None, "--tile-px", help=_help("Tile side in pixels after resizing.", "tile_px")
    ),
    mpp: float | None = typer.Option(
        None,
        "--mpp",
        help="µm per level-0 pixel, used only for slides whose files record no resolution.",
    ),
    tissue_method: str | None = typer.Option(
        None,
        "--tissue-method",
        help=_help(
            "otsu (saturation, scikit-image) or tiatoolbox (its MorphologicalMasker; slow import).",
            "tissue_method",
        ),
    ),
    min_tissue: float | None = typer.Option(
        None,
        "--min-tissue",
        help=_help("Keep grid tiles with at least this tissue fraction.", "min_tissue"),
    ),
    white_gray: int | None = typer.Option(
        None,
        "--white-gray",
        help=_help("Grayscale at or above which a pixel counts as bright.", "white_gray"),
    ),
    max_white_fraction: float | None = typer.Option(
        None,
        "--max-white-fraction",
        help=_help(
            "Reject a tile when more than this fraction of its pixels is bright.", "max_white_fraction"
        ),
    ),
    min_edge_fraction: float | None = typer.Option(
        None,
        "--min-edge-fraction",
        help=_help(
            "Reject a tile as blurry when fewer than this fraction of pixels are Canny edges.",
            "min_edge_fraction",
        ),
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-j",
        min=1,
        help=(
            "CPU cores to use: slides run in parallel processes, spare cores read tiles in threads "
            "\\[default: 1]. With --backend ray: the cores of the Ray started here \\[default: all]."
        ),
    ),
    backend: str = typer.Option(
        "local",
        "--backend",
        help="local: this machine's processes; ray: one Ray task per slide (needs the cluster extra).",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help=(
            "Ray cluster to run on: HEAD:6379, auto, or ray://HEAD:10001 \\[default: RAY_ADDRESS, "
            "else start Ray on this machine]. Slides and --out must be on a file system all nodes share."
        ),
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Re-tile slides whose complete store exists."),
    debug: bool = DebugOption,
) -> None:
    """Tile slides: tissue mask, a grid of TILE-UM squares, white and blur filters, QC images.

    Writes OUT/<slide_id>.zarr (tile coordinates in level-0 pixels, scores, thumbnail, mask, settings),
    OUT/<slide_id>.qc.png and OUT/tile_config.yaml. Complete stores are skipped on a re-run; a bad slide is
    reported and the others are tiled; the exit code is 1 if any slide failed.
    """
    with user_errors(debug):
        from wsi_pipeline.backends import parse_backend
        from wsi_pipeline.batch import exit_code
        from wsi_pipeline.config import load_config
        from wsi_pipeline.slides.discover import find_slides
        from wsi_pipeline.tiling.runner import tile_slides

        settings = load_config(
            TileConfig,
            config,
            {
                "tile_um": tile_um,
                "tile_px": tile_px,
                "mpp": mpp,
                "tissue_method": tissue_method,
                "min_tissue": min_tissue,
                "white_gray": white_gray,
                "max_white_fraction": max_white_fraction,
                "min_edge_fraction": min_edge_fraction,
            },
        )
        run_on = parse_backend(backend, address, local_cpus=workers)
        slide_paths = find_slides(slides)
        outcomes = tile_slides(
            slide_paths,
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
    raise typer.Exit(exit_code(outcomes))
