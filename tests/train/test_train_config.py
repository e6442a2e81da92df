from pathlib import Path

import pytest

from wsi_pipeline.errors import ConfigError
from wsi_pipeline.train.config import MODEL_DEFAULTS, TrainConfig, resolve_train_config


def test_options_win_over_the_file_and_the_file_over_the_code_defaults(tmp_path: Path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("model: abmil\nlr: 0.001\nepochs: 7\n")
    cfg = resolve_train_config(preset, {"lr": 0.5}, tmp_path / "run", resume=False)
    assert (cfg.model, cfg.lr, cfg.epochs) == ("abmil", 0.5, 7)
    assert cfg.patience == TrainConfig().patience  # neither file nor option: the code default


def test_resume_without_config_starts_from_the_runs_own_settings(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: abmil\nepochs: 3\n")
    assert resolve_train_config(None, {}, run, resume=True).epochs == 3
    assert resolve_train_config(None, {}, run, resume=False).epochs == TrainConfig().epochs


def test_typos_and_bad_values_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        resolve_train_config(bad, {}, tmp_path / "run", resume=False)
    bad.write_text("split_fractions: {train: 0.5, val: 0.1, test: 0.1}\n")
    with pytest.raises(ConfigError, match="must be 1"):
        resolve_train_config(bad, {}, tmp_path / "run", resume=False)


def test_resuming_a_run_saved_before_a_per_model_setting_existed_keeps_what_it_trained_with(
    tmp_path: Path,
) -> None:
    """A saved config.yaml is complete; one without `l2` predates it, so the run trained at l2 = 0 and must
    not switch to `abmil`'s newer default when resumed. An option given again still wins."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: abmil\nlr: 0.0005\nepochs: 3\n")
    assert resolve_train_config(None, {"l2": None, "epochs": None}, run, resume=True).l2 == 0.0
    assert resolve_train_config(None, {"l2": 0.5}, run, resume=True).l2 == 0.5
    fresh = resolve_train_config(None, {"model": "abmil"}, tmp_path / "new", resume=True)
    assert fresh.l2 == MODEL_DEFAULTS["abmil"]["l2"]  # a new run takes the model's default
    (run / "config.yaml").write_text("model: abmil\nlr: 0.0005\nl2: 0.01\n")
    assert resolve_train_config(None, {}, run, resume=True).l2 == 0.01


def test_abmil_trains_unclipped_unless_its_run_was_saved_with_clipping(tmp_path: Path) -> None:
    """`abmil`'s per-model default turns clipping off (None), which the model-defaults merge must not mistake for
    'not given'; other models keep the plain default; a run saved with clipping resumes with it."""
    assert TrainConfig(model="abmil").grad_clip_norm is None
    assert TrainConfig(model="vit_sf").grad_clip_norm == 1.0  # the plain default
    assert TrainConfig(model="abmil", grad_clip_norm=0.5).grad_clip_norm == 0.5
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: abmil\nlr: 0.0005\ngrad_clip_norm: 1.0\n")
    assert resolve_train_config(None, {"epochs": None}, run, resume=True).grad_clip_norm == 1.0
    preset = tmp_path / "preset.yaml"
    preset.write_text("model: vit_sf\ngrad_clip_norm: null\n")
    assert resolve_train_config(preset, {}, tmp_path / "new", resume=False).grad_clip_norm is None
