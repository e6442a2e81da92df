"""`wsi predict`: parse options, build the config, call `wsi_pipeline.predict.run_prediction`."""

from pathlib import Path

import typer

from cli.common import DebugOption, console, field_help, resolved_settings, user_errors
from cli.eval import HeatmapScale, ScoreMethodChoice
from wsi_pipeline.batch import exit_code, print_summary
from wsi_pipeline.predict.config import PredictConfig


def _help(key: str, extra: str = "") -> str:
    return field_help(PredictConfig, key, extra)


def predict(
    run: Path = typer.Option(..., "--run", help="Run folder made by `wsi train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for predictions.csv, heatmaps/, ..."),
    features: Path = typer.Option(None, "--features", help=_help("features")),
    slides: list[Path] = typer.Option(None, "--slides", help=_help("slides", "Repeat for several.")),
    patients: Path = typer.Option(None, "--patients", help=_help("patients")),
    fold: int = typer.Option(None, "--fold", min=0, help=_help("fold")),
    patient_level: bool = typer.Option(None, "--patient-level", help=_help("patient_level")),
    allow_extractor_mismatch: bool = typer.Option(
        None, "--allow-extractor-mismatch", help=_help("allow_extractor_mismatch")
    ),
    heatmaps: bool = typer.Option(None, "--heatmaps/--no-heatmaps", help=_help("heatmaps")),
    tiles: Path = typer.Option(None, "--tiles", help=_help("tiles")),
    slides_root: Path = typer.Option(None, "--slides-root", help=_help("slides_root")),
    top_k: int = typer.Option(None, "--top-k", min=0, help=_help("top_k")),
    score_method: ScoreMethodChoice = typer.Option(None, "--score-method", help=_help("score_method")),
    scale: HeatmapScale = typer.Option(None, "--scale", help=_help("heatmap_scale")),
    graph_max_tiles: int = typer.Option(None, "--graph-max-tiles", min=1, help=_help("graph_max_tiles")),
    weights: Path = typer.Option(None, "--weights", help=_help("weights")),
    random_init: bool = typer.Option(None, "--random-init", help=_help("random_init")),
    mpp: float = typer.Option(None, "--mpp", help=_help("mpp")),
    tile_workers: int = typer.Option(None, "--tile-workers", min=1, help=_help("tile_workers")),
    device: str = typer.Option(None, "--device", help=_help("device")),
    threads: int = typer.Option(None, "--threads", min=1, help=_help("threads")),
    debug: bool = DebugOption,
) -> None:
    """Predict new, unlabelled slides with a trained run (fold ensemble): predictions.csv and heatmaps."""
    with user_errors(debug):
        from wsi_pipeline.predict.run import SUMMARY_COLUMNS, run_prediction  # heavy: torch

        given = {**locals(), "slides": slides or None, "heatmap_scale": scale}
        cfg = resolved_settings(PredictConfig, None, given, show=False)
        result = run_prediction(cfg, run, out, console=console, debug=debug)
        print_summary(console, "wsi predict", result.outcomes, SUMMARY_COLUMNS)
        typer.echo(result.final_line())
        code = exit_code(result.outcomes)
    if code:
        raise typer.Exit(code)
