"""`wsi_pipeline.stores.atomic` under SIGKILL and full disks: the primitive every stage's outputs rely on.

Replacing a complete folder (a tile store under `--overwrite`) is the one step a single rename cannot do.
Every state a kill can leave during a replacement is built here and must recover to a complete folder
once `clean_stale_temporaries` has run (as every stage does at its start): with the one-step exchange
(`renameat2(RENAME_EXCHANGE)`) only "swapped, old not yet removed"; with the two-rename fallback also
"old moved aside, new not yet in place", the state in which the original code lost the store. A child
process replacing a folder in a tight loop and killed at random moments checks the same end to end (the
rename window is microseconds of a millisecond loop, so random kills rarely land in it: the built states
are what proves the window safe).
"""

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.outputs import leftovers
from tests.reliability.process import REPO
from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores import atomic
from wsi_pipeline.stores.atomic import atomic_path, clean_stale_temporaries, write_bytes_atomic

REPLACER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from wsi_pipeline.stores import atomic

    final, fallback = Path(sys.argv[1]), sys.argv[2] == "fallback"
    if fallback:
        atomic._exchange = lambda a, b: False  # as on a file system without RENAME_EXCHANGE
    version = 0
    while True:
        version += 1
        with atomic.atomic_path(final) as tmp:
            tmp.mkdir()
            for part in range(20):
                (tmp / f"part{part}").write_text(str(version))
    """
)


def _complete_version(folder: Path) -> int:
    parts = {(folder / f"part{i}").read_text() for i in range(20)}
    assert len(parts) == 1, f"{folder} mixes versions {parts}"
    return int(parts.pop())


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_a_folder_being_replaced_survives_sigkill(tmp_path: Path, mode: str) -> None:
    if mode == "exchange" and not _exchange_supported(tmp_path):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here")
    final = tmp_path / "store.zarr"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        for part in range(20):
            (tmp / f"part{part}").write_text("0")
    rng = random.Random(f"atomic-{mode}")
    seen = 0
    for _ in range(int(os.environ.get("WSI_KILLS", "5")) * 2):
        child = subprocess.Popen([sys.executable, "-c", REPLACER, str(final), mode], cwd=REPO)
        time.sleep(0.5 + rng.uniform(0, 0.5))  # past the imports, into the loop
        child.send_signal(signal.SIGKILL)
        child.wait()
        clean_stale_temporaries(tmp_path)
        assert final.is_dir(), (
            "the store vanished: killed between moving the old one aside and the new one in"
        )
        seen = max(seen, _complete_version(final))
        assert leftovers(tmp_path) == []
    assert seen > 0, "the child never replaced the folder"


def test_exchange_swaps_two_folders(tmp_path: Path) -> None:
    if not _exchange_supported(tmp_path):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here")
    assert (tmp_path / "a" / "which").read_text() == "b" and (tmp_path / "b" / "which").read_text() == "a"


def _exchange_supported(folder: Path) -> bool:
    a, b = folder / "a", folder / "b"
    for path in (a, b):
        path.mkdir()
        (path / "which").write_text(path.name)
    return atomic._exchange(a, b)


def test_a_folder_moved_aside_comes_back_when_its_replacement_never_arrived(tmp_path: Path) -> None:
    """The state a kill leaves between the fallback's two renames: old aside, new complete but hidden."""
    old = tmp_path / f".s.zarr{atomic.OLD_MARKER}0123abcd"
    new = tmp_path / f".s.zarr{atomic.TMP_MARKER}89abcdef"
    for folder, version in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "v").write_text(version)
    clean_stale_temporaries(tmp_path)
    assert (tmp_path / "s.zarr" / "v").read_text() == "old" and leftovers(tmp_path) == []


def test_a_swapped_out_folder_is_removed_and_its_replacement_kept(tmp_path: Path) -> None:
    """The state a kill leaves after the exchange: the new folder in place, the old one at a temporary name."""
    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / "v").write_text("new")
    swapped_out = tmp_path / f".s.zarr{atomic.TMP_MARKER}0123abcd"
    swapped_out.mkdir()
    (swapped_out / "v").write_text("old")
    assert clean_stale_temporaries(tmp_path) == [swapped_out]
    assert (tmp_path / "s.zarr" / "v").read_text() == "new" and leftovers(tmp_path) == []


def test_a_folder_moved_aside_goes_once_its_replacement_is_in_place(tmp_path: Path) -> None:
    aside = tmp_path / f".s.zarr{atomic.OLD_MARKER}0123abcd"
    aside.mkdir()
    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / "v").write_text("new")
    assert clean_stale_temporaries(tmp_path) == [aside]
    assert (tmp_path / "s.zarr" / "v").read_text() == "new" and leftovers(tmp_path) == []


def test_a_failure_to_write_names_the_output(tmp_path: Path) -> None:
    final = tmp_path / "out.bin"
    with (
        pytest.raises(WsiError, match=rf"{final}: cannot write it \(No space left on device\)"),
        atomic_path(final) as tmp,
    ):
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []


def test_a_permission_error_elsewhere_is_not_blamed_on_the_output(tmp_path: Path) -> None:
    elsewhere = tmp_path / "input.svs"
    with pytest.raises(PermissionError), atomic_path(tmp_path / "out.bin"):
        raise PermissionError(errno.EACCES, "Permission denied", str(elsewhere))
    with pytest.raises(WsiError, match="cannot write it"), atomic_path(tmp_path / "out.bin") as tmp:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    assert list(tmp_path.iterdir()) == []


def test_full_and_read_only_file_systems(
    tmp_path: Path, small_filesystem: Callable[[Path, int], Path]
) -> None:
    import torch

    from wsi_pipeline.stores.run_folder import Checkpoint, save_checkpoint

    disk = small_filesystem(tmp_path / "disk", 64)
    write_bytes_atomic(disk / "small.bin", b"x" * 1024)
    with pytest.raises(WsiError, match=rf"{disk / 'big.bin'}: cannot write it \(No space left on device\)"):
        write_bytes_atomic(disk / "big.bin", b"x" * 200_000)
    checkpoint = Checkpoint("abmil", {}, 4, ("a", "b"), {"w": torch.zeros(100_000)}, 1, 0.5)
    with pytest.raises(WsiError, match=r"checkpoint\.pt: cannot write it \(No space left on device\)"):
        save_checkpoint(disk / "checkpoint.pt", checkpoint)  # not torch's bare RuntimeError
    assert sorted(p.name for p in disk.iterdir()) == ["small.bin"]

    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    with pytest.raises(WsiError, match="cannot write it \\(Read-only file system\\)"):
        write_bytes_atomic(disk / "small.bin", b"new")
    assert (disk / "small.bin").read_bytes() == b"x" * 1024
