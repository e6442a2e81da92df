"""Atomic outputs: a file or folder appears under its final name only once it is complete.

Every stage writes to a hidden temporary sibling (same folder, so the rename never crosses a file system)
and renames it into place. A crash or Ctrl-C at any moment therefore leaves either the previous complete
output or the new complete output, plus at worst a hidden temporary that the next run removes.

Replacing a folder is the one step a single rename cannot do (rename refuses a non-empty target). On Linux
the two folders are swapped in one step (`renameat2(RENAME_EXCHANGE)`); elsewhere, or on a file system
without it, the old folder is first moved aside under a `.old-` name, and `clean_stale_temporaries` puts
it back if a kill came before the new one took its place.

A full disk, a read-only or non-writable folder become a one-line `WsiError` naming the output.

`claimed_folder` makes a run the only writer of its output folder for as long as it runs: removing a killed
run's temporaries is only safe when no live run can be writing them.
"""

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wsi_pipeline.errors import WsiError

TMP_MARKER = ".tmp-"
OLD_MARKER = ".old-"
LOCK_FILE = ".wsi.lock"
# Failures of writing itself, whatever file they name.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.ENAMETOOLONG}
# Failures that are about writing only when they concern the output's own paths.
_ACCESS_ERRNOS = {errno.EACCES, errno.EPERM}
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def temp_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}{TMP_MARKER}{uuid.uuid4().hex[:8]}")


def _aside_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}{OLD_MARKER}{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    """Best effort: a temporary that cannot be removed (a read-only file system) must not hide the error
    that made it a leftover; the next run removes it."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
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


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the OS or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no libc symbol (glibc < 2.28, musl)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _replace_folder(tmp: Path, final: Path) -> None:
    """Put the complete folder `tmp` in place of the existing `final`; a kill at any point loses neither."""
    if _exchange(tmp, final):
        _remove(tmp)  # now the old folder; if a kill comes first, it is a stale temporary
        return
    aside = _aside_sibling(final)
    os.rename(final, aside)
    os.rename(tmp, final)  # a kill just before this: `clean_stale_temporaries` moves `aside` back
    _remove(aside)


def _is_write_failure(exc: OSError, tmp: Path, final: Path) -> bool:
    if exc.errno in _WRITE_ERRNOS:
        return True
    if exc.errno not in _ACCESS_ERRNOS:
        return False
    if exc.filename is None:  # h5py names no file
        return True
    named, tmp, final = (Path(os.path.abspath(p)) for p in (exc.filename, tmp, final))
    # The temporary or anything in it, the output, or a folder on the way to it.
    return named.is_relative_to(tmp) or named.is_relative_to(final) or final.is_relative_to(named)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write `final` into; publish it by rename when the block succeeds.

    Works for files and folders (zarr stores). On any exception, including KeyboardInterrupt, the temporary
    is deleted and `final` is left as it was. A full disk or a folder that cannot be written raises a
    one-line `WsiError` naming `final`.
    """
    tmp = temp_sibling(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        if tmp.is_dir() and final.is_dir() and not final.is_symlink():
            _replace_folder(tmp, final)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        _remove(tmp)
        if _is_write_failure(exc, tmp, final):
            raise WsiError(f"{final}: cannot write it ({exc.strerror or exc})") from exc
        raise
    except BaseException:
        _remove(tmp)
        raise


def write_bytes_atomic(final: Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: Path, text: str) -> None:
    write_bytes_atomic(final, text.encode("utf-8"))


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Undo what a killed run left in `folder` (not recursive); returns the temporaries it removed.

    A folder moved aside to be replaced is put back when its replacement never arrived, else removed.
    """
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if not path.name.startswith("."):
            continue
        if TMP_MARKER in path.name:
            _remove(path)
            removed.append(path)
        elif OLD_MARKER in path.name:
            final = folder / path.name[1:].rsplit(OLD_MARKER, 1)[0]
            if final.exists():
                _remove(path)
                removed.append(path)
            else:
                os.rename(path, final)
    return removed


@contextmanager
def claimed_folder(folder: Path) -> Iterator[list[Path]]:
    """Create `folder`, hold it as this run's alone, and clean what killed runs left in it.

    Yields the temporaries removed. A second run on the same folder gets a one-line error instead of
    deleting the first one's work in progress, whose temporaries look exactly like a dead run's. The claim
    is an advisory `flock` on an empty hidden file; the kernel drops it when the process ends, however it
    ends, so a killed run never leaves a stale claim behind. On a file system without locks (some network
    mounts) the run goes on unclaimed.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise WsiError(f"{folder}: cannot write here ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WsiError(
                f"{folder}: another wsi run is writing to this folder; wait for it to end or choose another"
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                raise
        yield clean_stale_temporaries(folder)
    finally:
        os.close(fd)
