"""`wsi predict` on one very large bag: peak memory and seconds, per model, prediction plus heatmap.

A run is trained for real (`run_training`, one epoch on small bags of the same width, so the run folder and
its checkpoint are exactly what `wsi train` writes); then `run_prediction` predicts one bag of `--tiles`
tiles with a heatmap (PNG + GeoJSON, no top-k strip: there is no slide), each model in its own process so
the peak RSS (`VmHWM`) is that model's alone. The parent polls the child's RSS and kills it above
`--max-rss-gb`, recording the kill, so a model that does not fit cannot take the machine down.

    nice -n 10 uv run python benchmarks/bench_predict.py --allow-busy          # 200,000 tiles, 3 models
    uv run python benchmarks/bench_predict.py --tiles 20000 --models abmil --tag smoke

Writes benchmarks/results/predict_<tag>.{json,md}. The load rule of benchmarks/_machine.py applies.
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import LoadGuard, add_busy_argument, busy_banner, describe_machine, proc_kib

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
MODELS = ["vit_sf", "vit_sf_ca", "abmil"]
ROWS_PER_WRITE = 1 << 15


def write_big_bag(path: Path, n_tiles: int, dim: int, seed: int) -> None:
    """A bag of `n_tiles` fp16 Gaussian tiles on a square grid, written in slices (no full float32 copy)."""
    import numpy as np

    from wsi_pipeline.stores.feature_bag import write_bag

    side = int(np.ceil(np.sqrt(n_tiles)))
    cells = np.arange(n_tiles)
    coords = np.stack([cells % side, cells // side], axis=1).astype(np.int64) * 512
    attrs = {
        "slide_id": path.stem,
        "extractor": "bench",
        "weights_sha256": "bench",
        "feature_dim": dim,
        "tile_um": 256.0,
        "tile_px": 224,
        "mpp_level0": 0.5,
        "tile_px_level0": 512,
    }
    rng = np.random.default_rng(seed)
    with write_bag(path, coords=coords, feature_dim=dim, dtype="float16", attrs=attrs) as writer:
        for start in range(0, n_tiles, ROWS_PER_WRITE):
            rows = min(ROWS_PER_WRITE, n_tiles - start)
            writer.write(rng.standard_normal((rows, dim), dtype=np.float32).astype(np.float16))


def train_small_run(root: Path, model: str, dim: int, folds: int) -> Path:
    """A real run folder: `folds` fold(s) of `model`, one epoch on 20 bags of 40 tiles of width `dim`."""
    from wsi_pipeline.train import TrainConfig, run_training

    bags = root / f"train_bags_{dim}"
    if not bags.is_dir():
        bags.mkdir()
        for i in range(20):
            write_big_bag(bags / f"S{i:02d}.h5", 40, dim, seed=i)
        with open(root / "labels.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["slide_id", "label"])
            writer.writerows([f"S{i:02d}", ("a", "b")[i % 2]] for i in range(20))
    cfg = TrainConfig(
        features=bags, labels=root / "labels.csv", model=model, epochs=1, folds=folds, device="cpu"
    )
    run_training(cfg, root / f"run_{model}")
    return root / f"run_{model}"


def worker(run: Path, bags: Path, out: Path, threads: int, score_method: str | None) -> dict[str, Any]:
    """In a fresh process: predict the bag with heatmap; seconds and peak RSS."""
    import torch

    torch.set_num_threads(threads)
    from wsi_pipeline.predict.config import PredictConfig
    from wsi_pipeline.predict.run import run_prediction

    baseline_kib = proc_kib("VmRSS")
    cfg = PredictConfig(features=bags, top_k=0, device="cpu", score_method=score_method)
    started = time.perf_counter()
    result = run_prediction(cfg, run, out)
    seconds = time.perf_counter() - started
    outcome = result.outcomes[0]
    return {
        "status": outcome.status,
        "reason": outcome.reason,
        "seconds": round(seconds, 2),
        "peak_rss_gb": round(proc_kib("VmHWM") / 2**20, 3),
        "rss_after_imports_gb": round(baseline_kib / 2**20, 3),
        "ru_maxrss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "score_method": score_method or "model default",
    }


def run_child(args: argparse.Namespace, run: Path, bags: Path, out: Path) -> dict[str, Any]:
    """The worker in its own process, killed above --max-rss-gb or --time-limit."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        str(run),
        str(bags),
        str(out),
        "--threads",
        str(args.threads),
    ]
    if args.score_method:
        command += ["--score-method", args.score_method]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    started, peak_kib = time.perf_counter(), 0
    while child.poll() is None:
        try:
            peak_kib = max(peak_kib, proc_kib("VmRSS", child.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        elapsed = time.perf_counter() - started
        if peak_kib > args.max_rss_gb * 2**20 or elapsed > args.time_limit:
            child.kill()
            child.wait()
            why = "memory" if peak_kib > args.max_rss_gb * 2**20 else "time"
            return {
                "status": f"killed ({why})",
                "seconds": round(elapsed, 1),
                "peak_rss_gb": round(peak_kib / 2**20, 3),
            }
        time.sleep(0.2)
    output = child.stdout.read() if child.stdout else ""
    if child.returncode != 0 or not output.strip():
        return {"status": f"crashed (exit {child.returncode})", "peak_rss_gb": round(peak_kib / 2**20, 3)}
    return json.loads(output.strip().splitlines()[-1])


def markdown(result: dict[str, Any]) -> str:
    lines = [
        busy_banner(result["machine"]),
        f"`wsi predict` of one {result['tiles']:,}-tile {result['dim']}-d fp16 bag with heatmap (PNG + GeoJSON), "
        f"{result['folds']} fold(s), CPU, {result['threads']} threads; each model in its own process.\n",
        "| model | status | seconds | peak RSS GB | RSS after imports GB | score method |",
        "|---|---|---:|---:|---:|---|",
    ]
    for model, row in result["models"].items():
        lines.append(
            f"| `{model}` | {row['status']} | {row.get('seconds', '')} | {row.get('peak_rss_gb', '')} | "
            f"{row.get('rss_after_imports_gb', '')} | {row.get('score_method', '')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiles", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score-method", default=None, help="default: each model's own")
    parser.add_argument("--max-rss-gb", type=float, default=8.0)
    parser.add_argument("--time-limit", type=float, default=900.0)
    parser.add_argument("--tag", default="cpu_200k")
    parser.add_argument("--worker", nargs=3, metavar=("RUN", "BAGS", "OUT"), help=argparse.SUPPRESS)
    add_busy_argument(parser)
    args = parser.parse_args()
    if args.worker:
        run, bags, out = (Path(p) for p in args.worker)
        print(json.dumps(worker(run, bags, out, args.threads, args.score_method)))
        return

    guard = LoadGuard(threads=args.threads, allow_busy=args.allow_busy)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        root = Path(tmp)
        (root / "bag").mkdir()
        write_big_bag(root / "bag" / "BIG.h5", args.tiles, args.dim, seed=0)
        for model in args.models:
            run = train_small_run(root, model, args.dim, args.folds)
            rows[model] = run_child(args, run, root / "bag", root / f"out_{model}")
            print(model, rows[model], file=sys.stderr)
            write_report(args, rows, guard.load_before)  # after every model: a kill keeps the rows so far
    print(write_report(args, rows, guard.load_before, guard.finish()))


def write_report(
    args: argparse.Namespace, rows: dict[str, Any], load_before: float, load: dict[str, Any] | None = None
) -> str:
    """Write results/predict_<tag>.{json,md}; `load` is the guard's record once the run is complete."""
    incomplete = {"load_before": round(load_before, 2), "load_after": None, "cores": os.cpu_count()}
    record = load or {**incomplete, "busy": True, "busy_rule": "incomplete run: no load sample at the end"}
    result = {
        "tiles": args.tiles,
        "dim": args.dim,
        "folds": args.folds,
        "threads": args.threads,
        "models": rows,
        "machine": {**describe_machine(), **record},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"predict_{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (RESULTS / f"predict_{args.tag}.md").write_text(text)
    return text


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    main()
