"""Training aggregators on feature bags: labels and splits, the whole-bag loop, checkpoints (`wsi train`)."""

from wsi_pipeline.train.config import TrainConfig, resolve_train_config
from wsi_pipeline.train.run import RunSummary, run_training

__all__ = ["RunSummary", "TrainConfig", "resolve_train_config", "run_training"]
