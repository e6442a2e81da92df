"""`run_tasks` on a real Ray: shared values, and a slide whose task raises or whose worker dies fails
alone, with a one-line reason, while the others finish. And the private Ray listens on loopback only."""

import os

import psutil
import pytest

from wsi_pipeline.backends import import_ray, run_tasks
from wsi_pipeline.batch import SlideOutcome

pytestmark = pytest.mark.slow


def _slide_job(kind: str, tag: str) -> SlideOutcome:
    """Module level, so Ray workers import it by name like the stages' own entry points."""
    if kind == "raises":
        raise ValueError("bad pixels\nsecond line")
    if kind == "dies":
        os._exit(3)  # a crash in a native library, as the worker sees it
    return SlideOutcome(kind, "done", tag)


def test_failures_are_one_line_each_and_the_rest_finish(ray_address: str) -> None:
    jobs = {0: "fine", 1: "raises", 2: "dies", 3: "also-fine"}
    results = dict(run_tasks(import_ray(), _slide_job, jobs, lambda kind: kind, shared=("shared-tag",)))
    assert sorted(results) == [0, 1, 2, 3]
    assert [(results[i].status, results[i].reason) for i in (0, 3)] == [("done", "shared-tag")] * 2
    raised, died = results[1], results[2]
    assert (raised.slide_id, raised.status) == ("raises", "failed")
    assert raised.reason == "unexpected ValueError: bad pixels (re-run with --debug for the traceback)"
    remote_traceback = str(raised.fields["traceback"])  # printed by --debug
    assert "in _slide_job" in remote_traceback and "ValueError: bad pixels" in remote_traceback
    assert (died.slide_id, died.status) == ("dies", "failed")
    assert died.reason.startswith("the Ray worker running this slide died")


def test_the_private_ray_listens_on_loopback_only(ray_address: str) -> None:
    assert ray_address.startswith("127.0.0.1:")
    ray_processes = {p.pid for p in psutil.Process().children(recursive=True)}
    listening = [
        c.laddr
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in ray_processes
    ]
    assert listening  # GCS, raylet, object manager, agents, workers
    assert {address.ip for address in listening} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening
