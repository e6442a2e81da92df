import yaml

from wsi_pipeline.evaluate.config import CONFIG_FILE, EvalConfig


def test_eval_yaml_equals_the_code_defaults() -> None:
    data = yaml.safe_load(CONFIG_FILE.read_text())
    assert set(data) == set(EvalConfig.model_fields)
    assert EvalConfig.model_validate(data) == EvalConfig()


def test_the_cli_score_methods_are_the_models() -> None:
    """`wsi eval --score-method` spells the methods out (no torch import for --help); they must stay equal."""
    from cli.eval import ScoreMethodChoice
    from wsi_pipeline.models import SCORE_METHODS

    assert [m.value for m in ScoreMethodChoice] == list(SCORE_METHODS)
