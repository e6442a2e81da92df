"""What `wsi train` says so that its run can be evaluated honestly (issue 12, items 3, 4 and 9): patients
guessed from slide ids, the slide behind a NaN bag, and the exact command that resumes an interrupted run."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.bags import write_raw_bag
from tests.train.cli_app import app
from tests.train.helpers import SMALL_DIM, small_cohort, write_table


def _renamed_cohort(tmp: Path, n: int = 8) -> list[str]:
    """`n` bags with ids that are not TCGA barcodes, and labels without a patient_id column."""
    slides = small_cohort(tmp, n, tiles=(10, 20))
    names = [f"case-{i}" for i in range(n)]
    for s, name in zip(slides, names, strict=True):
        (tmp / "features" / f"{s.slide_id}.h5").rename(tmp / "features" / f"{name}.h5")
    rows = [
        [name, s.label, "train" if i < 6 else "val"]
        for i, (s, name) in enumerate(zip(slides, names, strict=True))
    ]
    write_table(tmp / "labels.csv", ["slide_id", "label", "split"], rows)
    return names


def _train(tmp: Path, *extra: str) -> object:
    args = [
        "--features",
        str(tmp / "features"),
        "--labels",
        str(tmp / "labels.csv"),
        "--out",
        str(tmp / "run"),
    ]
    return CliRunner().invoke(app, [*args, "--epochs", "1", "--device", "cpu", *extra])


def test_slide_ids_as_patients_are_warned_about_and_can_be_refused(tmp_path: Path) -> None:
    _renamed_cohort(tmp_path)
    refused = _train(tmp_path, "--require-patient-id")
    assert refused.exit_code == 1 and "no patient_id column" in refused.stderr
    assert "--require-patient-id" in refused.stderr and not (tmp_path / "run").exists()
    import io

    from rich.console import Console

    from tests.train.helpers import quick_config
    from wsi_pipeline.train import run_training

    printed = io.StringIO()
    run_training(quick_config(tmp_path, epochs=1), tmp_path / "run", console=Console(file=printed, width=300))
    assert "warning:" in printed.getvalue() and "treated as its own patient" in printed.getvalue()


def test_a_nan_bag_is_refused_with_its_slide_id(tmp_path: Path) -> None:
    names = _renamed_cohort(tmp_path)
    features = np.ones((5, SMALL_DIM), np.float32)
    features[1, 3] = np.nan
    write_raw_bag(tmp_path / "features" / f"{names[4]}.h5", features)
    result = _train(tmp_path)
    assert result.exit_code == 1 and f"slide {names[4]}:" in result.stderr and "NaN" in result.stderr


def test_an_interrupted_train_names_the_command_that_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wsi_pipeline.train.run as train

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run_training", interrupted)
    result = _train(tmp_path)
    assert result.exit_code == 130
    assert f"wsi train --out {tmp_path / 'run'} --resume" in result.stderr
