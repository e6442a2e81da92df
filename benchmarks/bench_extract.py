"""Benchmark `wsi extract`: end-to-end tiles/s against the bare model, and peak memory against N.

1. Throughput, in one process with one thread setting: the bare encoder (prepared exactly as `wsi extract`
   prepares it: eval, channels_last, inference_mode, autocast on CUDA) on random tensors of the batch size,
   then `wsi extract` end to end (tile store -> slide reads in DataLoader workers -> encoder -> HDF5) for
   each `--workers` value, on a store of real-pixel tissue tiles of the tiling benchmark's mosaic slide.
   A one-batch warm-up store runs first in every end-to-end run, so both sides are measured warm. Rounds
   interleave all settings and medians are reported, with CPU time per tile as a load-resistant second
   measure (the machines these run on are shared).
2. Peak RSS of `wsi extract` (a fresh process each) on small and large stores: RetCCL, and a trivial
   2048-d encoder (`bench-pool`) that makes large N affordable, where features kept in memory would show.
   Large stores cycle the slide's tissue tiles (repeated reads are cheaper; memory is what is measured).

Writes benchmarks/results/<name>.json and .md. Run: uv run python benchmarks/bench_extract.py; on a GPU
machine: --device cuda --workers 8 15 --batch-size 256 --tiles 512 --rss-tiles --rss-pool-tiles --name extract-cuda

Foundation models and stain normalisation (a separate mode): `--model uni h-optimus-0 --stain none macenko
reinhard vahadane --name extract-models` times each extractor's forward on CPU (random weights, real tiles,
one fresh process each, peak RSS) and the per-tile cost of each stain normaliser in one reader process.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._common import markdown_table  # noqa: E402
from benchmarks._machine import proc_kib  # noqa: E402
from benchmarks._slides import SOURCE_MPP, mosaic_slide  # noqa: E402
from tests.extract.helpers import write_kept_store  # noqa: E402
from wsi_pipeline.slides import open_slide  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "extract"
RESULTS = REPO / "benchmarks" / "results"
TILE_UM, TILE_PX = 256.0, 224
NO_GPU = "not measured: no GPU lent to this task"


# ------------------------------------------------------------------------------------------- stores


def tissue_coords(slide: Path) -> tuple[np.ndarray, dict]:
    """Level-0 corners of grid tiles at least half tissue (saturation on a thumbnail), and the geometry."""
    with open_slide(slide) as reader:
        tile_px_level0 = round(TILE_UM / SOURCE_MPP)
        level = reader.best_level_for_downsample(tile_px_level0 / TILE_PX)
        geometry = {
            "tile_px_level0": tile_px_level0,
            "read_level": level,
            "read_downsample": reader.level_downsamples[level],
        }
        width, height = reader.level0_px
        thumbnail = reader.thumbnail(2048)
    scale = thumbnail.shape[1] / width
    tissue = np.asarray(Image.fromarray(thumbnail).convert("HSV"))[..., 1] > 20
    coords = []
    for y in range(0, height - tile_px_level0 + 1, tile_px_level0):
        for x in range(0, width - tile_px_level0 + 1, tile_px_level0):
            cell = tissue[
                int(y * scale) : int((y + tile_px_level0) * scale),
                int(x * scale) : int((x + tile_px_level0) * scale),
            ]
            if cell.size and cell.mean() >= 0.5:
                coords.append((x, y))
    return np.array(coords, dtype=np.int64), geometry


def write_store(tiles_dir: Path, slide_id: str, slide: Path, coords: np.ndarray, geometry: dict) -> None:
    thumbnail = np.zeros((8, 8, 3), np.uint8)
    write_kept_store(
        tiles_dir,
        slide,
        coords,
        SOURCE_MPP,
        thumbnail,
        slide_id=slide_id,
        tissue_method="benchmark",
        tile_um=TILE_UM,
        tile_px=TILE_PX,
        **geometry,
    )


def cycled(coords: np.ndarray, n: int) -> np.ndarray:
    return coords[np.arange(n) % len(coords)]


# ------------------------------------------------------------------------------------------- throughput


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers are joined at the end)."""
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def bare_model(batch_size: int, batches: int, device: str) -> dict:
    import torch

    from wsi_pipeline.extract.engine import forward, prepare_model, resolve_runtime
    from wsi_pipeline.extract.registry import build_extractor

    extractor = build_extractor("retccl", None, random_init=True)
    runtime = resolve_runtime(device, "auto", extractor.spec.precision)
    model = prepare_model(extractor.spec.model, runtime)
    # channels_last like the normalised batches `wsi extract` feeds, so neither side pays a layout copy
    images = torch.randn(batch_size, 3, TILE_PX, TILE_PX).contiguous(memory_format=torch.channels_last)
    if runtime.is_cuda:
        images = images.pin_memory()
    with torch.inference_mode():
        forward(model, images, runtime).cpu()  # warm-up
        started, cpu_started = time.perf_counter(), cpu_seconds()
        for _ in range(batches):
            forward(model, images, runtime).cpu()
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    tiles = batch_size * batches
    return {
        "tiles": tiles,
        "seconds": seconds,
        "tiles_per_s": tiles / seconds,
        "cpu_s_per_tile": cpu / tiles,
        "precision": runtime.precision_name,
    }


def end_to_end(tiles_dir: Path, warmup_dir: Path, batch_size: int, workers: int, device: str) -> dict:
    """Wall rate of the measured store (from its outcome), and its CPU time: the whole command's CPU minus
    that of the same command on the warm-up store alone (model build, warm-up batch)."""
    from rich.console import Console

    from wsi_pipeline.extract.config import ExtractConfig
    from wsi_pipeline.extract.run import extract_stores

    config = ExtractConfig(random_init=True, batch_size=batch_size, workers=workers, device=device)
    cpu = []
    for stores in (tiles_dir, warmup_dir):
        out_dir = OUT / f"features-e2e-{workers}-{stores.name}"
        shutil.rmtree(out_dir, ignore_errors=True)
        cpu_started = cpu_seconds()
        outcomes = extract_stores(stores, out_dir, config, Console(stderr=True, quiet=True))
        cpu.append(cpu_seconds() - cpu_started)
        if stores == tiles_dir:
            measured = next(o for o in outcomes if o.slide_id == "measured")
    if measured.status != "done":
        raise SystemExit(f"end-to-end run failed: {measured.reason}")
    tiles = measured.fields["tiles"]
    return {
        "workers": workers,
        "tiles": tiles,
        "tiles_per_s": measured.fields["tiles/s"],
        "cpu_s_per_tile": (cpu[0] - cpu[1]) / tiles,
    }


# ------------------------------------------------------------------------------------------- memory


def peak_rss(tiles_dir: Path, model: str, batch_size: int, workers: int, device: str) -> dict:
    out_dir = OUT / f"features-rss-{model}-{tiles_dir.name}"
    shutil.rmtree(out_dir, ignore_errors=True)
    command = [
        sys.executable,
        __file__,
        "--child",
        model,
        str(tiles_dir),
        str(out_dir),
        str(batch_size),
        str(workers),
        device,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {**report, "seconds": time.perf_counter() - started}


def child(model: str, tiles_dir: str, out_dir: str, batch_size: str, workers: str, device: str) -> None:
    """Runs `wsi extract` in this fresh process and prints its peak RSS (MiB) as the last stdout line."""
    import typer
    from typer.main import get_command

    from cli.extract import extract

    if model == "bench-pool":
        register_bench_pool()
    app = typer.Typer()
    app.command()(extract)
    get_command(app).main(
        [
            tiles_dir,
            "--out",
            out_dir,
            "--model",
            model,
            "--random-init",
            "--batch-size",
            batch_size,
            "--workers",
            workers,
            "--device",
            device,
        ],
        standalone_mode=False,
    )
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork + exec.
    peak_kib = proc_kib("VmHWM")
    print(json.dumps({"peak_rss_mib": round(peak_kib / 1024, 1)}))


def register_bench_pool() -> None:
    """A 2048-d encoder costing almost nothing, so memory can be measured on many tiles in little time."""
    import timm
    import torch

    from wsi_pipeline.extract.recipes import ExtractorRecipe, register_extractor

    @timm.models.register_model
    def bench_pool(pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(16), torch.nn.Flatten(), torch.nn.Linear(768, 2048)
        )

    @register_extractor("bench-pool")
    def bench_pool_recipe() -> ExtractorRecipe:
        return ExtractorRecipe(
            architecture="bench_pool",
            input_px=TILE_PX,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            pooling="model",
            feature_dim=2048,
        )


# ------------------------------------------------------------------------------- foundation models, stain


def real_tiles(slide: Path, coords: np.ndarray, geometry: dict, n: int) -> list[np.ndarray]:
    """`n` tissue tiles of the mosaic slide, read as `wsi extract` reads them (224 px over 256 µm)."""
    from types import SimpleNamespace

    from wsi_pipeline.slides.tiles import read_tile

    tile_geometry = SimpleNamespace(tile_px=TILE_PX, **geometry)
    with open_slide(slide) as reader:
        return [read_tile(reader, tile_geometry, int(x), int(y)) for x, y in cycled(coords, n)]


def model_child(
    name: str, batch_size: int, batches: int, slide: str, coords_json: str, geometry_json: str
) -> None:
    """In a fresh process: build `name` (random init, as `wsi extract --random-init`), encode `batches`
    batches of real tiles (preprocessing included) on CPU, print tiles/s and peak RSS as JSON."""
    import torch

    from wsi_pipeline.extract.engine import forward, prepare_model, resolve_runtime
    from wsi_pipeline.extract.registry import build_extractor

    started = time.perf_counter()
    extractor = build_extractor(name, None, random_init=True)
    build_s = time.perf_counter() - started
    runtime = resolve_runtime("cpu", "auto", extractor.spec.precision)
    model = prepare_model(extractor.spec.model, runtime)
    tiles = real_tiles(Path(slide), np.array(json.loads(coords_json)), json.loads(geometry_json), batch_size)
    transform = extractor.spec.transform
    batch = torch.from_numpy(np.stack([transform.prepare(t) for t in tiles]))
    seconds = []
    with torch.inference_mode():
        for _ in range(batches + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            forward(model, transform.normalize(batch), runtime)
            seconds.append(time.perf_counter() - t0)
    peak_kib = proc_kib("VmHWM")
    measured = seconds[1:] or seconds
    print(
        json.dumps(
            {
                "model": name,
                "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                "batch_size": batch_size,
                "batches": len(measured),
                "tiles_per_s": batch_size * len(measured) / sum(measured),
                "precision": runtime.precision_name,
                "build_s": build_s,
                "peak_rss_mib": round(peak_kib / 1024, 1),
            }
        )
    )


def bench_model(
    name: str, batch_size: int, batches: int, slide: Path, coords: np.ndarray, geometry: dict
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--model-child",
        name,
        str(batch_size),
        str(batches),
        str(slide),
        json.dumps(coords[:batch_size].tolist()),
        json.dumps(geometry),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_stain(tiles: list[np.ndarray], methods: list[str]) -> list[dict]:
    """Tiles/s of the per-tile preparation (stain normalisation + resize) one worker does, per method."""
    from wsi_pipeline.extract.stain import stain_normalizer
    from wsi_pipeline.extract.transforms import TileTransform

    started = time.perf_counter()
    import tiatoolbox.tools.stainnorm  # noqa: F401 - paid once per run, not per method: timed apart

    print(f"tiatoolbox import: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    rows = []
    for method in methods:
        started = time.perf_counter()
        normalizer = stain_normalizer(method, None)
        fit_s = time.perf_counter() - started
        transform = TileTransform(TILE_PX, (0.5,) * 3, (0.25,) * 3, stain=normalizer)
        transform.prepare(tiles[0])
        started = time.perf_counter()
        for tile in tiles:
            transform.prepare(tile)
        seconds = time.perf_counter() - started
        rows.append(
            {"stain_norm": method, "tiles": len(tiles), "tiles_per_s": len(tiles) / seconds, "fit_s": fit_s}
        )
        print(f"stain {method}: {rows[-1]['tiles_per_s']:.1f} tiles/s per worker", file=sys.stderr)
    return rows


def models_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads); "
        f"load average {m['load_average_at_start'][0]:.1f} at start, {m['load_average_at_end'][0]:.1f} at end "
        "(machine busy with other work: timings are noisy, lower bounds of an idle machine's).",
    ]
    if result["models"]:
        lines += [
            "",
            "Foundation models on CPU (random weights, float32, real tissue tiles, preprocessing included; "
            "one fresh process each, peak RSS of that process):",
            "",
            "| model | params M | batch | batches | tiles/s | peak RSS MiB | build s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
    for r in result["models"]:
        lines.append(
            f"| {r['model']} | {r['params_m']:.0f} | {r['batch_size']} | {r['batches']} | {r['tiles_per_s']:.3f} "
            f"| {r['peak_rss_mib']:.0f} | {r['build_s']:.0f} |"
        )
    if result["stain"]:
        lines += [
            "",
            f"Stain normalisation cost per DataLoader worker ({result['stain'][0]['tiles']} tiles of 224 px, "
            "one process; fit once per run):",
            "",
            "| --stain-norm | tiles/s per worker | fit s |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {r['stain_norm']} | {r['tiles_per_s']:.1f} | {r['fit_s']:.2f} |" for r in result["stain"]
        ]
    lines += ["", f"GPU: {NO_GPU}", ""]
    return "\n".join(lines)


def models_main(args: argparse.Namespace) -> None:
    result = {"machine": machine(), "command": " ".join(["python", *sys.argv])}
    slide = mosaic_slide(*args.mosaic)
    coords, geometry = tissue_coords(slide)
    result["models"] = []
    for name in args.model or []:
        result["models"].append(
            bench_model(name, args.model_batch_size, args.model_batches, slide, coords, geometry)
        )
        print(f"{name}: {result['models'][-1]['tiles_per_s']:.3f} tiles/s", file=sys.stderr)
    tiles = real_tiles(slide, coords, geometry, args.stain_tiles) if args.stain else []
    result["stain"] = bench_stain(tiles, args.stain) if args.stain else []
    result["machine"]["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(models_markdown(result))
    print(models_markdown(result))


# ------------------------------------------------------------------------------------------- report


def machine() -> dict:
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def markdown(result: dict) -> str:
    m, t = result["machine"], result["throughput"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"GPU: {m['cuda'] or 'none'}; load average {m['load_average_at_start'][0]:.1f} at start "
        f"(machine shared with other work: figures are noisy).",
        "",
        f"Throughput, device {result['device']}, batch {t['batch_size']}, RetCCL (ResNet-50) "
        f"{t['bare']['precision']}, store of {t['store_tiles']} tissue tiles of a "
        f"{result['slide']['name']} ({result['slide']['level0_px'][0]}x{result['slide']['level0_px'][1]} px), "
        "",
        f"median of {t['rounds']} interleaved rounds (each round's figure in brackets).",
        "",
        "| run | workers | tiles | tiles/s | vs bare | CPU s/tile | vs bare, by CPU time |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| bare model, random tensors | - | {t['bare']['tiles']} | {t['bare']['tiles_per_s']:.2f} "
        f"({_samples(t['bare'])}) | 1.00x | {t['bare']['cpu_s_per_tile']:.3f} | 1.00x |",
    ]
    for run in t["end_to_end"]:
        lines.append(
            f"| `wsi extract` end to end | {run['workers']} | {run['tiles']} | {run['tiles_per_s']:.2f} "
            f"({_samples(run)}) | {run['tiles_per_s'] / t['bare']['tiles_per_s']:.2f}x "
            f"| {run['cpu_s_per_tile']:.3f} | {t['bare']['cpu_s_per_tile'] / run['cpu_s_per_tile']:.2f}x |"
        )
    memory = [
        [run["model"], run["tiles"], f"{run['peak_rss_mib']:.0f}", f"{run['seconds']:.0f}"]
        for run in result["memory"]
    ]
    lines += ["", "Peak RSS of `wsi extract` (one fresh process each, workers 0):", ""]
    lines += markdown_table(["encoder", "tiles", "peak RSS MiB", "seconds"], memory)
    lines += ["", f"H100 target (>= 2,500 tiles/s end to end, bf16): {result['gpu_target']}", ""]
    return "\n".join(lines)


def _medians(runs: list[dict]) -> dict:
    return {
        "tiles_per_s": median(r["tiles_per_s"] for r in runs),
        "samples": [r["tiles_per_s"] for r in runs],
        "cpu_s_per_tile": median(r["cpu_s_per_tile"] for r in runs),
        "cpu_samples": [r["cpu_s_per_tile"] for r in runs],
    }


def _samples(run: dict) -> str:
    return ", ".join(f"{v:.2f}" for v in run["samples"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--name", default="extract", help="results/<name>.json and .md")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tiles", type=int, default=128, help="tiles in the throughput store")
    parser.add_argument("--bare-batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; medians are reported")
    parser.add_argument("--threads", type=int, help="torch threads for both sides [default: torch's choice]")
    parser.add_argument("--rss-tiles", type=int, nargs="*", default=[64, 640], help="RetCCL store sizes")
    parser.add_argument(
        "--rss-pool-tiles", type=int, nargs="*", default=[300, 3000, 6000], help="bench-pool store sizes"
    )
    parser.add_argument(
        "--mosaic",
        type=int,
        nargs=2,
        default=[10, 7],
        metavar=("COLUMNS", "ROWS"),
        help="the slide of bench_tile.py",
    )
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument(
        "--model", nargs="*", help="foundation-model mode: CPU tiles/s and peak RSS of these extractors"
    )
    parser.add_argument("--model-batch-size", type=int, default=4)
    parser.add_argument("--model-batches", type=int, default=1, help="timed batches after one warm-up")
    parser.add_argument(
        "--stain", nargs="*", default=[], help="with --model: per-tile cost of these --stain-norm methods"
    )
    parser.add_argument("--stain-tiles", type=int, default=32)
    parser.add_argument("--model-child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.model_child:
        name, batch_size, batches, *rest = args.model_child
        model_child(name, int(batch_size), int(batches), *rest)
        return
    if args.model or args.stain:
        models_main(args)
        return

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = {"machine": machine(), "device": args.device, "command": " ".join(["python", *sys.argv])}
    slide = mosaic_slide(*args.mosaic)
    coords, geometry = tissue_coords(slide)
    with open_slide(slide) as reader:
        result["slide"] = {
            "name": f"{args.mosaic[0]}x{args.mosaic[1]} mosaic of CMU-1-Small-Region",
            "level0_px": reader.level0_px,
            "tissue_tiles": len(coords),
            **geometry,
        }
    n_tiles = min(args.tiles, len(coords))
    throughput_dir, warmup_dir = OUT / "tiles-throughput", OUT / "tiles-warmup"
    for folder in (throughput_dir, warmup_dir):
        shutil.rmtree(folder, ignore_errors=True)
        write_store(folder, "0-warmup", slide, coords[-args.batch_size :], geometry)
    write_store(throughput_dir, "measured", slide, coords[:n_tiles], geometry)

    # Rounds interleave the bare model and every end-to-end setting, so load from other work on a shared
    # machine hits all of them alike; the medians are reported.
    bare_runs, e2e_runs = [], {w: [] for w in args.workers}
    for round_index in range(args.rounds):
        bare_runs.append(bare_model(args.batch_size, args.bare_batches, args.device))
        print(f"round {round_index}: bare model {bare_runs[-1]['tiles_per_s']:.2f} tiles/s", file=sys.stderr)
        for workers in args.workers:
            e2e_runs[workers].append(
                end_to_end(throughput_dir, warmup_dir, args.batch_size, workers, args.device)
            )
            print(
                f"round {round_index}: end to end, {workers} workers: "
                f"{e2e_runs[workers][-1]['tiles_per_s']:.2f} tiles/s",
                file=sys.stderr,
            )
    bare = {**bare_runs[0], **_medians(bare_runs)}
    runs = [{"workers": w, "tiles": n_tiles, **_medians(samples)} for w, samples in e2e_runs.items()]
    result["throughput"] = {
        "batch_size": args.batch_size,
        "store_tiles": n_tiles,
        "rounds": args.rounds,
        "bare": bare,
        "end_to_end": runs,
    }

    memory = []
    for model, sizes in (("retccl", args.rss_tiles), ("bench-pool", args.rss_pool_tiles)):
        for n in sizes:
            tiles_dir = OUT / f"tiles-rss-{n}"
            shutil.rmtree(tiles_dir, ignore_errors=True)
            write_store(tiles_dir, "rss", slide, cycled(coords, n), geometry)
            memory.append(
                {"model": model, "tiles": n, **peak_rss(tiles_dir, model, args.batch_size, 0, args.device)}
            )
            print(f"peak RSS {model} {n} tiles: {memory[-1]['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    result["memory"] = memory
    result["gpu_target"] = (
        f"{max(r['tiles_per_s'] for r in runs):.0f} tiles/s measured" if args.device == "cuda" else NO_GPU
    )
    result["machine"]["load_average_at_end"] = os.getloadavg()

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
