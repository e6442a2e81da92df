"""The training loop: schedule, early stopping, checkpoints, history, resume, k-fold, cache modes."""

import csv
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from tests.train.helpers import quick_config, small_cohort
from wsi_pipeline.config import read_yaml_mapping
from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.atomic import LOCK_FILE
from wsi_pipeline.stores.run_folder import load_checkpoint, read_splits
from wsi_pipeline.train import TrainConfig, run_training
from wsi_pipeline.train.loop import (
    HISTORY_COLUMNS,
    EarlyStopping,
    FoldData,
    FoldTrainer,
    lr_at,
    weight_average,
)


def test_lr_warms_up_linearly_then_decays_by_cosine() -> None:
    lrs = [lr_at(step, total_steps=110, warmup_steps=10, lr=1.0, min_lr=0.1) for step in range(110)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lr_at(110, 110, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert lr_at(0, 10, 0, 1.0, 0.0) == pytest.approx(1.0)


def test_early_stopping_prefers_auroc_then_lower_loss() -> None:
    stopper = EarlyStopping(patience=2, select_on="auroc")
    assert stopper.update(0.8, 0.5, 1)
    assert stopper.update(1.0, 0.6, 2)
    assert stopper.update(1.0, 0.4, 3)  # same AUROC, lower loss: better
    assert not stopper.update(1.0, 0.45, 4) and not stopper.should_stop
    assert not stopper.update(0.9, 0.1, 5) and stopper.should_stop
    assert (stopper.best_epoch, stopper.best_auroc, stopper.best_loss) == (3, 1.0, 0.4)


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _deterministic(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
    return [(r["epoch"], r["train_loss"], r["val_loss"], r["val_auroc"], r["lr"]) for r in rows]


def test_run_folder_holds_config_splits_history_and_a_weights_only_checkpoint(tmp_path: Path) -> None:
    small_cohort(tmp_path, 24)
    summary = run_training(quick_config(tmp_path, epochs=2), tmp_path / "run")
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        LOCK_FILE,
        "baseline.json",
        "checkpoint.pt",
        "config.yaml",
        "extractor.json",
        "history.csv",
        "result.json",
        "splits.csv",
        "summary.json",
    ]
    saved = TrainConfig.model_validate(read_yaml_mapping(run / "config.yaml"))
    assert saved.classes == ["negative", "positive"] and saved.features == (tmp_path / "features").resolve()
    assert saved.epochs == 2 and saved.model_overrides["dim"] == 32
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    assert payload["model_name"] == "vit_sf" and payload["in_dim"] == 64
    assert payload["class_names"] == ["negative", "positive"] and payload["model_config"]["dim"] == 32
    assert payload["model_config"]["depth"] == 2  # resolved: defaults included, not only the overrides
    assert load_checkpoint(run / "checkpoint.pt").epoch == summary.folds[0].best_epoch
    history = _history(run)
    assert tuple(history[0]) == HISTORY_COLUMNS and [r["epoch"] for r in history] == ["1", "2"]
    assert all(float(r["seconds"]) > 0 and float(r["peak_memory_mb"]) > 0 for r in history)
    assert {r.split for r in read_splits(run / "splits.csv")} == {"train", "val", "test"}
    assert summary.final_line().startswith("best val AUROC") and str(run) in summary.final_line()
    with pytest.raises(WsiError, match="already holds a run; pass --resume"):
        run_training(quick_config(tmp_path, epochs=2), run)


class Interrupt(Exception):
    pass


def _stop_after(epoch: int):
    def hook(fold: int, done: int, row: dict) -> None:
        if done == epoch:
            raise Interrupt

    return hook


@pytest.mark.parametrize("ema_epochs", [None, 1.5])
def test_resume_gives_the_same_run_as_never_stopping(tmp_path: Path, ema_epochs: float | None) -> None:
    small_cohort(tmp_path, 24)
    # Dropout and tile subsampling draw random numbers: resuming must restore them exactly; so must it the
    # weights' moving average, which the checkpoint holds when `ema_epochs` is set.
    cfg = quick_config(tmp_path, epochs=4, max_tiles=25, ema_epochs=ema_epochs)
    run_training(cfg, tmp_path / "straight")
    with pytest.raises(Interrupt):
        run_training(cfg, tmp_path / "resumed", on_epoch_end=_stop_after(2))
    assert (tmp_path / "resumed" / "last.pt").is_file() and not (
        tmp_path / "resumed" / "result.json"
    ).exists()
    assert len(_history(tmp_path / "resumed")) == 2
    with pytest.raises(WsiError, match=r"--resume with settings that differ from config\.yaml: lr"):
        run_training(cfg.model_copy(update={"lr": 0.5}), tmp_path / "resumed", resume=True)
    run_training(cfg.model_copy(update={"cache": "none"}), tmp_path / "resumed", resume=True)

    assert _deterministic(_history(tmp_path / "resumed")) == _deterministic(_history(tmp_path / "straight"))
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert a.epoch == b.epoch
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not (tmp_path / "resumed" / "last.pt").exists()


def test_stops_after_patience_epochs_without_a_better_val_score(tmp_path: Path) -> None:
    small_cohort(tmp_path, 24)
    # A learning rate far below float32 resolution leaves the weights, hence the val score, unchanged.
    summary = run_training(quick_config(tmp_path, epochs=30, patience=2, lr=1e-30), tmp_path / "run")
    fold = summary.folds[0]
    assert fold.stopped_early and fold.best_epoch == 1 and fold.epochs_run == 3
    assert json.loads((tmp_path / "run" / "result.json").read_text())["stopped_early"] is True
    assert len(_history(tmp_path / "run")) == 3


def test_select_on_last_trains_the_whole_schedule_and_keeps_its_final_epoch(tmp_path: Path) -> None:
    small_cohort(tmp_path, 24)
    # The same frozen val score that stops the run above after 3 epochs.
    cfg = quick_config(tmp_path, epochs=6, patience=2, lr=1e-30, select_on="last")
    fold = run_training(cfg, tmp_path / "run").folds[0]
    assert (fold.stopped_early, fold.best_epoch, fold.epochs_run) == (False, 6, 6)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt").epoch == 6


def test_kfold_trains_one_model_per_fold_and_summarises(tmp_path: Path) -> None:
    small_cohort(tmp_path, 30, slides_per_patient=2)
    summary = run_training(quick_config(tmp_path, epochs=1, folds=3), tmp_path / "run")
    run = tmp_path / "run"
    for fold in range(3):
        assert (run / f"fold_{fold}" / "checkpoint.pt").is_file() and (
            run / f"fold_{fold}" / "history.csv"
        ).is_file()
    rows = read_splits(run / "splits.csv")
    assert len(rows) == 3 * 30 and sorted(r.slide_id for r in rows if r.split == "test") == sorted(
        {r.slide_id for r in rows}
    )
    body = json.loads((run / "summary.json").read_text())
    values = [f["best_val_auroc"] for f in body["folds"]]
    assert body["best_val_auroc_mean"] == pytest.approx(sum(values) / 3)
    assert body["best_val_auroc_sd"] == pytest.approx(
        math.sqrt(sum((v - sum(values) / 3) ** 2 for v in values) / 2)
    )
    assert "± " in summary.final_line() and "over 3 folds" in summary.final_line()


def test_resuming_a_finished_run_only_reports_it(tmp_path: Path) -> None:
    small_cohort(tmp_path, 24)
    first = run_training(quick_config(tmp_path, epochs=1), tmp_path / "run")
    again = run_training(quick_config(tmp_path, epochs=1, cache="device"), tmp_path / "run", resume=True)
    assert again.folds == first.folds and len(_history(tmp_path / "run")) == 1


def test_l2_penalty_adds_l2_times_each_weight_matrix_to_its_gradient_and_leaves_biases() -> None:
    from wsi_pipeline.models import build_model
    from wsi_pipeline.train.loop import l2_penalty, weight_matrices

    model = build_model("abmil", in_dim=8, n_classes=2)
    l2_penalty(weight_matrices(model), 0.3).backward()
    for name, param in model.named_parameters():
        if param.ndim >= 2:
            torch.testing.assert_close(param.grad, 0.3 * param.detach(), msg=name)
        else:
            assert param.grad is None, name
    assert l2_penalty(weight_matrices(model), 0.0) == 0.0


def test_l2_keeps_a_linear_head_small_on_separable_bags(tmp_path: Path) -> None:
    # 64-d bags, 24 slides: separable, so without the penalty the head's weights keep growing.
    small_cohort(tmp_path, 24)
    norms = {}
    for l2 in (0.0, 3.0):
        cfg = quick_config(tmp_path, model="mean_linear", model_overrides={}, epochs=8, lr=1e-2, l2=l2)
        run_training(cfg, tmp_path / f"run_{l2}")
        weights = load_checkpoint(tmp_path / f"run_{l2}" / "checkpoint.pt").state_dict["classifier.weight"]
        norms[l2] = float(weights.norm())
    assert norms[3.0] < 0.5 * norms[0.0], norms


def test_weight_average_decays_by_one_over_epochs_times_steps() -> None:
    """ema_epochs 2 over 5 steps an epoch: decay 1 - 1/10, so the average after p1 then p2 is 0.9 p1 + 0.1 p2."""
    assert weight_average(torch.nn.Linear(2, 1), None, 5) is None
    layer = torch.nn.Linear(2, 1, bias=False)
    average = weight_average(layer, 2.0, 5)
    assert average is not None
    for value in (1.0, 11.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update_parameters(layer)
    assert average.module.weight.detach() == pytest.approx(torch.full((1, 2), 0.9 * 1.0 + 0.1 * 11.0))


def test_with_ema_validation_and_the_checkpoint_use_the_average_not_the_trained_weights(
    tmp_path: Path,
) -> None:
    from wsi_pipeline.models import build_model
    from wsi_pipeline.train.bags import BagCache
    from wsi_pipeline.train.process import ProcessRole

    gen = torch.Generator().manual_seed(0)
    bags = {f"s{i}": torch.randn(30, 8, generator=gen) + (i % 2) for i in range(12)}
    # Validation labels the other way round: the model is confidently wrong there, so the fitted T is > 1.
    targets = {s: (i + (i >= 8)) % 2 for i, s in enumerate(bags)}
    ids = list(bags)
    cfg = TrainConfig(model="abmil", epochs=3, select_on="last", ema_epochs=1.0, device="cpu")
    model = build_model("abmil", in_dim=8, n_classes=2, embed_dim=16, attention_dim=8)
    data = FoldData(0, tmp_path, ids[:8], ids[8:], targets)
    cache = BagCache.of_tensors(bags, torch.device("cpu"))
    trainer = FoldTrainer(
        cfg, model, {}, ("0", "1"), 8, cache, data, torch.device("cpu"), ProcessRole(), None
    )
    trainer.fit()
    saved = load_checkpoint(tmp_path / "checkpoint.pt").state_dict
    averaged, trained = trainer.average.module.state_dict(), model.state_dict()
    weights = [k for k in saved if k.endswith("weight")]
    assert all(torch.equal(saved[k], averaged[k]) for k in weights)
    assert not all(torch.equal(saved[k], trained[k]) for k in weights)
    assert (
        float(saved["temperature"]) != 1.0 and float(trained["temperature"]) == 1.0
    )  # calibrated: the average
