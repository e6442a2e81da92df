"""`claimed_folder`: one writer per output folder, so cleaning a killed run's temporaries never deletes a
live run's work in progress."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.atomic import LOCK_FILE, claimed_folder, temp_sibling

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from wsi_pipeline.stores.atomic import claimed_folder
    with claimed_folder(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(120)
    """
)


def test_a_claimed_folder_refuses_a_second_writer_and_cleans_nothing_of_the_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with claimed_folder(out):
        in_progress = temp_sibling(out / "slide.zarr")
        in_progress.mkdir()
        with (
            pytest.raises(WsiError, match="another wsi run is writing to this folder") as error,
            claimed_folder(out),
        ):
            pass
        assert str(out) in str(error.value) and "\n" not in str(error.value)
        assert in_progress.is_dir()
    with claimed_folder(out) as removed:  # free again once the first claim ended
        assert removed == [in_progress] and not in_progress.exists()
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_a_killed_holder_leaves_no_stale_claim(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(WsiError, match="another wsi run"), claimed_folder(out):
            pass
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    with claimed_folder(out) as removed:
        assert removed == []
