import subprocess
import sys

from wsi_pipeline.models import SCORE_METHODS


def test_every_score_method_is_accepted_by_wsi_eval_without_loading_torch() -> None:
    """`wsi eval --score-method` takes its choices from the models' own list, and `wsi eval --help` (which
    shows them) must stay instant: no torch import."""
    probe = (
        "import sys, typer; from cli.eval import ScoreMethodChoice; "
        "print(' '.join(m.value for m in ScoreMethodChoice)); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    choices, torch_loaded = result.stdout.split("\n")[:2]
    assert choices.split() == list(SCORE_METHODS)
    assert torch_loaded == "False"
