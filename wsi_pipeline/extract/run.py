"""`wsi extract` over a folder of tile stores: one feature bag per slide, resumable, one bad slide at a time.

First, in this process and whatever the backend, every store is planned: skip it when its bag is complete
and was made from this very store with this recipe; redo it when the store changed since; refuse to
replace a bag made with another recipe; find the slide. Then the remaining slides are extracted
(`slide.extract_slide`), here one after the other with DataLoader processes reading tiles, or as one Ray
task each. Failures become a `SlideOutcome` with a one-line reason and the batch goes on.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from types import ModuleType

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID

from wsi_pipeline.backends import (
    Backend,
    alive_node_resources,
    check_fits,
    cpus_per_gpu_slot,
    ray_session,
    run_tasks,
)
from wsi_pipeline.batch import SlideOutcome
from wsi_pipeline.config import write_resolved_config
from wsi_pipeline.devices import torch_threads
from wsi_pipeline.errors import WsiError
from wsi_pipeline.extract.config import MAX_AUTO_WORKERS, ExtractConfig, resolve_workers
from wsi_pipeline.extract.locate import SlideLocator
from wsi_pipeline.extract.registry import Extractor, build_extractor
from wsi_pipeline.extract.slide import (
    Encoder,
    SlideTask,
    extract_slide,
    extract_slide_task,
    failed_outcome,
    prepare_encoder,
    store_fingerprint,
)
from wsi_pipeline.ids import check_slide_id
from wsi_pipeline.progress import RateColumn, progress_bar
from wsi_pipeline.stores.atomic import claimed_folder
from wsi_pipeline.stores.feature_bag import bag_path, read_bag_attrs
from wsi_pipeline.stores.tile_store import STORE_SUFFIX, list_tile_stores, read_tile_store

CONFIG_NAME = "extract_config.yaml"
SUMMARY_COLUMNS = ["tiles", "tiles/s"]
# What makes two bags of the same store interchangeable; a bag made otherwise is never silently kept.
_RECIPE_KEYS = ("extractor", "weights_sha256", "extractor_sha256", "dtype")
# Warn when the µm per model-input pixel differs from the extractor's training scale by more than this.
GEOMETRY_TOLERANCE = 0.25
# Called once per slide task with its outcome and how many of its tiles went through the encoder.
Finished = Callable[[int, SlideOutcome, int], None]


def extract_stores(
    tiles_dir: Path,
    out_dir: Path,
    config: ExtractConfig,
    console: Console,
    *,
    debug: bool = False,
    backend: Backend | None = None,
) -> list[SlideOutcome]:
    """Extract a bag for every tile store in `tiles_dir` into `out_dir`; one outcome per store."""
    backend = backend or Backend()
    stores = list_tile_stores(tiles_dir)
    if not stores:
        raise WsiError(f"{tiles_dir}: no tile stores (<slide_id>{STORE_SUFFIX}) here; run wsi tile first")
    locator = SlideLocator(config.slides_root)
    extractor = _build_extractor(config)
    # Local runs prepare the encoder once, here; Ray tasks prepare it on their own node's device.
    encoder = None if backend.is_ray else prepare_encoder(extractor, config)
    with claimed_folder(out_dir):
        _announce(console, len(stores), out_dir, extractor, encoder, config)
        recipe = {"dtype": config.dtype, **{k: v for k, v in extractor.attrs().items() if k in _RECIPE_KEYS}}
        # Ray tasks choose their own readers (`_extract_on_ray`), knowing the node they land on.
        loader_workers = resolve_workers(config.workers, encoder.runtime.device.type) if encoder else 1
        outcomes: dict[int, SlideOutcome] = {}
        tasks: dict[int, SlideTask] = {}
        with progress_bar(console, RateColumn(), transient=False, eta=True) as progress:
            slides_task = progress.add_task("slides", total=len(stores), unit="")
            for index, store in enumerate(stores):
                planned = _plan(store, out_dir, config, locator, recipe, loader_workers, debug)
                if isinstance(planned, SlideOutcome):
                    outcomes[index] = planned
                    _report_failure(console, store, planned)
                    progress.advance(slides_task)
                else:
                    tasks[index] = planned
            _warn_geometry(console, extractor, tasks.values())
            tiles_task = progress.add_task(
                "tiles", total=sum(t.n_tiles for t in tasks.values()), unit="tiles"
            )
            finished = _on_finished(console, progress, tasks, outcomes, (slides_task, tiles_task), debug)
            if encoder is not None:
                with torch_threads(config.threads):
                    for index, task in tasks.items():
                        progress.update(
                            tiles_task, description=f"tiles [dim]{escape(task.store_path.stem)}[/]"
                        )
                        _extract_here(index, task, encoder, progress, tiles_task, finished, debug)
            elif tasks:
                with ray_session(backend) as ray:
                    _extract_on_ray(
                        ray, tasks, extractor, config, backend, console, progress, tiles_task, finished
                    )
        ordered = [outcomes[index] for index in range(len(stores))]
        # Only a run that leaves bags made with these settings describes the folder; a run whose every slide
        # failed must not overwrite the record of how the existing bags were made.
        if any(o.status != "failed" for o in ordered):
            write_resolved_config(out_dir / CONFIG_NAME, config)
        return ordered


def _build_extractor(config: ExtractConfig) -> Extractor:
    return build_extractor(
        config.model,
        config.weights,
        config.random_init,
        spec_file=config.extractor_spec,
        stain_norm=config.stain_norm,
        stain_target=config.stain_target,
    )


def _on_finished(
    console: Console,
    progress: Progress,
    tasks: dict[int, SlideTask],
    outcomes: dict[int, SlideOutcome],
    bars: tuple[TaskID, TaskID],
    debug: bool,
) -> Finished:
    """The callback each finished slide reports through, wherever it ran: record its outcome, say what went
    wrong, and move the progress bars."""
    slides_task, tiles_task = bars

    def finished(index: int, outcome: SlideOutcome, n_extracted: int) -> None:
        if "warning" in outcome.fields:
            console.print(f"[yellow]warning:[/] {escape(str(outcome.fields['warning']))}")
        if debug and "traceback" in outcome.fields:
            console.print(str(outcome.fields["traceback"]), markup=False, highlight=False)
        # Tiles not extracted (a failed slide) leave the total, so tiles/s and the ETA stay honest.
        missing = tasks[index].n_tiles - n_extracted
        total = progress.tasks[tiles_task].total
        if missing > 0 and total is not None:
            progress.update(tiles_task, total=total - missing)
        outcomes[index] = outcome
        _report_failure(console, tasks[index].store_path, outcome)
        progress.advance(slides_task)

    return finished


def _announce(
    console: Console,
    n_stores: int,
    out_dir: Path,
    extractor: Extractor,
    encoder: Encoder | None,
    config: ExtractConfig,
) -> None:
    where = (
        "on Ray"
        if encoder is None
        else f"{encoder.runtime.device.type} {encoder.runtime.precision_name}, "
        f"workers {resolve_workers(config.workers, encoder.runtime.device.type)}"
    )
    console.print(
        f"wsi extract: {n_stores} tile stores -> {out_dir}; {extractor.name} "
        f"(weights {extractor.weights_sha256[:12]}), {where}, "
        f"batch {encoder.batch_size if encoder else config.batch_size}, {config.dtype} features"
        + (f", stain {config.stain_norm}" if config.stain_norm != "none" else "")
    )


def _warn_geometry(console: Console, extractor: Extractor, tasks: Iterable[SlideTask]) -> None:
    """Once per run: the tiles' µm per model-input pixel against the scale the extractor was trained at."""
    trained = extractor.recipe.mpp
    if trained is None:
        return
    off = []
    for task in tasks:
        if not task.tile_px:
            continue
        seen = task.tile_um / (extractor.recipe.model_px or task.tile_px)
        if abs(seen / trained - 1) > GEOMETRY_TOLERANCE:
            off.append((task.store_path.stem, seen, task.tile_um, task.tile_px))
    if off:
        name, seen, tile_um, tile_px = off[0]
        px = extractor.recipe.model_px or tile_px
        console.print(
            f"[yellow]warning:[/] {len(off)} tile store(s) (first: {escape(name)}, {tile_um:g} µm over "
            f"{tile_px} px) give {extractor.name} {seen:.2f} µm/px, but it was trained at {trained:.2f} "
            f"µm/px; tile with --tile-um {trained * px:g} --tile-px {px} to match",
            soft_wrap=True,
        )


def _report_failure(console: Console, store_path: Path, outcome: SlideOutcome) -> None:
    """A failed slide as one `error:` line as it happens (the summary table wraps long reasons)."""
    if outcome.status != "failed":
        return
    reason = outcome.reason
    named = any(name in reason for name in (str(store_path), store_path.name, outcome.slide_id))
    text = reason if named else f"{store_path}: {reason}"
    console.print(f"error: {text}", style="red", soft_wrap=True, markup=False, highlight=False)


def _plan(
    store_path: Path,
    out_dir: Path,
    config: ExtractConfig,
    locator: SlideLocator,
    recipe: dict[str, str],
    loader_workers: int,
    debug: bool,
) -> SlideTask | SlideOutcome:
    """What to do with one store: a task, or already its outcome (skipped, or failed before starting)."""
    started = time.perf_counter()
    slide_id = store_path.name.removesuffix(STORE_SUFFIX)
    n_tiles = 0
    try:
        store = read_tile_store(store_path)
        meta, coords = store.meta, store.coords
        slide_id = check_slide_id(meta.slide_id)
        n_tiles = int(coords.shape[0])
        out = bag_path(out_dir, slide_id)
        note = ""
        if out.exists() and not config.overwrite:
            note = _reason_to_redo(out, store_fingerprint(meta, coords), recipe)
            if not note:
                return SlideOutcome(
                    slide_id, "skipped", "bag exists", time.perf_counter() - started, {"tiles": n_tiles}
                )
        # An empty store needs no slide: its bag is written from the store alone.
        slide_path = Path(meta.slide_path) if n_tiles == 0 else locator.find(meta).absolute()
        return SlideTask(
            store_path=store_path.absolute(),
            out_dir=out_dir.absolute(),
            config=config,
            slide_path=slide_path,
            n_tiles=n_tiles,
            loader_workers=loader_workers,
            note=note,
            tile_um=meta.tile_um,
            tile_px=meta.tile_px,
        )
    except (WsiError, OSError) as exc:
        reason = " ".join(str(exc).split())
    except Exception as exc:
        if debug:
            raise
        reason = " ".join(
            f"unexpected {type(exc).__name__}: {exc} (re-run with --debug for the traceback)".split()
        )
    return SlideOutcome(slide_id, "failed", reason, time.perf_counter() - started, {"tiles": n_tiles})


def _extract_here(
    index: int,
    task: SlideTask,
    encoder: Encoder,
    progress: Progress,
    tiles_task: TaskID,
    finished: Finished,
    debug: bool,
) -> None:
    started = time.perf_counter()
    n_extracted = 0

    def advance(count: int) -> None:
        nonlocal n_extracted
        n_extracted += count
        progress.advance(tiles_task, count)

    try:
        outcome = extract_slide(task, encoder, advance)
    except (WsiError, OSError) as exc:
        outcome = failed_outcome(task, exc, time.perf_counter() - started)
    except Exception as exc:
        if debug:
            raise
        outcome = failed_outcome(task, exc, time.perf_counter() - started)
    finished(index, outcome, n_extracted)


def _extract_on_ray(
    ray: ModuleType,
    tasks: dict[int, SlideTask],
    extractor: Extractor,
    config: ExtractConfig,
    backend: Backend,
    console: Console,
    progress: Progress,
    tiles_task: TaskID,
    finished: Finished,
) -> None:
    """One Ray task per slide, reserving 1 + loader CPUs, and a GPU (or a share) when on CUDA."""
    nodes = alive_node_resources(ray)
    has_gpus = any(r.get("GPU", 0) >= backend.gpus_per_task for r in nodes)
    num_gpus = (
        backend.gpus_per_task if config.device == "cuda" or (config.device == "auto" and has_gpus) else 0
    )
    if config.workers != "auto":
        loader_workers = int(config.workers)
    elif num_gpus:
        # A GPU eats tiles faster than a core reads them: every core of the task's share of its node.
        loader_workers = min(MAX_AUTO_WORKERS, max(1, cpus_per_gpu_slot(nodes, num_gpus) - 1))
    else:
        loader_workers = 1  # on CPU the encoder is the bottleneck; one reader keeps it fed (benchmarks/RESULTS.md, "Extraction")
    num_cpus = 1 + loader_workers
    check_fits(ray, num_cpus, num_gpus, "wsi extract")
    gpus = f" + {num_gpus:g} GPU" if num_gpus else ""
    console.print(f"Ray: one task per slide, {num_cpus} CPUs{gpus} each ({loader_workers} tile readers)")
    remote = {index: replace(task, loader_workers=loader_workers) for index, task in tasks.items()}
    for index, outcome in run_tasks(
        ray,
        extract_slide_task,
        remote,
        lambda task: task.store_path.name.removesuffix(STORE_SUFFIX),
        shared=(extractor,),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    ):
        # Tasks do not stream tile counts back; a slide's tiles count when it is done.
        n_extracted = remote[index].n_tiles if outcome.status == "done" else 0
        progress.advance(tiles_task, n_extracted)
        finished(index, outcome, n_extracted)


def _reason_to_redo(out: Path, fingerprint: str, recipe: dict[str, str]) -> str:
    """'' when the existing bag can be kept; why it is redone; or an error when redoing would lose it."""
    try:
        attrs = read_bag_attrs(out)
    except WsiError:
        return "redone: previous bag unreadable"
    differing = [
        f"{k} {attrs.get(k)!s:.16} (this run: {recipe[k]:.16})"
        for k in _RECIPE_KEYS
        if attrs.get(k) != recipe[k]
    ]
    if differing:
        raise WsiError(
            f"{out} was made with other settings: {'; '.join(differing)}; "
            "pass --overwrite to replace it or choose another --out"
        )
    if attrs.get("tile_store_fingerprint") != fingerprint:
        return "redone: tile store changed"
    return ""
