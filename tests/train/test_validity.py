"""Issue 11: standardised inputs, model selection, calibrated probabilities and the mean-pooled baseline."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.train.helpers import quick_config, small_cohort
from wsi_pipeline.evaluate.calibration import brier_score, expected_calibration_error
from wsi_pipeline.inference.fold_models import load_fold_models
from wsi_pipeline.stores.baseline import BASELINE_FILE, load_baseline, mean_pool
from wsi_pipeline.stores.feature_bag import load_bag
from wsi_pipeline.stores.run_folder import load_checkpoint, read_run_info, read_splits
from wsi_pipeline.train import run_training
from wsi_pipeline.train.bags import BagCache, tile_statistics
from wsi_pipeline.train.baseline import fit_baseline
from wsi_pipeline.train.calibration import fit_temperature, nll
from wsi_pipeline.train.config import TrainConfig
from wsi_pipeline.train.loop import EarlyStopping, FoldData
from wsi_pipeline.train.run import small_validation_warning


def _train_ids(run: Path) -> list[str]:
    return sorted(r.slide_id for r in read_splits(run / "splits.csv") if r.split == "train")


def test_feature_stats_equal_numpy_even_with_a_large_offset() -> None:
    rng = np.random.default_rng(0)
    # float16-exact values with an offset 10^3 times their spread: a sum-of-squares formula cancels here.
    bags = {
        f"s{i}": torch.from_numpy(rng.normal(0, 1, (n, 5)) * 0.25 + 512.0).half()
        for i, n in enumerate([3, 40, 17])
    }
    cache = BagCache.of_tensors(bags, torch.device("cpu"))
    # Two classes: the per-class moments are merged into the cohort's, which must lose nothing either.
    stats = tile_statistics(cache, sorted(bags), {"s0": 0, "s1": 1, "s2": 0}, 2)
    mean, std = stats.mean, stats.std
    tiles = np.concatenate([b.double().numpy() for b in bags.values()])
    np.testing.assert_allclose(mean.numpy(), tiles.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), tiles.std(axis=0), rtol=1e-5)


def test_class_tile_means_are_the_mean_tile_of_each_class() -> None:
    """Every tile of a class's slides counts once (a mean of tiles, not of bag means); a class without
    training slides gets zeros, which the score methods read as unknown."""
    rng = np.random.default_rng(1)
    bags = {f"s{i}": torch.from_numpy(rng.normal(i, 1, (n, 4))).float() for i, n in enumerate([3, 40, 17, 9])}
    targets = {"s0": 0, "s1": 1, "s2": 0, "s3": 1}
    cache = BagCache.of_tensors(bags, torch.device("cpu"))
    means = tile_statistics(cache, sorted(bags), targets, 3).class_means
    for c in (0, 1):
        tiles = np.concatenate([cache.get(s).double().numpy() for s in sorted(bags) if targets[s] == c])
        np.testing.assert_allclose(means[c].numpy(), tiles.mean(axis=0), rtol=1e-5)
    assert not means[2].any()


def test_standardisation_is_in_the_checkpoint_and_applied_by_a_rebuilt_model(tmp_path: Path) -> None:
    """The training tiles' statistics travel in the checkpoint; a model rebuilt from it (what `wsi eval` and
    prediction use) gives the logits of the network on standardised features, not on raw ones."""
    small_cohort(tmp_path, 16)
    run = tmp_path / "run"
    run_training(quick_config(tmp_path, model="mean_linear", model_overrides={}, epochs=1), run)
    tiles = np.concatenate(
        [load_bag(tmp_path / "features" / f"{s}.h5").features.astype(np.float64) for s in _train_ids(run)]
    )
    state = load_checkpoint(run / "checkpoint.pt").state_dict
    np.testing.assert_allclose(state["feature_mean"].numpy(), tiles.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state["feature_std"].numpy(), tiles.std(axis=0), rtol=1e-4)
    classes = {r.slide_id: r.label for r in read_splits(run / "splits.csv")}
    labels = sorted(set(classes.values()))
    for c, label in enumerate(labels):  # the class index order of the run: sorted labels
        of_class = [s for s in _train_ids(run) if classes[s] == label]
        bags = [load_bag(tmp_path / "features" / f"{s}.h5").features for s in of_class]
        expected_mean = np.concatenate(bags).astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(state["class_means"][c].numpy(), expected_mean, rtol=1e-4, atol=1e-5)

    (model,) = [fm.model for fm in load_fold_models(read_run_info(run), torch.device("cpu"))]
    x = torch.from_numpy(tiles[:30]).float().unsqueeze(0)
    z = (x - state["feature_mean"]) / state["feature_std"]
    expected = model.classifier(z.mean(dim=1)) / state["temperature"]
    raw = model.classifier(x.mean(dim=1)) / state["temperature"]
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, raw, atol=1e-3)  # the standardisation matters on these features


def test_feature_norm_none_leaves_the_inputs_alone(tmp_path: Path) -> None:
    small_cohort(tmp_path, 16)
    run_training(quick_config(tmp_path, epochs=1, feature_norm="none", calibrate=False), tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt").state_dict
    assert torch.equal(state["feature_mean"], torch.zeros(64)) and torch.equal(
        state["feature_std"], torch.ones(64)
    )
    assert float(state["temperature"]) == 1.0


def test_select_on_loss_or_auroc_and_min_epochs() -> None:
    by_loss = EarlyStopping(patience=1, min_epochs=1, select_on="loss")
    by_auroc = EarlyStopping(patience=1, min_epochs=1, select_on="auroc")
    for stopper in (by_loss, by_auroc):
        stopper.update(1.0, 0.6, 1)
        stopper.update(1.0, 0.5, 2)  # AUROC tied: the lower loss wins under either rule
        stopper.update(0.9, 0.4, 3)
    assert by_loss.best_epoch == 3 and by_auroc.best_epoch == 2
    tied = EarlyStopping(patience=1, select_on="loss")
    tied.update(0.7, 0.5, 1)
    assert tied.update(0.8, 0.5, 2)  # loss tied: the higher AUROC wins
    late = EarlyStopping(patience=1, min_epochs=4)
    for epoch in range(1, 4):
        late.update(0.5, 1.0, epoch)
        assert not late.should_stop  # no stop before min_epochs, however many bad epochs
    late.update(0.5, 1.0, 4)
    assert late.should_stop


def test_select_on_last_keeps_the_final_epoch_and_never_stops() -> None:
    stopper = EarlyStopping(patience=1, min_epochs=1, select_on="last")
    for epoch, (auroc, loss) in enumerate([(0.9, 0.2), (0.5, 0.9), (0.4, 1.5)], start=1):
        assert stopper.update(auroc, loss, epoch)  # worse on both counts, still the one kept
        assert not stopper.should_stop
    assert (stopper.best_epoch, stopper.best_auroc, stopper.best_loss) == (3, 0.4, 1.5)


def test_small_validation_warning_names_what_the_validation_set_decides(tmp_path: Path) -> None:
    targets = {f"s{i}": i % 2 for i in range(12)}
    data = FoldData(0, tmp_path, sorted(targets)[:4], sorted(targets)[4:], targets)  # 8 val slides
    selecting = small_validation_warning(data, ("a", "b"), "loss")
    last = small_validation_warning(data, ("a", "b"), "last")
    assert selecting is not None and "chosen epoch" in selecting
    assert last is not None and "chosen epoch" not in last and "temperature is noisy" in last


def test_temperature_fitted_on_validation_lowers_its_nll() -> None:
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 2, 200)
    # Right 70 % of the time, yet logits of +-6: overconfident.
    sign = np.where(rng.random(200) < 0.7, 1, -1) * np.where(targets == 1, 1, -1)
    logits = np.stack([-3.0 * sign, 3.0 * sign], axis=1)
    t = fit_temperature(logits, targets)
    assert t > 1.5 and nll(logits, targets, t) < nll(logits, targets) - 0.2


def test_temperature_never_sharpens_a_barely_trained_model() -> None:
    """Near-zero logits that rank every bag right would "want" T << 1; selection on that loss kept epoch 1."""
    targets = np.array([0, 1] * 8)
    logits = np.stack([-0.01 * (2 * targets - 1), 0.01 * (2 * targets - 1)], axis=1)
    assert fit_temperature(logits, targets) == 1.0
    assert nll(logits, targets, fit_temperature(logits, targets)) > 0.67  # judged as the coin flip it is


def test_training_calibrates_and_records_the_temperature(tmp_path: Path) -> None:
    small_cohort(tmp_path, 24)
    summary = run_training(quick_config(tmp_path, epochs=2), tmp_path / "run")
    fold = summary.folds[0]
    assert fold.val_nll_calibrated <= fold.val_nll_uncalibrated
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt").state_dict
    assert math.isclose(float(state["temperature"]), saved["temperature"], rel_tol=1e-6)


def test_the_mean_pooled_baseline_is_fitted_on_the_train_split_and_saved_as_json(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    small_cohort(tmp_path, 24)
    run = tmp_path / "run"
    run_training(quick_config(tmp_path, epochs=1), run)
    baseline = load_baseline(run / BASELINE_FILE)
    labels = {r.slide_id: r.label for r in read_splits(run / "splits.csv")}
    ids = sorted(labels)
    pooled = np.stack([mean_pool(load_bag(tmp_path / "features" / f"{s}.h5").features) for s in ids])
    train = [ids.index(s) for s in _train_ids(run)]
    y = np.array([int(labels[s] == "positive") for s in ids])
    scaler = StandardScaler().fit(pooled[train])
    reference = LogisticRegression(max_iter=2000).fit(scaler.transform(pooled[train]), y[train])
    np.testing.assert_allclose(
        baseline.predict_proba(pooled), reference.predict_proba(scaler.transform(pooled)), atol=1e-3
    )
    assert json.loads((run / BASELINE_FILE).read_text())["class_names"] == ["negative", "positive"]


def test_three_class_baseline_probabilities_equal_sklearn() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(60, 4)) + np.repeat(np.eye(3, 4), 20, axis=0), np.repeat([0, 1, 2], 20)
    ours = fit_baseline(x, y, ("a", "b", "c"))
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    np.testing.assert_allclose(
        ours.predict_proba(x), LogisticRegression(max_iter=2000).fit(z, y).predict_proba(z), atol=1e-6
    )


def test_brier_and_ece_by_hand() -> None:
    targets = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    assert brier_score(targets, probs) == pytest.approx((0.02 + 0.08 + 0.72 + 0.18) / 4)
    # Confidence bins: 0.9 (right), 0.8 (right), 0.6 (wrong), 0.7 (right) each alone in its bin.
    assert expected_calibration_error(targets, probs) == pytest.approx((0.1 + 0.2 + 0.6 + 0.3) / 4)


def test_per_model_defaults_fill_only_what_is_not_given() -> None:
    assert TrainConfig(model="mean_linear").lr != TrainConfig(model="abmil").lr
    assert TrainConfig(model="mean_linear", lr=0.5).lr == 0.5


def test_cli_options_reach_the_run_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tests.train.cli_app import app
    from wsi_pipeline.config import read_yaml_mapping

    small_cohort(tmp_path, 16)
    args = ["--features", str(tmp_path / "features"), "--labels", str(tmp_path / "labels.csv")]
    args += ["--out", str(tmp_path / "run"), "--model", "mean_linear", "--epochs", "1", "--device", "cpu"]
    args += ["--feature-norm", "none", "--select-on", "auroc", "--min-epochs", "3", "--no-calibrate"]
    result = CliRunner().invoke(app, [*args, "--threads", "1"])
    assert result.exit_code == 0, result.output
    saved = read_yaml_mapping(tmp_path / "run" / "config.yaml")
    assert (saved["feature_norm"], saved["select_on"], saved["min_epochs"]) == ("none", "auroc", 3)
    assert saved["calibrate"] is False and saved["threads"] == 1
    assert "validation set of" in result.output  # 16 slides: the small-validation warning
