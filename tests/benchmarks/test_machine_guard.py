"""The load rule every benchmark applies (benchmarks/_machine.py): busy runs are refused or labelled."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _machine


def _loads(monkeypatch: pytest.MonkeyPatch, *values: float) -> None:
    it = iter(values)
    monkeypatch.setattr(_machine, "load_1min", lambda: next(it))


def test_a_quiet_run_is_recorded_as_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    _loads(monkeypatch, 0.3, 1.9)  # after: 0.5 * 2 cores + its own 1 thread = 2.0 allowed
    record = _machine.LoadGuard(threads=1, cores=2).finish()
    assert record["busy"] is False
    assert "Quiet machine" in _machine.busy_banner(record)


def test_a_busy_machine_is_refused_before_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    _loads(monkeypatch, 1.5)
    with pytest.raises(SystemExit, match="allow-busy"):
        _machine.LoadGuard(threads=1, cores=2)


def test_load_from_other_work_during_the_run_refuses_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    _loads(monkeypatch, 0.2, 3.5)
    guard = _machine.LoadGuard(threads=1, cores=2)
    with pytest.raises(SystemExit):
        guard.finish()


def test_allow_busy_records_the_run_labelled_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    _loads(monkeypatch, 4.0, 5.0)
    record = _machine.LoadGuard(threads=1, cores=2, allow_busy=True).finish()
    assert record["busy"] is True and record["load_before"] == 4.0
    assert _machine.busy_banner(record).startswith("**BUSY MACHINE**")


def test_benchmarks_without_timings_never_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    _loads(monkeypatch, 4.0, 5.0)
    assert _machine.LoadGuard(threads=1, cores=2, timing=False).finish()["busy"] is True
