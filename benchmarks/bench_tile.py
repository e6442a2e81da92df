"""Benchmark `wsi tile`: tiles/s against a bare OpenSlide read of the same tiles, with 1 and 2 workers.

The slide is a mosaic of the real CMU-1-Small-Region pixels, 10 x 7 copies = 22,200 x 20,769 px at
0.499 µm/px, an Aperio-like JPEG pyramid with 2x levels (`benchmarks/_slides.py`, cached under
benchmarks/out/). Its 256 µm tiles are 513 level-0 px, read as 257 px squares from level 1: the same read
as 40x TCGA slides (1026 px tiles from their 4x level), and the cheapest read per tile, so the hardest case
for "filters add at most 25 % over the reads".

For the tiles `wsi tile` reads (the grid tiles that pass the tissue filter, found with the library's own
functions), in one run, each repeated and alternated:
  raw          openslide `read_region` at the same level and size (a fresh handle per thread);
  read+resize  the pipeline's `read_tile` (RGBA->RGB, resize to 224), no filters;
  tile_slide   the library's whole per-slide function in this process (also thumbnail, mask, QC, store);
  wsi tile     the command in a fresh process (`wsi tile SLIDE --out DIR --overwrite --workers N`).
Threads share the tiles of the one slide the same way `wsi tile --workers N` does.

Writes benchmarks/results/tile.json and tile.md. Run: uv run python benchmarks/bench_tile.py
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._common import markdown_table  # noqa: E402
from benchmarks._machine import LoadGuard, add_busy_argument, busy_banner  # noqa: E402
from benchmarks._slides import mosaic_slide  # noqa: E402
from wsi_pipeline import __version__  # noqa: E402
from wsi_pipeline.slides import open_slide  # noqa: E402
from wsi_pipeline.tiling.config import TileConfig  # noqa: E402
from wsi_pipeline.tiling.filters import edge_fraction, focus_score, to_gray, white_fraction  # noqa: E402
from wsi_pipeline.tiling.geometry import TileGeometry  # noqa: E402
from wsi_pipeline.tiling.slide import SlideJob, plan_slide, tile_slide  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "tile"
RESULTS = REPO / "benchmarks" / "results"
MOSAIC = (10, 7)
CHUNK = 32


def candidate_tiles(slide: Path, cfg: TileConfig) -> tuple[np.ndarray, TileGeometry]:
    """The tiles `wsi tile` reads, by the same library function `tile_slide` uses."""
    with open_slide(slide) as reader:
        plan = plan_slide(reader, cfg)
    return plan.candidates, plan.geometry


def threaded(
    slide: Path,
    coords: np.ndarray,
    threads: int,
    make_reader: Callable[[Path], object],
    read: Callable[[object, int, int], object],
) -> float:
    """Seconds to apply `read` to every tile, `threads` threads over chunks, one handle per thread."""
    chunks = [coords[i : i + CHUNK] for i in range(0, len(coords), CHUNK)]
    readers: dict[int, object] = {}

    def work(chunk: np.ndarray) -> None:
        reader = readers.setdefault(threading.get_ident(), make_reader(slide))
        for x, y in chunk:
            read(reader, int(x), int(y))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, chunks))
    return time.perf_counter() - started


def time_raw(slide: Path, coords: np.ndarray, geometry: TileGeometry, threads: int) -> float:
    import openslide

    size = (geometry.read_px, geometry.read_px)
    return threaded(
        slide,
        coords,
        threads,
        lambda p: openslide.OpenSlide(str(p)),
        lambda s, x, y: s.read_region((x, y), geometry.read_level, size),
    )


def time_read_resize(slide: Path, coords: np.ndarray, geometry: TileGeometry, threads: int) -> float:
    return threaded(
        slide,
        coords,
        threads,
        open_slide,
        lambda r, x, y: r.read_tile(x, y, geometry.read_level, geometry.read_px, geometry.tile_px),
    )


def time_tile_slide(slide: Path, threads: int) -> float:
    out = OUT / f"lib-{threads}"
    started = time.perf_counter()
    tile_slide(SlideJob(slide, out, TileConfig(), threads))
    return time.perf_counter() - started


def time_cli(slide: Path, workers: int) -> float:
    wsi = Path(sys.executable).parent / "wsi"
    command = [
        str(wsi),
        "tile",
        str(slide),
        "--out",
        str(OUT / f"cli-{workers}"),
        "--overwrite",
        "--workers",
        str(workers),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "COLUMNS": "160"})
    return time.perf_counter() - started


def per_tile_costs(slide: Path, coords: np.ndarray, geometry: TileGeometry, n: int = 200) -> dict[str, float]:
    """Milliseconds per tile of each step, one thread, on the first `n` candidates (a fresh handle)."""
    import openslide

    from wsi_pipeline.slides.reader import resize_tile

    sample = coords[:n]
    slide_handle = openslide.OpenSlide(str(slide))
    steps = {
        "read_region": 0.0,
        "to RGB + resize": 0.0,
        "gray + white": 0.0,
        "canny edge fraction": 0.0,
        "focus score": 0.0,
    }
    for x, y in sample:
        t0 = time.perf_counter()
        region = slide_handle.read_region((int(x), int(y)), geometry.read_level, (geometry.read_px,) * 2)
        t1 = time.perf_counter()
        rgb = np.asarray(resize_tile(region.convert("RGB"), geometry.tile_px))
        t2 = time.perf_counter()
        gray = to_gray(rgb)
        white_fraction(gray, TileConfig().white_gray)
        t3 = time.perf_counter()
        edge_fraction(gray)
        t4 = time.perf_counter()
        focus_score(gray, geometry.tile_um / geometry.tile_px)
        t5 = time.perf_counter()
        for key, seconds in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            steps[key] += seconds
    return {key: 1000 * value / len(sample) for key, value in steps.items()}


def machine() -> dict[str, object]:
    import openslide

    model = ""
    with contextlib.suppress(OSError, StopIteration):
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )

    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "openslide": openslide.__library_version__,
        "wsi": __version__,
        "platform": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    add_busy_argument(parser)
    args = parser.parse_args()
    guard = LoadGuard(threads=max(args.workers), allow_busy=args.allow_busy)  # benchmarks/_machine.py

    slide = mosaic_slide(*MOSAIC)
    with open_slide(slide) as reader:
        level0_px = reader.level0_px
    coords, geometry = candidate_tiles(slide, TileConfig())
    n = len(coords)
    print(
        f"slide {slide.name}: {level0_px[0]} x {level0_px[1]} px, {n} tissue tiles, read at level "
        f"{geometry.read_level} as {geometry.read_px} px -> {geometry.tile_px} px",
        flush=True,
    )
    time_raw(slide, coords, geometry, 2)  # page cache warm for everyone

    kinds = {"raw": time_raw, "read+resize": time_read_resize}
    seconds: dict[str, dict[int, list[float]]] = {
        k: {w: [] for w in args.workers} for k in (*kinds, "tile_slide", "wsi tile")
    }
    for repeat in range(args.repeats):
        for workers in args.workers:
            for kind, function in kinds.items():
                seconds[kind][workers].append(function(slide, coords, geometry, workers))
            seconds["tile_slide"][workers].append(time_tile_slide(slide, workers))
            seconds["wsi tile"][workers].append(time_cli(slide, workers))
            print(
                f"repeat {repeat + 1}, {workers} worker(s): "
                + ", ".join(f"{k} {n / v[workers][-1]:.0f}/s" for k, v in seconds.items()),
                flush=True,
            )

    rates = {
        kind: {w: {"median": n / statistics.median(s), "best": n / min(s)} for w, s in per_w.items()}
        for kind, per_w in seconds.items()
    }
    overhead = {
        kind: {w: rates["raw"][w]["median"] / rates[kind][w]["median"] - 1 for w in args.workers}
        for kind in ("read+resize", "tile_slide", "wsi tile")
    }
    result = {
        "machine": machine(),
        "command": "uv run python benchmarks/bench_tile.py " + " ".join(sys.argv[1:]),
        "slide": {
            "name": slide.name,
            "level0_px": level0_px,
            "mpp": 0.499,
            "tiles": n,
            "read_level": geometry.read_level,
            "read_px": geometry.read_px,
            "tile_px": geometry.tile_px,
        },
        "repeats": args.repeats,
        "seconds": seconds,
        "tiles_per_s": rates,
        "overhead_vs_raw": overhead,
        "per_tile_ms_one_thread": per_tile_costs(slide, coords, geometry),
    }
    result["load"] = guard.finish()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tile.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "tile.md").write_text(markdown(result))
    print(markdown(result))


def _rate_cell(rates: dict, overhead: dict, kind: str, workers: str) -> str:
    """Median (best) tiles/s of one reader kind at one worker count, with its time overhead over raw reads."""
    cell = f"{rates[kind][workers]['median']:.0f} ({rates[kind][workers]['best']:.0f})"
    if kind in overhead:
        cell += f", +{100 * overhead[kind][workers]:.0f} % time vs raw"
    return cell


def markdown(result: dict) -> str:
    slide, rates, overhead = result["slide"], result["tiles_per_s"], result["overhead_vs_raw"]
    workers = list(rates["raw"])
    lines = [
        busy_banner(result["load"]) if "load" in result else "",
        f"Slide: {slide['name']}, {slide['level0_px'][0]} x {slide['level0_px'][1]} px at {slide['mpp']} µm/px, "
        f"{slide['tiles']} tissue tiles read at level {slide['read_level']} as {slide['read_px']} px -> "
        f"{slide['tile_px']} px. Median of {result['repeats']} runs (best in brackets).",
        "",
    ]
    header = ["tiles/s", *(f"{w} worker{'s' if int(w) > 1 else ''}" for w in workers)]
    lines += markdown_table(
        header, ([kind, *(_rate_cell(rates, overhead, kind, w) for w in workers)] for kind in rates)
    )
    lines += [
        "",
        "Per tile, one thread (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["per_tile_ms_one_thread"].items()),
        "",
    ]
    machine = result["machine"]
    lines.append(
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"OpenSlide {machine['openslide']}. Command: `{result['command'].strip()}`."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
