"""`wsi tile` over many slides: resume, workers, progress, and the summary.

Nothing is lost and nothing stops the batch: complete stores are skipped (unless `overwrite`) and re-done
when their slide's bytes or mtime changed; every slide ends as one `SlideOutcome`, bad ones with a
one-line reason. `workers` is a budget of CPU cores: several slides run in a process pool (each worker
opens its own slide handles), and cores left over, e.g. with a single slide, become reader threads inside
a slide. One worker runs in this process, which keeps `--debug` tracebacks direct. With the Ray backend
each slide is one single-core task on the cluster instead; what to skip is decided here either way.
"""

import multiprocessing
import queue
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from wsi_pipeline.backends import Backend, ray_session, run_tasks
from wsi_pipeline.batch import SlideOutcome, print_summary
from wsi_pipeline.config import write_resolved_config
from wsi_pipeline.errors import WsiError
from wsi_pipeline.ids import slide_id_for
from wsi_pipeline.progress import RateColumn, progress_bar
from wsi_pipeline.stores.atomic import claimed_folder
from wsi_pipeline.stores.tile_store import TileStoreMeta, read_tile_store_meta, store_path
from wsi_pipeline.tiling.config import TileConfig
from wsi_pipeline.tiling.slide import (
    FILTERS,
    SUMMARY_LABELS,
    ProgressCallback,
    SlideJob,
    summary_fields,
    tile_slide,
)

RESOLVED_CONFIG_NAME = "tile_config.yaml"
SUMMARY_COLUMNS = ["mpp", "mpp source", "level", "kept", "recall", *(SUMMARY_LABELS[f] for f in FILTERS)]
Decision = Literal["todo", "skip", "fail"]

# The progress queue of a pool worker, set once per process by `_init_worker`.
_worker_queue: Any = None

# Called with (job index, outcome) as each slide finishes, in completion order.
FinishedCallback = Callable[[int, SlideOutcome], None]


def resume_decision(
    slide_path: Path, out_dir: Path, cfg: TileConfig, overwrite: bool
) -> tuple[Decision, str, TileStoreMeta | None]:
    """Whether a slide's existing store can stand, why not, and the store's attributes when it can."""
    path = store_path(out_dir, slide_id_for(slide_path))
    if overwrite or not path.exists():
        return "todo", "", None
    try:
        meta = read_tile_store_meta(path)
    except WsiError:
        return "todo", "previous store unreadable, redone", None
    try:
        stat = slide_path.stat()
    except OSError:
        return "todo", "", None
    if (meta.slide_bytes, meta.slide_mtime) != (stat.st_size, stat.st_mtime):
        return "todo", "slide changed since its store was written, redone", None
    differences = settings_differences(meta, cfg)
    if differences:
        return (
            "fail",
            (
                f"{path} was made with other settings ({differences}); pass --overwrite to replace it, "
                "or write to another --out"
            ),
            None,
        )
    return "skip", "complete store exists", meta


def settings_differences(meta: TileStoreMeta, cfg: TileConfig) -> str:
    """Settings that would change the store's tiles, as 'key stored -> wanted'; empty when none differ."""
    pairs: list[tuple[str, object, object]] = [
        ("tile_um", meta.tile_um, cfg.tile_um),
        ("tile_px", meta.tile_px, cfg.tile_px),
        ("tissue_method", meta.tissue_method, cfg.tissue_method),
        *((key, meta.thresholds.get(key), value) for key, value in cfg.thresholds().items()),
    ]
    # An explicit --mpp matters only where it was used (or is now forced), and only when given again.
    if cfg.mpp is not None and (cfg.mpp_override or meta.mpp_source in ("fallback", "mpp-override")):
        pairs.append(("mpp", meta.mpp_level0, cfg.mpp))
    return ", ".join(f"{key} {old} -> {new}" for key, old, new in pairs if old != new)


def tile_slides(
    slides: Sequence[Path],
    out_dir: Path,
    cfg: TileConfig,
    *,
    workers: int = 1,
    overwrite: bool = False,
    debug: bool = False,
    console: Console | None = None,
    backend: Backend | None = None,
) -> list[SlideOutcome]:
    """Tile `slides` into `out_dir`; returns one outcome per slide, in the order given."""
    backend = backend or Backend()
    console = console or Console(stderr=True)
    with claimed_folder(out_dir) as stale_outputs:
        for stale in stale_outputs:
            console.print(
                f"removed an incomplete output of an interrupted run: {stale.name}",
                soft_wrap=True,
                markup=False,
                highlight=False,
            )
        outcomes, jobs, notes = _decide(slides, out_dir, cfg, overwrite, console)
        processes = min(max(1, workers), max(1, len(jobs)))
        threads = max(1, workers // processes)
        jobs = {i: SlideJob(job.slide_path, job.out_dir, job.config, threads) for i, job in jobs.items()}
        started = time.perf_counter()
        outcomes.update(_run_jobs(jobs, notes, processes, backend, console, debug))
        elapsed = time.perf_counter() - started

        ordered = [outcomes[i] for i in range(len(slides))]
        # Only a run that leaves stores made with these settings describes the folder; a run whose every
        # slide failed must not overwrite the record of how the existing stores were made.
        if any(o.status != "failed" for o in ordered):
            write_resolved_config(out_dir / RESOLVED_CONFIG_NAME, cfg)
        print_summary(console, "wsi tile", ordered, SUMMARY_COLUMNS)
        _print_rate(console, ordered, elapsed, workers, backend)
        return ordered


def _decide(
    slides: Sequence[Path], out_dir: Path, cfg: TileConfig, overwrite: bool, console: Console
) -> tuple[dict[int, SlideOutcome], dict[int, SlideJob], dict[int, str]]:
    """Outcomes of slides decided without tiling (skipped, failed), and the jobs (with notes) to run."""
    outcomes: dict[int, SlideOutcome] = {}
    jobs: dict[int, SlideJob] = {}
    notes: dict[int, str] = {}
    for index, slide in enumerate(slides):
        try:
            decision, note, meta = resume_decision(Path(slide), out_dir, cfg, overwrite)
        except WsiError as exc:  # a file name that cannot name outputs: this slide fails, the batch goes on
            outcomes[index] = SlideOutcome(Path(slide).name, "failed", " ".join(str(exc).split()))
            _print_failure(console, Path(slide), outcomes[index].reason)
            continue
        if decision == "todo":
            jobs[index] = SlideJob(Path(slide), out_dir, cfg)
            notes[index] = note
        elif decision == "skip" and meta is not None:
            outcomes[index] = SlideOutcome(
                slide_id_for(Path(slide)), "skipped", note, fields=summary_fields(meta, out_dir)
            )
        else:
            outcomes[index] = SlideOutcome(slide_id_for(Path(slide)), "failed", note)
            _print_failure(console, Path(slide), note)
    return outcomes, jobs, notes


def _run_jobs(
    jobs: dict[int, SlideJob],
    notes: dict[int, str],
    processes: int,
    backend: Backend,
    console: Console,
    debug: bool,
) -> dict[int, SlideOutcome]:
    """Run the jobs here, in a pool or on Ray, with the progress display; one outcome per job."""
    outcomes: dict[int, SlideOutcome] = {}
    with progress_bar(console, RateColumn(), label="{task.description:>6}", transient=False) as progress:
        slides_task = progress.add_task("slides", total=len(jobs), unit="slides")
        tiles_task = progress.add_task("tiles", total=0, unit="tiles")

        def on_progress(kind: str, n: int) -> None:
            if kind == "candidates":
                progress.update(tiles_task, total=(progress.tasks[tiles_task].total or 0) + n)
            else:
                progress.advance(tiles_task, n)

        def finished(index: int, outcome: SlideOutcome) -> None:
            if notes.get(index) and outcome.status == "done" and not outcome.reason:
                outcome.reason = notes[index]
            outcomes[index] = outcome
            progress.advance(slides_task)
            _report(console, jobs[index].slide_path, outcome, debug)

        if backend.is_ray:
            _run_ray(jobs, backend, on_progress, finished)
        elif processes == 1:
            for index, job in jobs.items():
                finished(index, _run_here(job, on_progress, debug))
        else:
            _run_pool(jobs, processes, on_progress, finished)
    return outcomes


def _print_rate(
    console: Console, outcomes: list[SlideOutcome], elapsed: float, workers: int, backend: Backend
) -> None:
    tiles_read = sum(int(o.fields.get("tiles read", 0)) for o in outcomes)
    if not tiles_read:
        return
    where = (
        "on Ray, its start included" if backend.is_ray else f"{workers} worker{'s' if workers > 1 else ''}"
    )
    console.print(
        f"{tiles_read} tiles read and filtered in {elapsed:.1f} s ({tiles_read / elapsed:.0f} tiles/s, {where})"
    )


def _run_here(job: SlideJob, on_progress: ProgressCallback, debug: bool) -> SlideOutcome:
    try:
        return tile_slide(job, on_progress)
    except WsiError as exc:
        if debug:
            raise
        return _failed(job, " ".join(str(exc).split()))
    except Exception as exc:
        if debug:
            raise
        return _failed(job, _unexpected(exc))


def _run_ray(
    jobs: dict[int, SlideJob], backend: Backend, on_progress: ProgressCallback, finished: FinishedCallback
) -> None:
    """One single-core task per slide; tasks may run on other nodes, so every path is absolute."""
    remote_jobs = {
        i: SlideJob(job.slide_path.absolute(), job.out_dir.absolute(), job.config, 1)
        for i, job in jobs.items()
    }
    if not remote_jobs:
        return
    with ray_session(backend) as ray:
        for index, outcome in run_tasks(
            ray, run_job_in_worker, remote_jobs, lambda job: slide_id_for(job.slide_path)
        ):
            # Tasks do not stream tile counts back; a slide's tiles count when it is done.
            tiles = int(outcome.fields.get("tiles read", 0))
            on_progress("candidates", tiles)
            on_progress("tiles", tiles)
            finished(index, outcome)


def run_job_in_worker(job: SlideJob) -> SlideOutcome:
    """Pool and Ray entry point: never raises, so one slide's error cannot break the batch; keeps the
    traceback for --debug."""

    def on_progress(kind: str, n: int) -> None:
        if _worker_queue is not None:
            _worker_queue.put((kind, n))

    try:
        return tile_slide(job, on_progress)
    except WsiError as exc:
        outcome = _failed(job, " ".join(str(exc).split()))
        outcome.fields["traceback"] = traceback.format_exc()
    except Exception as exc:
        outcome = _failed(job, _unexpected(exc))
        outcome.fields["traceback"] = traceback.format_exc()
    return outcome


def _init_worker(progress_queue: Any) -> None:
    global _worker_queue
    _worker_queue = progress_queue
    # Ctrl-C is the parent's to handle: it stops the workers (see `_pool_pass`); otherwise every idle
    # worker would print its own KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_pool(
    jobs: dict[int, SlideJob], processes: int, on_progress: ProgressCallback, finished: FinishedCallback
) -> None:
    """Slides across worker processes; a slide whose worker died is retried alone, so a crash (e.g. in
    the slide library) costs only the slide that caused it."""
    # spawn, not fork: the parent runs a progress thread, and forked locks and slide handles are unsafe.
    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue()
    broken = _pool_pass(jobs, processes, context, progress_queue, on_progress, finished)
    for index in broken:
        retry = _pool_pass({index: jobs[index]}, 1, context, progress_queue, on_progress, finished)
        if retry:
            finished(
                index,
                _failed(
                    jobs[index],
                    "the worker process died while tiling this slide "
                    "(a crash or out of memory in the slide reader)",
                ),
            )


def _pool_pass(
    jobs: dict[int, SlideJob],
    processes: int,
    context: Any,
    progress_queue: Any,
    on_progress: ProgressCallback,
    finished: FinishedCallback,
) -> list[int]:
    broken: list[int] = []
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=_init_worker, initargs=(progress_queue,)
    ) as pool:
        futures: dict[Future[SlideOutcome], int] = {
            pool.submit(run_job_in_worker, job): i for i, job in jobs.items()
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress_queue, on_progress)
                for future in done:
                    try:
                        finished(futures[future], future.result())
                    except BrokenProcessPool:
                        broken.append(futures[future])
        except KeyboardInterrupt:
            # Stop now rather than after the running slides; their temporaries go at the next run's start.
            pool.shutdown(wait=False, cancel_futures=True)
            for child in multiprocessing.active_children():
                child.terminate()
            raise
    _drain(progress_queue, on_progress)
    return sorted(broken)


def _drain(progress_queue: Any, on_progress: ProgressCallback) -> None:
    while True:
        try:
            kind, n = progress_queue.get_nowait()
        except queue.Empty:
            return
        on_progress(kind, n)


def _failed(job: SlideJob, reason: str) -> SlideOutcome:
    return SlideOutcome(slide_id_for(job.slide_path), "failed", reason)


def _unexpected(exc: Exception) -> str:
    message = " ".join(f"{type(exc).__name__}: {exc}".split())
    return f"unexpected {message} (re-run with --debug for the traceback)"


def _report(console: Console, slide_path: Path, outcome: SlideOutcome, debug: bool) -> None:
    if outcome.status == "failed":
        if debug and "traceback" in outcome.fields:
            console.print(str(outcome.fields["traceback"]), markup=False, highlight=False)
        _print_failure(console, slide_path, outcome.reason)
    elif outcome.status == "done" and outcome.fields.get("warning"):
        console.print(
            f"WARNING: {slide_path}: {outcome.reason}",
            style="bold yellow",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )


def _print_failure(console: Console, slide_path: Path, reason: str) -> None:
    # The reason of a slide error already names the file; others get it prefixed.
    text = reason if str(slide_path) in reason or slide_path.name in reason else f"{slide_path}: {reason}"
    console.print(f"error: {text}", style="red", soft_wrap=True, markup=False, highlight=False)
