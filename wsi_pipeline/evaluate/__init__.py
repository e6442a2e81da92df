"""Evaluating a trained run: metrics with bootstrap intervals, ROC plot, predictions, heatmaps (`wsi eval`)."""

from typing import TYPE_CHECKING, Any

from wsi_pipeline.evaluate.config import EvalConfig

if TYPE_CHECKING:
    from wsi_pipeline.evaluate.run import EvalResult, run_evaluation

__all__ = ["EvalConfig", "EvalResult", "run_evaluation"]


def __getattr__(name: str) -> Any:
    """`EvalResult` and `run_evaluation` load on first use: `evaluate.run` imports torch (heavy), and
    importing `evaluate.config` (the CLI's `--help`, config validation) must not pay for it."""
    if name in ("EvalResult", "run_evaluation"):
        from wsi_pipeline.evaluate import run  # heavy: torch

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
