"""Training aggregators on feature bags: labels and splits, the whole-bag loop, checkpoints (`wsi train`)."""

from typing import TYPE_CHECKING, Any

from wsi_pipeline.train.config import TrainConfig, resolve_train_config

if TYPE_CHECKING:
    from wsi_pipeline.train.run import RunSummary, run_training

__all__ = ["RunSummary", "TrainConfig", "resolve_train_config", "run_training"]


def __getattr__(name: str) -> Any:
    """`RunSummary` and `run_training` load on first use: `train.run` imports torch (heavy), and importing
    `train.config` (the CLI's `--help`, config validation) must not pay for it."""
    if name in ("RunSummary", "run_training"):
        from wsi_pipeline.train import run  # heavy: torch

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
