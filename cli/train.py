"""`wsi train`: parse options, resolve the config, call `wsi_pipeline.train.run_training`."""

from enum import StrEnum
from pathlib import Path

import typer

from cli.common import DebugOption, console, user_errors


class Cache(StrEnum):
    memory = "memory"
    device = "device"
    none = "none"


def train(
    features: Path = typer.Option(
        None, "--features", help="Folder of feature bags <slide_id>.h5 (wsi extract)."
    ),
    labels: Path = typer.Option(None, "--labels", help="CSV with slide_id,label[,patient_id,split]."),
    out: Path = typer.Option(..., "--out", help="Run folder to create, e.g. runs/NAME."),
    model: str = typer.Option(
        None, "--model", help="Aggregator: vit_sf (default), vit, vit_sima, vit_sf_ca, abmil, transmil."
    ),
    config: Path = typer.Option(None, "--config", help="YAML config; default configs/train/<model>.yaml."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Maximum epochs (default 100)."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate of AdamW (default 1e-4)."),
    weight_decay: float = typer.Option(None, "--weight-decay", help="AdamW weight decay (default 1e-2)."),
    seed: int = typer.Option(
        None, "--seed", help="Seed of splits, initialisation and bag order (default 0)."
    ),
    folds: int = typer.Option(
        None, "--folds", min=1, help="k-fold cross-validation on patients (default 1)."
    ),
    patience: int = typer.Option(
        None, "--patience", min=1, help="Epochs without better val AUROC (default 10)."
    ),
    device: str = typer.Option(None, "--device", help="auto (default), cpu, cuda, cuda:1, ..."),
    max_tiles: int = typer.Option(
        None, "--max-tiles", min=1, help="Random tiles per bag and step (default: whole bags)."
    ),
    cache: Cache = typer.Option(
        None, "--cache", help="Bags in RAM as fp16 (memory, default), on the GPU (device), or re-read (none)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last finished epoch, or start it."
    ),
    allow_missing: bool = typer.Option(
        None, "--allow-missing", help="Train without labelled slides that have no bag."
    ),
    debug: bool = DebugOption,
) -> None:
    """Train a slide classifier on feature bags: splits, whole-bag training, best checkpoint by val AUROC."""
    with user_errors(debug):
        from wsi_pipeline.train import resolve_train_config, run_training

        overrides = {
            "features": features,
            "labels": labels,
            "model": model,
            "epochs": epochs,
            "lr": lr,
            "weight_decay": weight_decay,
            "seed": seed,
            "folds": folds,
            "patience": patience,
            "device": device,
            "max_tiles": max_tiles,
            "cache": cache.value if cache is not None else None,
            "allow_missing": allow_missing,
        }
        cfg = resolve_train_config(config, overrides, out, resume)
        summary = run_training(cfg, out, resume=resume, console=console)
        if summary.reports:
            typer.echo(summary.final_line())
