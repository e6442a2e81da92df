"""Training settings, with their defaults stated here once (`wsi train --print-config` shows them resolved).

The paper's run (Khader et al. 2024) trains on whole bags at batch size 1 with AdamW for up to 100 epochs and
keeps the epoch with the best validation AUROC. Its exact learning rate could not be checked offline, so the
defaults are the common MIL-transformer values: lr 1e-4, weight decay 1e-2, one warm-up epoch then a cosine
decay, gradient norm clipped at 1. On real features (benchmarks/bench_real.py) three more things decided
whether a learned aggregator beat a logistic regression on mean features: standardised inputs, choosing the
epoch by the validation loss at a fitted temperature rather than by AUROC (a small validation set ties at
AUROC 1.0 within an epoch or two) or by the raw loss (which keeps a barely trained epoch because later ones are
confident), and at least `min_epochs` before stopping. Per-model exceptions are in MODEL_DEFAULTS: the
pooling baselines and `abmil` also take an L2 penalty in the loss (`l2`), the prior of a logistic regression,
because AdamW's decoupled decay does not stop weights growing on separable training bags (train/loop.py,
`l2_penalty`), and `abmil` trains five members per fold (train/members.py), cheap for it and the one change that
brought its bag accuracy near its paper's on small cohorts, without gradient clipping, which cut its updates
on the bags of highest loss.

`config.yaml` of a run is this model resolved: `features`, `labels` and `classes` (the class names in index
order) are filled in, so `wsi train --config runs/NAME/config.yaml` reproduces the run.
"""

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wsi_pipeline.config import load_config, read_yaml_mapping

CacheMode = Literal["memory", "device", "none"]
FeatureNorm = Literal["standardize", "none"]
SelectOn = Literal["loss", "auroc", "last"]


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


# Per-model training defaults, chosen by repeated cross-validation on real features (benchmarks/bench_real.py;
# table and reasons in wsi_pipeline/models/README.md). A field not named here takes TrainConfig's default.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    # One linear layer on a mean of z-scored tiles: weights must grow large, so 10x the deep models' step.
    # The L2 penalty is what a logistic regression has: without it the head fits separable training bags
    # with ever larger weights and fell 0.04 below the baseline on Tiger (0.822 vs 0.859, 2 x 5 folds).
    "mean_linear": {"lr": 1e-3, "l2": 1e-2},
    # Pooled values standardised before one linear layer (models/baselines.py): the same reasons, and at 1e-4
    # the proportion cohort (`tiles_mix`) stayed 0.02 further below the baseline. l2 (5 x 5 folds, AUROC minus
    # the baseline's): 0 -> Tiger -0.065, Musk2 -0.001; 1e-3 -> -0.017, -0.006; 1e-2 -> -0.010, -0.028.
    "meanmax_mlp": {"lr": 1e-3, "l2": 1e-3},
    # Ilse et al. 2018's own learning rate; on Musk2 and Fox (2 x 5 folds) bag accuracy 0.809 / 0.588 against
    # 0.798 / 0.585 at 1e-4 (benchmarks/results/real_abmil_*). With l2 1e-2 Tiger rose from AUROC 0.790 to
    # 0.858 (baseline 0.859), Elephant from 0.864 to 0.901 (benchmarks/results/real_sw_a_l2_1e-2.*).
    # Five members per fold (train/members.py): bag accuracy, 2 x 5 folds, one model -> five, Musk1 0.837 -> 0.874,
    # Musk2 0.803 -> 0.818, Fox 0.557 -> 0.585, Tiger and Elephant in benchmarks/RESULTS.md ("Members"), AUROC
    # level or higher on every set (5 x 5 folds: AUROC above the baseline's on all five sets, +0.028 to +0.069);
    # it costs five trainings per fold, cheap for this model. No gradient clipping: at norm 1 it clipped 16-47 %
    # of the steps an epoch from the fourth on (Musk2), those on the bags of highest loss (norms up to 24; rank
    # correlation of norm and loss 0.96), so it shrank the updates from the bags left to learn; without it
    # Musk2 rose from 0.821 to 0.852 and Fox from 0.566 to 0.589 (5 x 5 folds, benchmarks/RESULTS.md,
    # "Gradient clipping").
    "abmil": {"lr": 5e-4, "l2": 1e-2, "members": 5, "grad_clip_norm": None},
}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _model_defaults(cls, data: Any) -> Any:
        """Fill the fields not given with the chosen model's defaults (MODEL_DEFAULTS)."""
        if not isinstance(data, dict):
            return data
        model = data.get("model") or cls.model_fields["model"].default
        return {**MODEL_DEFAULTS.get(str(model), {}), **data}

    features: Path | None = Field(None, description="folder of feature bags <slide_id>.h5")
    labels: Path | None = Field(None, description="labels CSV: slide_id, label[, patient_id, split]")
    classes: list[str] | None = Field(None, description="class names in index order; default: sorted labels")
    allow_missing: bool = Field(False, description="drop labelled slides that have no bag instead of failing")
    require_patient_id: bool = Field(
        False, description="refuse labels without patient_id whose slide ids are not TCGA barcodes"
    )

    model: str = Field("vit_sf", description="aggregator name in wsi_pipeline.models")
    model_overrides: dict[str, Any] = Field(
        default_factory=dict, description="over the model's own defaults (`wsi models`), e.g. {dropout: 0.1}"
    )

    epochs: int = Field(100, ge=1, description="maximum epochs (early stopping may end sooner)")
    lr: float = Field(1e-4, gt=0, description="peak learning rate of AdamW")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay (not on biases and norms)")
    l2: float = Field(
        0.0, ge=0, description="L2 penalty (l2 / 2) * |W|^2 on weight matrices, added to each bag's loss"
    )
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up from 0, then cosine decay to min_lr")
    min_lr: float = Field(0.0, ge=0, description="learning rate at the end of the cosine decay")
    grad_clip_norm: float | None = Field(1.0, gt=0, description="max global gradient norm; null = off")
    class_weighted_loss: bool = Field(True, description="cross-entropy weighted by inverse class frequency")
    patience: int = Field(10, ge=1, description="epochs without a better selected epoch before stopping")
    min_epochs: int = Field(10, ge=1, description="epochs always trained before early stopping may fire")
    ema_epochs: float | None = Field(
        None,
        gt=0,
        description="validate, select and save a moving average of the weights over about this many epochs "
        "(per-bag decay 1 - 1 / (ema_epochs x training bags)); null = the weights as trained",
    )
    members: int = Field(
        1,
        ge=1,
        description="models per fold, each validated on its own part of the fold's train+val slides (split by "
        "patient); the fold predicts with their mean probability (train/members.py)",
    )
    select_on: SelectOn = Field(
        "loss",
        description="best epoch by val loss (ties: higher AUROC), by val AUROC (ties: lower loss), or last: the "
        "schedule's final epoch, no early stopping (val bags then only fit the temperature)",
    )
    feature_norm: FeatureNorm = Field(
        "standardize", description="z-score each feature with the training tiles' mean and std (in the model)"
    )
    calibrate: bool = Field(
        True, description="fit a softmax temperature on the validation bags after training"
    )
    seed: int = Field(0, description="seed of the splits, the initialisation and the bag order")

    folds: int = Field(1, ge=1, description="1 = one train/val/test split; k >= 2 = k-fold CV on patients")
    split_fractions: SplitFractions = Field(
        default_factory=SplitFractions, description="train/val/test shares of patients without a split column"
    )

    max_tiles: int | None = Field(None, ge=1, description="random tiles per bag and step; null = whole bags")
    cache: CacheMode = Field("memory", description="memory: fp16 in RAM; device: on the GPU; none: re-read")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    amp: bool = Field(True, description="bfloat16 autocast on CUDA (ignored on CPU)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null = the physical cores")


def resolve_train_config(
    config_file: Path | None, overrides: dict[str, Any], run_dir: Path, resume: bool
) -> TrainConfig:
    """Code defaults < config file < options. Without `--config`, a resumed run starts from its own
    config.yaml, so options given again need not repeat every setting."""
    saved = run_dir / "config.yaml"
    if config_file is None and resume and saved.is_file():
        config_file = saved
        given = {key: value for key, value in overrides.items() if value is not None}
        overrides = {**settings_the_run_predates(saved, given), **given}
    return load_config(TrainConfig, config_file, overrides)


def settings_the_run_predates(saved: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Per-model settings missing from a run's saved config.yaml, at their plain field defaults.

    A saved config is complete, so a missing key is a setting added after the run started (`l2`); the run
    trained without it, i.e. at the field's plain default, and resuming must not switch it to the model's
    newer default mid-run."""
    values = read_yaml_mapping(saved)
    model = overrides.get("model") or values.get("model") or TrainConfig.model_fields["model"].default
    fields = TrainConfig.model_fields
    return {key: fields[key].default for key in MODEL_DEFAULTS.get(str(model), {}) if key not in values}
