"""`wsi train`: parse options, resolve the config, call `wsi_pipeline.train.run_training`."""

from pathlib import Path

import typer

from cli.common import (
    ConfigOption,
    DebugOption,
    PrintConfigOption,
    config_overrides,
    console,
    fail,
    field_choices,
    field_help,
    print_config,
    user_errors,
)
from wsi_pipeline.train.config import MODEL_DEFAULTS, TrainConfig, resolve_train_config

# The default shown for settings that some models set their own way.
PER_MODEL = "per model (`--model M --print-config` shows it)"
# Choices of the config model's own Literal types (`wsi_pipeline/train/config.py`).
FeatureNormChoice = field_choices(TrainConfig, "feature_norm")
SelectOnChoice = field_choices(TrainConfig, "select_on")
CacheChoice = field_choices(TrainConfig, "cache")


def _help(key: str) -> str:
    """The option's help from `TrainConfig`'s field; settings some models set their own way say so."""
    per_model = any(key in defaults for defaults in MODEL_DEFAULTS.values())
    return field_help(TrainConfig, key, default=PER_MODEL if per_model else None)


def train(
    features: Path = typer.Option(None, "--features", help=_help("features")),
    labels: Path = typer.Option(None, "--labels", help=_help("labels")),
    out: Path = typer.Option(..., "--out", help="Run folder to create, e.g. runs/NAME."),
    model: str = typer.Option(None, "--model", help=_help("model")),
    config: Path = ConfigOption,
    epochs: int = typer.Option(None, "--epochs", min=1, help=_help("epochs")),
    lr: float = typer.Option(None, "--lr", help=_help("lr")),
    weight_decay: float = typer.Option(None, "--weight-decay", help=_help("weight_decay")),
    l2: float = typer.Option(None, "--l2", help=_help("l2")),
    seed: int = typer.Option(None, "--seed", help=_help("seed")),
    folds: int = typer.Option(None, "--folds", min=1, help=_help("folds")),
    patience: int = typer.Option(None, "--patience", min=1, help=_help("patience")),
    device: str = typer.Option(None, "--device", help=_help("device")),
    max_tiles: int = typer.Option(None, "--max-tiles", min=1, help=_help("max_tiles")),
    cache: CacheChoice = typer.Option(None, "--cache", help=_help("cache")),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last finished epoch, or start it."
    ),
    allow_missing: bool = typer.Option(None, "--allow-missing", help=_help("allow_missing")),
    require_patient_id: bool = typer.Option(None, "--require-patient-id", help=_help("require_patient_id")),
    feature_norm: FeatureNormChoice = typer.Option(None, "--feature-norm", help=_help("feature_norm")),
    select_on: SelectOnChoice = typer.Option(None, "--select-on", help=_help("select_on")),
    min_epochs: int = typer.Option(None, "--min-epochs", min=1, help=_help("min_epochs")),
    ema_epochs: float = typer.Option(None, "--ema-epochs", help=_help("ema_epochs")),
    members: int = typer.Option(None, "--members", min=1, help=_help("members")),
    calibrate: bool = typer.Option(None, "--calibrate/--no-calibrate", help=_help("calibrate")),
    threads: int = typer.Option(None, "--threads", min=1, help=_help("threads")),
    show_config: bool = PrintConfigOption,
    debug: bool = DebugOption,
) -> None:
    """Train a slide classifier on feature bags: splits, whole-bag training, best epoch by --select-on."""
    with user_errors(debug):
        overrides = config_overrides(TrainConfig, locals())  # options named after a setting
        cfg = resolve_train_config(config, overrides, out, resume)
        if show_config:
            print_config(cfg)
        from wsi_pipeline.train.run import run_training  # heavy: torch

        try:
            summary = run_training(cfg, out, resume=resume, console=console)
        except KeyboardInterrupt:
            # The saved config.yaml supplies every other option, so this command resumes exactly.
            raise fail(
                f"interrupted; finished epochs are kept: resume with `wsi train --out {out} --resume`", 130
            ) from None
        if summary.reports:
            typer.echo(summary.final_line())
