"""Running `wsi` as a user does (a separate process through the installed entry point), and killing it.

`run_wsi` runs a command to the end. `run_until_killed` starts one in its own process group (so DataLoader
and pool workers share its fate, as under a job scheduler that kills the whole job), freezes the group with
SIGSTOP at the chosen moment, lists the output folder while nothing moves, then sends SIGKILL to the group
and waits until every member is gone.

Subprocesses get one intra-op thread (`OMP_NUM_THREADS=1`): every run of a command, interrupted or not,
then computes in the same order, and the tests do not fight over the two cores of the CI machine.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.outputs import listing

REPO = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).parent / "wsi"
WSI: list[str] = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "cli.main"]
# Root ignores file permissions; without these two capabilities it is held to them like anyone else.
_DROP_DAC = "-dac_override,-dac_read_search"


def wsi_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200", PYTHONUNBUFFERED="1")
    env.pop("FORCE_COLOR", None)
    return env


@dataclass(frozen=True)
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:
        return f"$ wsi {' '.join(self.args)}\nexit {self.returncode}\n--- stderr\n{self.stderr}\n--- stdout\n{self.stdout}"


def as_file_owner_only() -> list[str]:
    """A command prefix under which permission bits apply, also when the tests run as root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing, so permissions cannot be tested")
    return [setpriv, f"--inh-caps={_DROP_DAC}", f"--bounding-set={_DROP_DAC}"]


def run_wsi(args: Sequence[str], *, timeout: float = 600, prefix: Sequence[str] = ()) -> Result:
    args = [str(a) for a in args]
    started = time.perf_counter()
    done = subprocess.run(
        [*prefix, *WSI, *args], cwd=REPO, env=wsi_env(), capture_output=True, text=True, timeout=timeout
    )
    return Result(args, done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


def run_wsi_here(args: Sequence[str]) -> Result:
    """The same command in this process (the real `wsi` app through click's test runner): no interpreter
    start and no torch import per command. An exception escaping the app, which a user would see as a
    traceback, is turned into one, so the checks for "Traceback" still see it."""
    import traceback

    from typer.testing import CliRunner

    from cli.main import app

    args = [str(a) for a in args]
    started = time.perf_counter()
    done = CliRunner().invoke(app, args, prog_name="wsi")
    stderr = done.stderr
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        stderr += "".join(traceback.format_exception(done.exception))
    return Result(args, done.exit_code, done.stdout, stderr, time.perf_counter() - started)


@dataclass(frozen=True)
class Killed:
    """One interrupted run: whether the kill came before the command ended, and what it had written."""

    killed: bool
    after_s: float
    outputs_at_kill: set[str]  # relative paths under the watched folder, hidden ones included
    returncode: int | None  # of a run that ended before its kill moment
    log: Path


def run_until_killed(args: Sequence[str], after_s: float, watched: Path, log: Path) -> Killed:
    args = [str(a) for a in args]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [*WSI, *args],
            cwd=REPO,
            env=wsi_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=after_s)
            return Killed(False, after_s, listing(watched), code, log)
        except subprocess.TimeoutExpired:
            pass
        group = proc.pid
        _signal_group(group, signal.SIGSTOP)
        _wait_until(lambda: all(state in "TtZX" for state in _group_states(group).values()))
        outputs = listing(watched)
        _signal_group(group, signal.SIGKILL)
        proc.wait()
        _wait_until(lambda: all(state in "ZX" for state in _group_states(group).values()))
    return Killed(True, after_s, outputs, None, log)


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(group, sig)


def _group_states(group: int) -> dict[int, str]:
    """pid -> state letter of every process in process group `group` (Linux /proc)."""
    states = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == group:
            states[int(entry.name)] = fields[0]
    return states


def _wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("processes of a killed wsi command did not stop")
        time.sleep(0.01)
