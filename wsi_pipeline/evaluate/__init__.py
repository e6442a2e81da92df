"""Evaluating a trained run: metrics with bootstrap intervals, ROC plot, predictions, heatmaps (`wsi eval`)."""

from wsi_pipeline.evaluate.config import EvalConfig
from wsi_pipeline.evaluate.run import EvalResult, run_evaluation

__all__ = ["EvalConfig", "EvalResult", "run_evaluation"]
