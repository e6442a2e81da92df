"""`wsi eval`: parse options, resolve the config, call `wsi_pipeline.evaluate.run_evaluation`."""

from pathlib import Path

import typer

from cli.common import (
    ConfigOption,
    DebugOption,
    PrintConfigOption,
    console,
    field_choices,
    field_help,
    literal_choices,
    resolved_settings,
    user_errors,
)
from wsi_pipeline.batch import exit_code, print_summary
from wsi_pipeline.evaluate.config import EvalConfig
from wsi_pipeline.models.config import ScoreMethod

# The models' own list of score methods (`wsi_pipeline.models.config`, torch-free: `--help` stays instant),
# and the choices of the config model's own Literal types (`wsi_pipeline/evaluate/config.py`).
ScoreMethodChoice = literal_choices("ScoreMethodChoice", ScoreMethod)
Split = field_choices(EvalConfig, "split")
Level = field_choices(EvalConfig, "level")
HeatmapScale = field_choices(EvalConfig, "heatmap_scale")


def _help(key: str) -> str:
    return field_help(EvalConfig, key)


def eval_(
    run: Path = typer.Option(..., "--run", help="Run folder made by `wsi train`."),
    features: Path = typer.Option(None, "--features", help=_help("features")),
    labels: Path = typer.Option(None, "--labels", help=_help("labels")),
    split: Split = typer.Option(None, "--split", help=_help("split")),
    include_seen: bool = typer.Option(None, "--include-seen", help=_help("include_seen")),
    level: Level = typer.Option(None, "--level", help=_help("level")),
    out: Path = typer.Option(None, "--out", help=_help("out")),
    heatmaps: bool = typer.Option(None, "--heatmaps/--no-heatmaps", help=_help("heatmaps")),
    tiles: Path = typer.Option(None, "--tiles", help=_help("tiles")),
    slides_root: Path = typer.Option(None, "--slides-root", help=_help("slides_root")),
    top_k: int = typer.Option(None, "--top-k", min=0, help=_help("top_k")),
    score_method: ScoreMethodChoice = typer.Option(None, "--score-method", help=_help("score_method")),
    scale: HeatmapScale = typer.Option(None, "--scale", help=_help("heatmap_scale")),
    threads: int = typer.Option(None, "--threads", min=1, help=_help("threads")),
    config: Path = ConfigOption,
    show_config: bool = PrintConfigOption,
    debug: bool = DebugOption,
) -> None:
    """Evaluate a run: AUROC with 95% CI, predictions, ROC plot, and per-slide heatmaps."""
    with user_errors(debug):
        columns = ["tiles", "label", "predicted", "scored by"]

        cfg = resolved_settings(EvalConfig, config, {**locals(), "heatmap_scale": scale}, show_config)
        from wsi_pipeline.evaluate.run import NoSlideEvaluated, run_evaluation  # heavy: torch, matplotlib

        try:
            result = run_evaluation(cfg, run, console=console)
        except NoSlideEvaluated as exc:
            print_summary(console, "wsi eval", exc.outcomes, columns)
            raise
        print_summary(console, "wsi eval", result.outcomes, columns)
        for line in result.report_lines():
            console.print(line, highlight=False, soft_wrap=True)
        typer.echo(result.final_line())
        code = exit_code(result.outcomes)
    if code:
        raise typer.Exit(code)
