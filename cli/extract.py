"""`wsi extract`: tile stores -> feature bags. Parses options and calls wsi_pipeline.extract."""

from pathlib import Path

import typer

from cli.common import DebugOption, console, user_errors


def extract(
    tiles_dir: Path = typer.Argument(..., help="Folder of tile stores (<slide_id>.zarr) made by wsi tile."),
    out: Path = typer.Option(Path("features"), "--out", help="Folder for the feature bags (<slide_id>.h5)."),
    model: str | None = typer.Option(
        None, "--model", help="Extractor: retccl (default) or timm:<architecture>."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Extractor weights: a state dict (.pt/.pth) or .safetensors file."
    ),
    random_init: bool = typer.Option(
        False, "--random-init", help="Run without weights on purpose (demos, tests); recorded in every bag."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Tiles per forward pass \\[default: 64]."
    ),
    workers: str | None = typer.Option(
        None,
        "--workers",
        help="Processes reading tiles, or auto (1 on CPU; cores - 1, at most 16, on CUDA) \\[default: auto].",
    ),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda \\[default: auto]."),
    dtype: str | None = typer.Option(
        None, "--dtype", help="Stored features: float16 | float32 \\[default: float16]."
    ),
    precision: str | None = typer.Option(
        None,
        "--precision",
        help="Compute: auto (bf16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16.",
    ),
    slides_root: Path | None = typer.Option(
        None, "--slides-root", help="Find slides by file name under this folder (they moved since tiling)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute bags that already exist."),
    config: Path | None = typer.Option(
        None, "--config", help="YAML file of settings (see configs/extract.yaml)."
    ),
    backend: str = typer.Option(
        "local",
        "--backend",
        help="local: slides one after the other here; ray: one Ray task per slide (needs the cluster extra).",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help=(
            "Ray cluster to run on: HEAD:6379, auto, or ray://HEAD:10001 \\[default: RAY_ADDRESS, "
            "else start Ray on this machine]. Tile stores, slides and --out must be on a file system "
            "all nodes share."
        ),
    ),
    gpus_per_task: float | None = typer.Option(
        None,
        "--gpus-per-task",
        help="With --backend ray on CUDA: the GPU share each slide task reserves \\[default: 1].",
    ),
    debug: bool = DebugOption,
) -> None:
    """Encode every tile of every tile store into a feature bag (features N x D, coords N x 2 level-0 px).

    Complete bags are kept, so re-running resumes; a bag is redone when its tile store changed.

    A slide that fails is reported and the others go on; the exit code is 1 if any failed.
    """
    with user_errors(debug):
        from wsi_pipeline.backends import parse_backend
        from wsi_pipeline.batch import exit_code, print_summary
        from wsi_pipeline.config import load_config
        from wsi_pipeline.extract.config import ExtractConfig
        from wsi_pipeline.extract.run import SUMMARY_COLUMNS, extract_stores

        settings = load_config(
            ExtractConfig,
            config,
            {
                "model": model,
                "weights": weights,
                "random_init": random_init or None,
                "batch_size": batch_size,
                "workers": workers,
                "device": device,
                "dtype": dtype,
                "precision": precision,
                "slides_root": slides_root,
                "overwrite": overwrite or None,
            },
        )
        run_on = parse_backend(backend, address, gpus_per_task=gpus_per_task)
        outcomes = extract_stores(tiles_dir, out, settings, console, debug=debug, backend=run_on)
        print_summary(console, "wsi extract", outcomes, SUMMARY_COLUMNS)
        code = exit_code(outcomes)
    if code:
        raise typer.Exit(code)
