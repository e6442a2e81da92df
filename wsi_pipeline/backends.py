"""Where a batch stage's slides run: `local` (the stage's own processes) or `ray` (tasks on a Ray cluster).

Both stages cut their work into one picklable job per slide and a module-level function that runs it and
returns a `SlideOutcome` (never raising for the slide's own errors). The stage decides in this process what
to skip, redo or refuse, and removes stale temporaries, whatever the backend; on Ray, `run_tasks` then
sends each remaining job as one task and yields outcomes as tasks finish, so progress and the summary
move on. A task that raises, or whose worker or node dies, becomes a failed outcome for its slide alone;
Ctrl-C cancels what is still outstanding. Tasks may run on other machines, in another working directory:
jobs carry absolute paths, and on several nodes the slides and outputs must be on a shared file system.

Ray is the optional `cluster` extra and is imported only here, only for `--backend ray`.
"""

import importlib.util
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, TypeVar

from wsi_pipeline.batch import SlideOutcome
from wsi_pipeline.errors import WsiError

BackendName = Literal["local", "ray"]
BACKENDS: tuple[BackendName, ...] = ("local", "ray")
INSTALL_HINT = "uv sync --extra cluster, or pip install 'wsi[cluster]'"

K = TypeVar("K")
J = TypeVar("J")


@dataclass(frozen=True)
class Backend:
    """How to run a stage's slides; built by the CLI from `--backend`, `--address` and friends."""

    name: BackendName = "local"
    # A running cluster: host:port of its head, "auto" (RAY_ADDRESS, else the cluster started on this
    # machine with `ray start`) or ray://host:port (Ray Client). None: RAY_ADDRESS if set, else start a
    # private Ray on this machine for the run, listening on the loopback interface only.
    address: str | None = None
    # CPUs of a Ray started here (None: all cores); a cluster that already runs has its own.
    local_cpus: int | None = None
    # GPUs a slide task reserves when it runs on CUDA (wsi extract); a fraction packs several on one GPU.
    gpus_per_task: float = 1.0

    @property
    def is_ray(self) -> bool:
        return self.name == "ray"


def parse_backend(
    name: str, address: str | None, *, local_cpus: int | None = None, gpus_per_task: float | None = None
) -> Backend:
    """The command-line options as a `Backend`, or a one-line error naming the option."""
    if name not in BACKENDS:
        raise WsiError(f"--backend {name!r}: choose local or ray")
    if name != "ray" and address is not None:
        raise WsiError("--address is the Ray cluster to use: it needs --backend ray")
    if name != "ray" and gpus_per_task is not None:
        raise WsiError("--gpus-per-task is what each Ray task reserves: it needs --backend ray")
    if gpus_per_task is not None and not 0 < gpus_per_task <= 1:
        raise WsiError(f"--gpus-per-task {gpus_per_task:g}: expected a fraction in (0, 1]")
    if name == "ray" and importlib.util.find_spec("ray") is None:
        import_ray()  # a missing extra is said now, before any output is written
    return Backend(
        name,  # type: ignore[arg-type]  # checked above
        address,
        local_cpus,
        1.0 if gpus_per_task is None else gpus_per_task,
    )


def import_ray(*, loopback: bool = False) -> ModuleType:
    """Ray, or a one-line error saying how to install it.

    Both settings below are read by Ray when it is first imported in this process; a user's own value wins.
    """
    # Ray's default under `uv run` ships the working directory to every worker and starts them with
    # `uv run`, i.e. re-creates the environment on each node (network, minutes, and the user's data folder
    # uploaded). Workers here use the Python that runs Ray, which has wsi installed.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if loopback:
        # On Linux, even a single-machine Ray advertises and serves on the machine's routable address
        # (127.0.0.1 is rewritten to it). Ray's single-machine mode, the default on macOS and Windows,
        # keeps every Ray process on 127.0.0.1: nothing outside this machine can reach the private Ray.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray  # optional extra `cluster`, heavy: only for --backend ray
    except ImportError as exc:
        raise WsiError(
            f"--backend ray needs Ray, which is the optional 'cluster' extra of wsi ({INSTALL_HINT})"
        ) from exc
    return ray


@contextmanager
def ray_session(backend: Backend) -> Iterator[ModuleType]:
    """Ray connected for one run: to `backend.address`, or a private Ray started here and shut down after.

    A session that is already connected (a notebook, the tests) is used as it is and left running.
    """
    address = backend.address or os.environ.get("RAY_ADDRESS") or None
    ray = import_ray(loopback=address is None)
    if ray.is_initialized():
        yield ray
        return
    quiet: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # a slide's failure comes back as its outcome; worker chatter is noise
        "logging_level": logging.ERROR,
    }
    try:
        if address is None:
            ray.init(
                address="local",  # never join a cluster someone else started on this machine by accident
                num_cpus=backend.local_cpus,
                _node_ip_address="127.0.0.1",
                **quiet,
            )
        else:
            ray.init(address=address, **quiet)
    except Exception as exc:
        ray.shutdown()  # the processes of a half-started Ray
        if address:
            raise WsiError(f"cannot connect to the Ray cluster at {address}: {_one_line(exc)}") from exc
        raise WsiError(
            f"cannot start Ray on this machine: {_one_line(exc)} (Ray's processes start slowly on a busy "
            "machine: try again, or use --backend local)"
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def check_fits(ray: ModuleType, num_cpus: float, num_gpus: float, what: str) -> None:
    """A task no node can hold would wait forever; say so instead, naming what is missing."""
    nodes = alive_node_resources(ray)
    if any(r.get("CPU", 0) >= num_cpus and r.get("GPU", 0) >= num_gpus for r in nodes):
        return
    most_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
    most_gpus = max((r.get("GPU", 0) for r in nodes), default=0)
    gpus = f" and {num_gpus:g} GPU" if num_gpus else ""
    raise WsiError(
        f"{what} needs {num_cpus:g} CPUs{gpus} per slide, but no node of the Ray cluster has that "
        f"(the largest: {most_cpus:g} CPUs, {most_gpus:g} GPUs)"
    )


def alive_node_resources(ray: ModuleType) -> list[dict[str, float]]:
    """Total resources of each node in the cluster that is up."""
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def cpus_per_gpu_slot(nodes: list[dict[str, float]], gpus_per_task: float) -> int:
    """CPUs that each GPU task can have on the smallest GPU node, when every GPU slot there is busy."""
    slots = [
        (r.get("CPU", 0), math.floor(r["GPU"] / gpus_per_task))
        for r in nodes
        if r.get("GPU", 0) >= gpus_per_task
    ]
    return min((int(cpu // n) for cpu, n in slots if n), default=1)


def run_tasks(
    ray: ModuleType,
    function: Callable[..., SlideOutcome],
    jobs: Mapping[K, J],
    slide_id: Callable[[J], str],
    *,
    shared: tuple[object, ...] = (),
    num_cpus: float = 1,
    num_gpus: float = 0,
) -> Iterator[tuple[K, SlideOutcome]]:
    """`function(job, *shared)` as one Ray task per job; yields (key, outcome) in the order they finish.

    `shared` values (a model, say) go into the object store once, not once per task. A worker that dies
    gets one retry, as the local pool retries a slide whose process died; then its slide fails.
    """
    if not jobs:
        return
    remote = ray.remote(function).options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_retries=1, retry_exceptions=False
    )
    shared_refs = [ray.put(value) for value in shared]
    keys = {remote.remote(job, *shared_refs): key for key, job in jobs.items()}
    pending = list(keys)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                key = keys[ref]
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    remote_traceback = getattr(exc, "traceback_str", None) or str(exc)
                    outcome = SlideOutcome(
                        slide_id(jobs[key]),
                        "failed",
                        task_failure(ray, exc),
                        fields={"traceback": remote_traceback},
                    )
                yield key, outcome
    finally:
        # Ctrl-C, or the caller stopped early: outstanding slides are stopped; their temporaries are
        # removed by the next run, which redoes them.
        for ref in pending:
            ray.cancel(ref, force=True)


def task_failure(ray: ModuleType, exc: BaseException) -> str:
    """A task's failure as one line for the summary table."""
    errors = ray.exceptions
    if isinstance(exc, errors.RayTaskError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        return (
            f"unexpected {type(cause).__name__}: {_one_line(cause)} (re-run with --debug for the traceback)"
        )
    if isinstance(exc, errors.OutOfMemoryError):
        return "Ray stopped the task: its node ran out of memory"
    if isinstance(exc, errors.WorkerCrashedError | errors.NodeDiedError):
        return "the Ray worker running this slide died twice (a crash in a library, or its node left)"
    if isinstance(exc, errors.TaskCancelledError):
        return "cancelled"
    return f"Ray: {type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[0].split()) if text else type(exc).__name__
