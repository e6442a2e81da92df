from pathlib import Path

import pytest
import yaml

from wsi_pipeline.errors import ConfigError
from wsi_pipeline.models import list_models
from wsi_pipeline.train.config import CONFIGS_DIR, TrainConfig, resolve_train_config


@pytest.mark.parametrize("model", list_models())
def test_each_model_yaml_equals_the_code_defaults(model: str) -> None:
    data = yaml.safe_load((CONFIGS_DIR / "train" / f"{model}.yaml").read_text())
    assert set(data) == set(TrainConfig.model_fields)
    assert TrainConfig.model_validate(data) == TrainConfig(model=model)


def test_every_train_yaml_names_a_registered_model() -> None:
    assert sorted(p.stem for p in (CONFIGS_DIR / "train").glob("*.yaml")) == list_models()


def test_model_option_picks_its_yaml_and_options_win(tmp_path: Path) -> None:
    cfg = resolve_train_config(None, {"model": "abmil", "lr": 0.5}, tmp_path / "run", resume=False)
    assert cfg.model == "abmil" and cfg.lr == 0.5 and cfg.epochs == 100


def test_typos_and_bad_values_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        resolve_train_config(bad, {}, tmp_path / "run", resume=False)
    bad.write_text("split_fractions: {train: 0.5, val: 0.1, test: 0.1}\n")
    with pytest.raises(ConfigError, match="must be 1"):
        resolve_train_config(bad, {}, tmp_path / "run", resume=False)
