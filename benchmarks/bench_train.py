"""Training throughput: seconds per epoch, bags/s and peak memory of `wsi train`, per bag-cache mode.

The cohort is shaped like TCGA-NSCLC in the paper: 627 training and 145 validation bags of 2,000-11,000
tiles (uniform), 2048-d float16 features, written once as real feature bags (seeded; cached under
`benchmarks/out/`). `--scale` shrinks the number of bags, not their size, so every step is a real
whole-bag step; the full-cohort epoch time is then extrapolated linearly in tiles from the measured rate.
Each cache mode runs `run_training` in its own process, so peak memory is that mode's alone. The first
epoch includes one-off costs (allocator warm-up, lazy imports) and is reported apart from the rest.

    uv run python benchmarks/bench_train.py --scale 0.01 --epochs 2          # CPU, a few minutes
    uv run python benchmarks/bench_train.py --device cuda --epochs 3         # the H100 target run

Target (issue 5): <= 6 s per epoch for vit_sf on one H100, i.e. the paper's 100 epochs in <= 10 minutes.

`loop_efficiency` (issue 18) = the epoch's training tiles/s (training tiles / epoch seconds, validation
included in the seconds) divided by the bare training step's tiles/s (forward + backward + AdamW on the same
training bags, already in memory / on the device, nothing else), measured in the same process right after
the epochs. It says what the loop costs on top of the step: >= 0.8 is the guard (`loop_ok` in the JSON).
`loop_efficiency_cpu` is the same ratio in process CPU seconds (epochs after the first): on a busy machine
the wall-clock ratio mostly measures how the load changed between the epochs and the bare pass.
`--tiles MIN MAX` shrinks the bags for smoke runs. The load rule of benchmarks/_machine.py applies.
Writes benchmarks/results/train_<tag>.{json,md}.
"""

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _machine import LoadGuard, add_busy_argument, busy_banner, describe_machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "benchmarks" / "out"
N_TRAIN, N_VAL = 627, 145
MIN_TILES, MAX_TILES = 2_000, 11_000
FEATURE_DIM = 2048
MODES = ["memory", "device", "none"]
TARGET_S_PER_EPOCH = 6.0
LOOP_EFFICIENCY_GUARD = 0.8


def cohort_sizes(
    scale: float, seed: int, tiles: tuple[int, int] = (MIN_TILES, MAX_TILES)
) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(seed)
    n_train, n_val = max(2, round(N_TRAIN * scale)), max(2, round(N_VAL * scale))
    sizes = rng.integers(tiles[0], tiles[1] + 1, n_train + n_val).tolist()
    return sizes[:n_train], sizes[n_train:]


def write_cohort(folder: Path, scale: float, seed: int, tiles: tuple[int, int]) -> Path:
    """Feature bags + labels.csv with a split column (train/val); reused when already complete."""
    labels = folder / "labels.csv"
    if labels.is_file():
        return folder
    from wsi_pipeline.stores.feature_bag import write_bag

    train, val = cohort_sizes(scale, seed, tiles)
    rng = np.random.default_rng(seed + 1)
    direction = rng.standard_normal(FEATURE_DIM).astype(np.float32)
    direction /= np.linalg.norm(direction)
    (folder / "features").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, n_tiles in enumerate(train + val):
        slide_id = f"bench-{i:04d}"
        label = "LUSC" if i % 2 else "LUAD"
        features = rng.standard_normal((n_tiles, FEATURE_DIM), dtype=np.float32)
        if label == "LUSC":
            features[: n_tiles // 10] += 4.0 * direction
        side = int(np.ceil(np.sqrt(n_tiles)))
        coords = np.stack([np.arange(n_tiles) % side, np.arange(n_tiles) // side], 1).astype(np.int64) * 512
        attrs = {
            "extractor": "synthetic",
            "feature_dim": FEATURE_DIM,
            "slide_id": slide_id,
            "tile_px_level0": 512,
        }
        with write_bag(
            folder / "features" / f"{slide_id}.h5",
            coords=coords,
            feature_dim=FEATURE_DIM,
            dtype="float16",
            attrs=attrs,
        ) as writer:
            writer.write(features)
        rows.append([slide_id, label, "train" if i < len(train) else "val"])
    with open(folder / "labels.tmp", "w", newline="") as fh:
        csv.writer(fh).writerows([["slide_id", "label", "split"], *rows])
    os.replace(folder / "labels.tmp", labels)
    return folder


def bare_step_tiles_per_s(args: argparse.Namespace, device_name: str) -> tuple[float, float]:
    """Tiles per wall second and per CPU second of the bare training step on the cohort's training bags,
    preloaded on the device; the first bag is a warm-up. Same model, optimizer, autocast and threads as the
    run."""
    import torch
    from torch import nn

    from wsi_pipeline.models import build_model
    from wsi_pipeline.train.bags import read_bag_features

    device = torch.device(device_name)
    features = Path(args.cohort) / "features"
    with open(Path(args.cohort) / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    bags = [torch.from_numpy(read_bag_features(features / f"{r['slide_id']}.h5")).to(device) for r in rows]
    model = build_model(args.model, in_dim=FEATURE_DIM, n_classes=2).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = torch.tensor([1], device=device)
    amp = device.type == "cuda"

    def step(x: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x.unsqueeze(0))
        nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()

    step(bags[0])
    if amp:
        torch.cuda.synchronize()
    started, cpu_started = time.perf_counter(), time.process_time()
    for x in bags:
        step(x)
    if amp:
        torch.cuda.synchronize()
    tiles = sum(x.shape[0] for x in bags)
    return tiles / (time.perf_counter() - started), tiles / (time.process_time() - cpu_started)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One cache mode: a fresh run of `args.epochs` epochs; figures from its history.csv."""
    import shutil

    import torch

    from wsi_pipeline.devices import default_threads
    from wsi_pipeline.train import TrainConfig, run_training

    # The bare step after the run must use the threads the run used (run_training sets its own default).
    torch.set_num_threads(args.threads or default_threads())
    (mode,) = args.cache
    run = Path(args.cohort) / f"run-{mode}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = TrainConfig(
        features=Path(args.cohort) / "features",
        labels=Path(args.cohort) / "labels.csv",
        model=args.model,
        epochs=args.epochs,
        patience=args.epochs,
        cache=mode,
        device=args.device,
        seed=0,
        threads=args.threads or None,  # else run_training sets its own (the bare step must match it)
    )
    started = time.perf_counter()
    cpu_at_epoch_end: list[float] = []  # process CPU seconds: a load-resistant second measure
    run_training(cfg, run, on_epoch_end=lambda *_: cpu_at_epoch_end.append(time.process_time()))
    total = time.perf_counter() - started
    bare, bare_cpu = bare_step_tiles_per_s(args, args.device)
    with open(run / "history.csv", newline="") as fh:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    shutil.rmtree(run, ignore_errors=True)
    return {
        "cache": mode,
        "total_s": total,
        "bare_step_tiles_per_s": bare,
        "bare_step_tiles_per_cpu_s": bare_cpu,
        "epoch_cpu_s": np.diff(cpu_at_epoch_end).tolist(),
        "history": history,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }


def summarise(
    result: dict[str, Any], train: list[int], val: list[int], tiles_range: tuple[int, int]
) -> dict[str, Any]:
    history = result["history"]
    steady = history[1:] or history
    epoch_s = float(np.median([h["seconds"] for h in steady]))
    tiles = sum(train) + sum(val)
    full_tiles = (N_TRAIN + N_VAL) * (MIN_TILES + MAX_TILES) / 2
    train_tiles_per_s = sum(train) / epoch_s
    efficiency = train_tiles_per_s / result["bare_step_tiles_per_s"]
    # The same ratio in CPU seconds (epochs after the first): what a busy machine cannot distort much.
    cpu_epochs = result.get("epoch_cpu_s") or [float("nan")]
    efficiency_cpu = sum(train) / float(np.median(cpu_epochs)) / result["bare_step_tiles_per_cpu_s"]
    return {
        "cache": result["cache"],
        "first_epoch_s": history[0]["seconds"],
        "epoch_s": epoch_s,
        "bags_per_s": (len(train) + len(val)) / epoch_s,
        "tiles_per_s": tiles / epoch_s,
        "setup_s": result["total_s"] - sum(h["seconds"] for h in history),
        "peak_memory_mb": max(h["peak_memory_mb"] for h in history),
        "full_cohort_epoch_s": epoch_s * full_tiles / tiles,
        "train_tiles_per_s": train_tiles_per_s,
        "bare_step_tiles_per_s": result["bare_step_tiles_per_s"],
        "loop_efficiency": efficiency,
        "loop_efficiency_cpu": efficiency_cpu,
        "loop_ok": efficiency >= LOOP_EFFICIENCY_GUARD,
        "bag_tiles": list(tiles_range),
    }


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        busy_banner(meta["load"]) if "load" in meta else "",
        f"`{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; device {meta['device']}; torch {meta['torch']}, {meta['threads']} threads; "
        f"load average at start {meta['load_average']}.",
        f"Cohort: {meta['n_train']} train + {meta['n_val']} val bags ({meta['tiles']:,} tiles, "
        f"{meta.get('bag_tiles', [MIN_TILES, MAX_TILES])[0]:,}-{meta.get('bag_tiles', [MIN_TILES, MAX_TILES])[1]:,}"
        f" per bag, 2048-d fp16), model `{meta['model']}`, {meta['epochs']} epochs per cache mode.",
        "",
        "| cache | first epoch s | epoch s (median of the rest) | bags/s | tiles/s | setup s (read bags, build) "
        "| peak memory MB | full-cohort epoch s (extrapolated) | train tiles/s | bare step tiles/s "
        "| loop_efficiency | same, in CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['cache']} | {r['first_epoch_s']:.1f} | {r['epoch_s']:.1f} | {r['bags_per_s']:.2f} | "
            f"{r['tiles_per_s']:,.0f} | {r['setup_s']:.1f} | {r['peak_memory_mb']:,.0f} | "
            f"{r['full_cohort_epoch_s']:,.0f} | {r['train_tiles_per_s']:,.0f} | "
            f"{r['bare_step_tiles_per_s']:,.0f} | {r['loop_efficiency']:.2f} | "
            f"{r.get('loop_efficiency_cpu', float('nan')):.2f} |"
        )
    lines += ["", f"loop_efficiency guard >= {LOOP_EFFICIENCY_GUARD}: "
              + ("met" if all(r["loop_ok"] for r in rows) else "**missed**") + "."]  # fmt: skip
    lines.append("")
    if meta["device"] == "cpu":
        lines.append("H100 target (<= 6 s per epoch for vit_sf) not measured: no GPU lent.")
    else:
        best = min(r["full_cohort_epoch_s"] for r in rows)
        verdict = "met" if best <= TARGET_S_PER_EPOCH else "missed"
        lines.append(f"H100 target <= {TARGET_S_PER_EPOCH:g} s per epoch: {verdict} (best {best:.1f} s).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the 627 + 145 bags (sizes unchanged)"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", default="vit_sf")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", nargs="+", default=None, choices=MODES, help="default: all modes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default=None)
    parser.add_argument(
        "--tiles", type=int, nargs=2, default=[MIN_TILES, MAX_TILES], metavar=("MIN", "MAX"),
        help="tiles per bag, uniform (smaller for smoke runs)",
    )  # fmt: skip
    add_busy_argument(parser)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cohort", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    modes = args.cache or (MODES if args.device.startswith("cuda") else ["memory", "none"])
    tiles_range = (args.tiles[0], args.tiles[1])
    suffix = "" if tiles_range == (MIN_TILES, MAX_TILES) else f"_t{tiles_range[0]}-{tiles_range[1]}"
    cohort = write_cohort(
        OUT / f"train_cohort_s{args.scale:g}_seed{args.seed}{suffix}", args.scale, args.seed, tiles_range
    )
    train, val = cohort_sizes(args.scale, args.seed, tiles_range)
    guard = LoadGuard(threads=args.threads or os.cpu_count() or 1, allow_busy=args.allow_busy)
    load = os.getloadavg()
    results = []
    for mode in modes:
        command = [
            sys.executable,
            __file__,
            "--worker",
            "--cohort",
            str(cohort),
            "--cache",
            mode,
            "--epochs",
            str(args.epochs),
            "--model",
            args.model,
            "--device",
            args.device,
            "--threads",
            str(args.threads),
        ]
        print(f"cache {mode} ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            sys.exit(f"cache {mode} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = [summarise(r, train, val, tiles_range) for r in results]
    meta = {
        "command": "uv run python benchmarks/bench_train.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)"
        + (f", {results[0]['gpu']}" if results[0]["gpu"] else ""),
        "device": args.device,
        "torch": results[0]["torch"],
        "threads": results[0]["threads"],
        "load_average": f"{load[0]:.1f}",
        "model": args.model,
        "epochs": args.epochs,
        "n_train": len(train),
        "n_val": len(val),
        "tiles": sum(train) + sum(val),
        "bag_tiles": list(tiles_range),
        "machine_info": describe_machine(),
        "load": guard.finish(),
    }
    tag = args.tag or f"{args.device.split(':')[0]}_{args.model}_s{args.scale:g}{suffix}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"train_{tag}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "raw": results}, indent=2)
    )
    text = markdown(meta, rows)
    (RESULTS / f"train_{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
