"""`wsi predict` on the command line: every input mistake is one line on stderr and a non-zero exit."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from wsi_pipeline.stores.run_folder import EXTRACTOR_FILE


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["predict", *args])
    return result.exit_code, result.stderr


def one_line_error(code: int, stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], stderr


def test_predicts_and_prints_a_summary(kfold_run: Path, unlabelled, tmp_path: Path) -> None:
    bags, truth = unlabelled
    code, stderr = invoke(
        "--run",
        str(kfold_run),
        "--features",
        str(bags),
        "--out",
        str(tmp_path / "p"),
        "--no-heatmaps",
        "--device",
        "cpu",
    )
    assert code == 0, stderr
    assert f"wsi predict: {len(truth)} done, 0 skipped, 0 failed" in stderr


def test_a_refused_bag_fails_the_batch(kfold_run: Path, tmp_path: Path) -> None:
    import numpy as np

    from tests.predict.conftest import write_planted_bag

    (tmp_path / "bags").mkdir()
    write_planted_bag(tmp_path / "bags", "GOOD", True, np.random.default_rng(1))
    write_planted_bag(tmp_path / "bags", "ODD", True, np.random.default_rng(2), weights_sha256="other")
    code, stderr = invoke(
        "--run",
        str(kfold_run),
        "--features",
        str(tmp_path / "bags"),
        "--out",
        str(tmp_path / "p"),
        "--no-heatmaps",
    )
    assert code == 1 and "1 done, 0 skipped, 1 failed" in stderr
    assert "error: ODD: weights_sha256 'other' (the run's: 'synthetic-weights-A')" in stderr


def _run_copy(kfold_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(kfold_run, run)
    return run


@pytest.mark.parametrize(
    "mistake",
    [
        "no_run",
        "not_a_run",
        "unfinished",
        "empty_folder",
        "no_folder",
        "bad_fold",
        "out_is_file",
        "both_inputs",
        "neither_input",
        "slides_without_weights",
        "bad_patients",
    ],
)
def test_input_mistakes(mistake: str, kfold_run: Path, unlabelled, tmp_path: Path) -> None:
    bags, _ = unlabelled
    run, out = kfold_run, tmp_path / "p"
    args = ["--features", str(bags)]
    needles: tuple[str, ...] = ()
    if mistake == "no_run":
        run, needles = tmp_path / "nope", ("no such run folder",)
    elif mistake == "not_a_run":
        run, needles = tmp_path, ("not a run folder",)
    elif mistake == "unfinished":
        run = _run_copy(kfold_run, tmp_path)
        (run / "fold_2" / "checkpoint.pt").unlink()
        needles = ("unfinished run", "fold_2/checkpoint.pt")
    elif mistake == "empty_folder":
        (tmp_path / "empty").mkdir()
        args, needles = ["--features", str(tmp_path / "empty")], ("no feature bags",)
    elif mistake == "no_folder":
        args, needles = ["--features", str(tmp_path / "missing")], ("no such folder of feature bags",)
    elif mistake == "bad_fold":
        args, needles = [*args, "--fold", "3"], ("--fold 3", "3 fold(s)")
    elif mistake == "out_is_file":
        out.write_text("x")
        needles = ("is a file, not a folder",)
    elif mistake == "both_inputs":
        args, needles = [*args, "--slides", str(tmp_path)], ("not both",)
    elif mistake == "neither_input":
        args, needles = [], ("--features BAGS/ or --slides",)
    elif mistake == "slides_without_weights":
        run = _run_copy(kfold_run, tmp_path)
        record = json.loads((run / EXTRACTOR_FILE).read_text())
        record.update(extractor="retccl", weights_sha256="ab" * 32, feature_dim=2048)
        (run / EXTRACTOR_FILE).write_text(json.dumps(record))
        args, needles = ["--slides", str(tmp_path)], ("extractor retccl needs weights", "--weights W")
    elif mistake == "bad_patients":
        (tmp_path / "patients.csv").write_text("slide,patient\nA,B\n")
        args, needles = [*args, "--patients", str(tmp_path / "patients.csv")], ("slide_id,patient_id",)
    code, stderr = invoke("--run", str(run), *args, "--out", str(out))
    one_line_error(code, stderr, *needles)
