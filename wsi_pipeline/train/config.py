"""Training settings. Defaults equal `configs/train/<model>.yaml` (a test keeps them equal).

The paper's run (Khader et al. 2024) trains on whole bags at batch size 1 with AdamW for up to 100 epochs and
keeps the epoch with the best validation AUROC. Its exact learning rate could not be checked offline, so the
defaults are the common MIL-transformer values: lr 1e-4, weight decay 1e-2, one warm-up epoch then a cosine
decay, gradient norm clipped at 1, and patience 10 epochs on validation AUROC (ties broken by the lower
validation loss, because a small validation set saturates AUROC at 1.0 early).

`config.yaml` of a run is this model resolved: `features`, `labels` and `classes` (the class names in index
order) are filled in, so `wsi train --config runs/NAME/config.yaml` reproduces the run.
"""

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wsi_pipeline.resources import configs_dir

CacheMode = Literal["memory", "device", "none"]

# The source tree's configs/, or the copy inside an installed wheel (wsi_pipeline.resources).
CONFIGS_DIR = configs_dir()


class SplitFractions(BaseModel):
    """Of patients, when the labels table has no split column (the paper's 627/145/270 slides)."""

    model_config = ConfigDict(extra="forbid")

    train: float = Field(0.60, gt=0, lt=1)
    val: float = Field(0.14, gt=0, lt=1)
    test: float = Field(0.26, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitFractions":
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {self.train + self.val + self.test:g}")
        return self


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    features: Path | None = Field(None, description="folder of feature bags <slide_id>.h5")
    labels: Path | None = Field(None, description="labels CSV: slide_id, label[, patient_id, split]")
    classes: list[str] | None = Field(None, description="class names in index order; default: sorted labels")
    allow_missing: bool = Field(False, description="drop labelled slides that have no bag instead of failing")

    model: str = Field("vit_sf", description="aggregator name in wsi_pipeline.models")
    model_overrides: dict[str, Any] = Field(
        default_factory=dict, description="over configs/models/<model>.yaml, e.g. {dropout: 0.1}"
    )

    epochs: int = Field(100, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up from 0, then cosine decay to min_lr")
    min_lr: float = Field(0.0, ge=0)
    grad_clip_norm: float | None = Field(1.0, gt=0, description="max global gradient norm; null = off")
    class_weighted_loss: bool = Field(True, description="cross-entropy weighted by inverse class frequency")
    patience: int = Field(
        10, ge=1, description="epochs without a better val AUROC (ties: lower val loss) before stopping"
    )
    seed: int = 0

    folds: int = Field(1, ge=1, description="1 = one train/val/test split; k >= 2 = k-fold CV on patients")
    split_fractions: SplitFractions = Field(default_factory=SplitFractions)

    max_tiles: int | None = Field(None, ge=1, description="random tiles per bag and step; null = whole bags")
    cache: CacheMode = Field("memory", description="memory: fp16 in RAM; device: on the GPU; none: re-read")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    amp: bool = Field(True, description="bfloat16 autocast on CUDA (ignored on CPU)")


def default_config_file(model: str) -> Path | None:
    """`configs/train/<model>.yaml` (source tree or installed copy), when there is one."""
    path = CONFIGS_DIR / "train" / f"{model}.yaml"
    return path if path.is_file() else None


def resolve_train_config(
    config_file: Path | None, overrides: dict[str, Any], run_dir: Path, resume: bool
) -> TrainConfig:
    """Code defaults < config file < options. Without `--config`: the run's own config when resuming, else
    `configs/train/<model>.yaml` for the chosen model."""
    from wsi_pipeline.config import load_config

    if config_file is None:
        saved = run_dir / "config.yaml"
        if resume and saved.is_file():
            config_file = saved
        else:
            config_file = default_config_file(
                overrides.get("model") or TrainConfig.model_fields["model"].default
            )
    return load_config(TrainConfig, config_file, overrides)
