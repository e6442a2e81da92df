"""Two runs on one output folder: the second stops with a one-line error and touches nothing.

Every stage removes what killed runs left in its output folder when it starts. A live run's temporaries
look exactly like a dead run's, so a second run on the same folder must not start cleaning: it finds the
folder claimed (`claimed_folder`) and exits 1. Here a process holds the claim, as a running stage does; the
folder holds a complete prior output and a temporary "in progress".
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import TRAIN_EXCLUSIONS, Reference
from tests.reliability.outputs import NONE, tree_content
from tests.reliability.process import run_wsi_here
from tests.stores.test_claimed_folder import HOLD
from wsi_pipeline.stores.atomic import temp_sibling

pytestmark = pytest.mark.slow

STAGES = {
    "tile": ("tile_reference", [], NONE),
    "extract": ("extract_reference", [], NONE),
    "train": ("train_reference", ["--resume"], TRAIN_EXCLUSIONS),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_second_run_on_a_claimed_folder_stops_and_changes_nothing(
    stage: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    fixture, extra, exclusions = STAGES[stage]
    reference: Reference = request.getfixturevalue(fixture)
    out = Path(shutil.copytree(reference.out, tmp_path / "out"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        in_progress = temp_sibling(out / "being-written.h5")  # the holder's work in progress
        in_progress.write_bytes(b"half of a bag")
        before = tree_content(out, exclusions)
        result = run_wsi_here([*reference.command(out), *extra])
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()

    assert result.returncode == 1, str(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(out) in errors[0] and "another wsi run" in errors[0], str(result)
    assert "Traceback" not in result.stderr
    assert in_progress.read_bytes() == b"half of a bag"
    assert tree_content(out, exclusions) == before
