"""`wsi eval`: parse options, resolve the config, call `wsi_pipeline.evaluate.run_evaluation`."""

from enum import StrEnum
from pathlib import Path

import typer

from cli.common import DebugOption, console, user_errors


class Split(StrEnum):
    test = "test"
    val = "val"
    train = "train"
    all = "all"


class ScoreMethodChoice(StrEnum):
    """`wsi_pipeline.models.SCORE_METHODS` spelled out, so `--help` needs no torch import; a test keeps them equal."""

    attention = "attention"
    relevance = "relevance"
    layer_relevance = "layer_relevance"


def eval_(
    run: Path = typer.Option(..., "--run", help="Run folder made by `wsi train`."),
    features: Path = typer.Option(None, "--features", help="Folder of feature bags (default: the run's)."),
    labels: Path = typer.Option(None, "--labels", help="Labels CSV (default: the run's)."),
    split: Split = typer.Option(
        None, "--split", help="Slides to evaluate: test (default), val, train, or all (external cohort)."
    ),
    heatmaps: bool = typer.Option(
        None, "--heatmaps/--no-heatmaps", help="Write per-slide heatmaps (default on)."
    ),
    tiles: Path = typer.Option(
        None, "--tiles", help="Folder of tile stores, for thumbnails under the heatmaps."
    ),
    slides_root: Path = typer.Option(
        None, "--slides-root", help="Folder of the slides, for the top-k tile strips."
    ),
    top_k: int = typer.Option(
        None, "--top-k", min=0, help="Tiles in each top-scoring strip (default 8; 0 = none)."
    ),
    score_method: ScoreMethodChoice = typer.Option(
        None,
        "--score-method",
        help="Tile scores for the heatmaps (default: the model's own, see wsi_pipeline/models/README.md).",
    ),
    config: Path = typer.Option(None, "--config", help="YAML config; default configs/eval.yaml."),
    debug: bool = DebugOption,
) -> None:
    """Evaluate a run: AUROC with 95% CI, predictions, ROC plot, and per-slide heatmaps."""
    with user_errors(debug):
        from wsi_pipeline.batch import exit_code, print_summary
        from wsi_pipeline.config import load_config
        from wsi_pipeline.evaluate import EvalConfig, run_evaluation
        from wsi_pipeline.evaluate.config import default_config_file

        overrides = {
            "features": features,
            "labels": labels,
            "split": split.value if split is not None else None,
            "heatmaps": heatmaps,
            "tiles": tiles,
            "slides_root": slides_root,
            "top_k": top_k,
            "score_method": score_method.value if score_method is not None else None,
        }
        cfg = load_config(EvalConfig, config or default_config_file(), overrides)
        result = run_evaluation(cfg, run, console=console)
        print_summary(console, "wsi eval", result.outcomes, ["tiles", "label", "predicted"])
        typer.echo(result.final_line())
        code = exit_code(result.outcomes)
    if code:
        raise typer.Exit(code)
