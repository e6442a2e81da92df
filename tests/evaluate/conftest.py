from pathlib import Path

import pytest

from tests.threads import one_torch_thread, single_thread  # noqa: F401 (autouse: one torch thread)
from tests.train.helpers import quick_config, small_cohort
from wsi_pipeline.train import run_training


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-split run of a narrow vit_sf on 24 small 64-d bags (features and labels beside it)."""
    root = tmp_path_factory.mktemp("single")
    small_cohort(root, 24)
    with single_thread():
        run_training(quick_config(root, epochs=2), root / "run")
    return root / "run"


@pytest.fixture(scope="session")
def kfold_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kfold")
    small_cohort(root, 24)
    with single_thread():
        run_training(quick_config(root, epochs=1, folds=3), root / "run")
    return root / "run"


@pytest.fixture(scope="session")
def patient_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-split run on 32 bags of 16 patients (two slides each, patient_id column)."""
    from tests.bags import write_labels

    root = tmp_path_factory.mktemp("patients")
    slides = small_cohort(root, 32, slides_per_patient=2, tiles=(20, 40))
    write_labels(root / "labels.csv", slides, patient_column=True)
    with single_thread():
        run_training(quick_config(root, epochs=1), root / "run")
    return root / "run"
