"""Atomic outputs: a file or folder appears under its final name only once it is complete.

Every stage writes to a hidden temporary sibling (same folder, so the rename never crosses a file system)
and renames it into place. A crash or Ctrl-C at any moment therefore leaves either the previous complete
output or the new complete output, plus at worst a hidden temporary that the next run removes.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARKER = ".tmp-"


def temp_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}{TMP_MARKER}{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write `final` into; publish it by rename when the block succeeds.

    Works for files and folders (zarr stores). On any exception, including KeyboardInterrupt, the temporary
    is deleted and `final` is left as it was. Replacing an existing folder moves the old one aside first,
    because a rename cannot replace a non-empty folder.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        if tmp.is_dir() and final.exists():
            old = temp_sibling(final)
            os.rename(final, old)
            os.rename(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes_atomic(final: Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: Path, text: str) -> None:
    write_bytes_atomic(final, text.encode("utf-8"))


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Remove temporaries left by a killed run in `folder` (not recursive). Returns what was removed."""
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and TMP_MARKER in p.name]
    for path in stale:
        _remove(path)
    return stale
