"""`wsi extract`: tile stores -> feature bags. Parses options and calls wsi_pipeline.extract.

Option help comes from `ExtractConfig` (descriptions and defaults), so each default is stated once.
"""

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli.common import (
    ConfigOption,
    DebugOption,
    PrintConfigOption,
    console,
    field_choices,
    resolved_settings,
    setting_option,
    user_errors,
)
from wsi_pipeline.backends import parse_backend
from wsi_pipeline.batch import exit_code, print_summary
from wsi_pipeline.errors import ConfigError
from wsi_pipeline.extract.catalog import model_table
from wsi_pipeline.extract.config import ExtractConfig

Device = field_choices(ExtractConfig, "device")
Dtype = field_choices(ExtractConfig, "dtype")
Precision = field_choices(ExtractConfig, "precision")
StainNorm = field_choices(ExtractConfig, "stain_norm")


def _setting(key: str, extra: str = "") -> Any:
    return setting_option(ExtractConfig, key, extra=extra)


TILES_DIR = typer.Argument(
    None, help="Folder of tile stores (<slide_id>.zarr) made by wsi tile.", show_default=False
)
OUT = typer.Option(Path("features"), "--out", help="Folder for the feature bags (<slide_id>.h5).")
MODEL = _setting(
    "model", "Built in: retccl, uni, uni2-h, virchow2, h-optimus-0, h-optimus-1, gigapath, ctranspath."
)
EXTRACTOR_SPEC = _setting("extractor_spec")
LIST_MODELS = typer.Option(
    False, "--list-models", help="Print the extractors (dim, input px, µm/px, licence) and exit."
)
WEIGHTS = _setting("weights")
RANDOM_INIT = typer.Option(
    False, "--random-init", help="Run without weights on purpose (demos, tests); recorded in every bag."
)
BATCH_SIZE = _setting("batch_size")
WORKERS = _setting("workers")
THREADS = _setting("threads")
DEVICE = _setting("device")
DTYPE = _setting("dtype")
PRECISION = _setting("precision")
STAIN_NORM = _setting("stain_norm")
STAIN_TARGET = _setting("stain_target")
SLIDES_ROOT = _setting("slides_root")
OVERWRITE = typer.Option(False, "--overwrite", help="Recompute bags that already exist.")
BACKEND = typer.Option(
    "local",
    "--backend",
    help="local: slides one after the other here; ray: one Ray task per slide (needs the cluster extra).",
)
ADDRESS = typer.Option(
    None,
    "--address",
    help=(
        "Ray cluster to run on: HEAD:6379, auto, or ray://HEAD:10001 \\[default: RAY_ADDRESS, "
        "else start Ray on this machine]. Tile stores, slides and --out must be on a file system "
        "all nodes share."
    ),
)
GPUS_PER_TASK = typer.Option(
    None,
    "--gpus-per-task",
    help="With --backend ray on CUDA: the GPU share each slide task reserves \\[default: 1].",
)


def extract(
    tiles_dir: Path | None = TILES_DIR,
    out: Path = OUT,
    model: str | None = MODEL,
    extractor_spec: Path | None = EXTRACTOR_SPEC,
    list_models: bool = LIST_MODELS,
    weights: Path | None = WEIGHTS,
    random_init: bool = RANDOM_INIT,
    batch_size: str | None = BATCH_SIZE,
    workers: str | None = WORKERS,
    threads: int | None = THREADS,
    device: Device | None = DEVICE,
    dtype: Dtype | None = DTYPE,
    precision: Precision | None = PRECISION,
    stain_norm: StainNorm | None = STAIN_NORM,
    stain_target: Path | None = STAIN_TARGET,
    slides_root: Path | None = SLIDES_ROOT,
    overwrite: bool = OVERWRITE,
    config: Path | None = ConfigOption,
    backend: str = BACKEND,
    address: str | None = ADDRESS,
    gpus_per_task: float | None = GPUS_PER_TASK,
    print_settings: bool = PrintConfigOption,
    debug: bool = DebugOption,
) -> None:
    """Encode every tile of every tile store into a feature bag (features N x D, coords N x 2 level-0 px).

    Complete bags are kept, so re-running resumes; a bag is redone when its tile store changed.

    A slide that fails is reported and the others go on; the exit code is 1 if any failed.
    """
    with user_errors(debug):
        if list_models:
            _print_models()
            return
        if model is not None and extractor_spec is not None:
            raise ConfigError("--model and --extractor-spec exclude each other")
        given = {**locals(), "random_init": random_init or None, "overwrite": overwrite or None}
        settings = resolved_settings(ExtractConfig, config, given, print_settings)
        if tiles_dir is None:
            raise ConfigError("missing TILES_DIR (a folder of tile stores made by wsi tile)")
        from wsi_pipeline.extract.run import SUMMARY_COLUMNS, extract_stores  # heavy: torch, timm

        run_on = parse_backend(backend, address, gpus_per_task=gpus_per_task)
        outcomes = extract_stores(tiles_dir, out, settings, console, debug=debug, backend=run_on)
        print_summary(console, "wsi extract", outcomes, SUMMARY_COLUMNS)
        code = exit_code(outcomes)
    if code:
        raise typer.Exit(code)


def _print_models() -> None:
    """The registered extractors as a table; imports only the recipes (no torch)."""
    rows = model_table()
    table = Table(title="wsi extract --model NAME --weights FILE (or timm:<architecture>, --extractor-spec)")
    for column in rows[0]:
        table.add_column(column, no_wrap=column != "licence")
    for row in rows:
        table.add_row(*row.values())
    Console().print(table)  # stdout: it is the command's output
