import yaml

from wsi_pipeline.evaluate.config import CONFIG_FILE, EvalConfig


def test_eval_yaml_equals_the_code_defaults() -> None:
    data = yaml.safe_load(CONFIG_FILE.read_text())
    assert set(data) == set(EvalConfig.model_fields)
    assert EvalConfig.model_validate(data) == EvalConfig()
