"""The GPU check of issue 18 as one call: every GPU figure RESULTS.md asks for, in at most 9 minutes.

Started by benchmarks/gpu_check.sh. Steps, each a subprocess with its own time limit, so one failure (or an
out-of-memory) is recorded and the others still run:

1. `extract_retccl`: benchmarks/bench_extract.py (its protocol): bare encoder vs `wsi extract` end to end.
2. `extract_vitl`: `wsi extract --model uni --random-init` (ViT-L/16, bf16 on CUDA) end to end on the
   same tile store, reader workers sized to the cores.
3. `steps`: benchmarks/bench_attention.py: step time + peak memory of vit_sf, vit_sf_ca, abmil, transmil and
   vit at 11k, 100k and 1M tiles of fp16 features, bf16 autocast, `vit_sf` chunked + checkpointed; each
   model until its first failure.
4. `epoch`: benchmarks/bench_train.py on the TCGA-NSCLC-shaped cohort (a fraction of its bags, full-size
   bags; the full-cohort epoch is extrapolated) with `--cache device`, with `loop_efficiency`.
5. `predict_200k`: `wsi predict` of one 200,000-tile bag with its heatmap, with a run trained for it.

`--smoke` runs the same steps and code paths on the CPU at toy sizes (< 3 minutes) and writes under
benchmarks/out/gpu_check_smoke/ instead of benchmarks/results/. The sub-benchmarks are run with
`--allow-busy` (their load rule in benchmarks/_machine.py then labels, rather than refuses, a busy run):
a lent GPU is too scarce to lose to a refusal. Writes gpu_check_<device>.{json,md}, rewritten after
every step.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
OUT = BENCH / "out"

# (step, seconds allowed) in running order; the full-run limits add up to 530 s of the 9 minutes.
FULL_LIMITS = {"extract_retccl": 75, "extract_vitl": 60, "steps": 240, "epoch": 100, "predict_200k": 55}
SMOKE_LIMITS = {"extract_retccl": 60, "extract_vitl": 40, "steps": 60, "epoch": 60, "predict_200k": 40}


def sizes(smoke: bool) -> dict[str, Any]:
    """Everything that differs between the GPU run and the CPU smoke run."""
    cores = os.cpu_count() or 1
    if smoke:
        return {
            "device": "cpu", "workers": 0, "batch": 4, "tiles": 4, "model_sizes": [600],
            "in_dim": 64, "chunk": 256, "amp": "none", "repeats": 1, "scale": 0.01, "bag_tiles": [100, 200],
            "cache": "device", "epochs": 2, "predict_tiles": 3000, "threads": 1,
        }  # fmt: skip
    return {
        "device": "cuda", "workers": min(15, max(1, cores - 1)), "batch": 256, "tiles": 1024,
        "model_sizes": [11_000, 100_000, 1_000_000], "in_dim": 2048, "chunk": 131_072,
        "amp": "bf16", "repeats": 2, "scale": 0.1, "bag_tiles": [2_000, 11_000], "cache": "device",
        "epochs": 3, "predict_tiles": 200_000, "threads": 0,
    }  # fmt: skip


def bench(script: str, *args: object) -> list[str]:
    return [sys.executable, str(BENCH / script), *map(str, args)]


def step_commands(s: dict[str, Any], smoke: bool) -> dict[str, list[str]]:
    tag = "smoke" if smoke else "gpu_check"
    threads = ["--threads", s["threads"]] if s["threads"] else []
    return {
        "extract_retccl": bench(
            "bench_extract.py", "--device", s["device"], "--workers", s["workers"], "--batch-size", s["batch"],
            "--tiles", s["tiles"], "--rounds", 1, "--bare-batches", 2, "--rss-tiles", "--rss-pool-tiles",
            "--name", f"extract_{tag}_{s['device']}", *(["--mosaic", 2, 2] if smoke else []), *threads,
        ),
        "extract_vitl": bench("gpu_check.py", "--step", "extract_vitl", *(["--smoke"] if smoke else [])),
        "steps": bench(
            "bench_attention.py", "--device", s["device"], "--amp", s["amp"], "--features", "fp16",
            "--models", "vit_sf", "vit_sf_ca", "abmil", "transmil", "vit", "--sizes", *s["model_sizes"],
            "--in-dim", s["in_dim"], "--chunk-tokens", s["chunk"], "--repeats", s["repeats"],
            "--warmups", 0 if smoke else 1, "--time-limit", 60, "--budget-s", 0 if smoke else 200,
            "--tag", f"{tag}_{s['device']}", "--allow-busy", *threads,
        ),
        "epoch": bench(
            "bench_train.py", "--device", s["device"], "--cache", s["cache"], "--scale", s["scale"],
            "--tiles", *s["bag_tiles"], "--epochs", s["epochs"], "--tag", f"{tag}_{s['device']}",
            "--allow-busy", *threads,
        ),
        "predict_200k": bench("gpu_check.py", "--step", "predict", *(["--smoke"] if smoke else [])),
    }  # fmt: skip


def run_step(name: str, command: list[str], limit_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    # Own process group: a timeout must also end the step's own workers (bench_*.py run one per setting).
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        return {
            "status": "timeout",
            "seconds": round(time.perf_counter() - started, 1),
            "stderr_tail": stderr[-1500:],
        }
    done = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    row: dict[str, Any] = {
        "status": "ok" if done.returncode == 0 else f"failed (exit {done.returncode})",
        "seconds": round(time.perf_counter() - started, 1),
    }
    for line in done.stdout.splitlines():
        if line.startswith("STEP "):
            row["figures"] = json.loads(line[5:])
    if done.returncode != 0:
        row["stderr_tail"] = done.stderr[-1500:]
    return row


# ------------------------------------------------------------------ the two steps no other benchmark has


def extract_vitl(smoke: bool) -> dict[str, Any]:
    """ViT-L (`uni`, random weights) end to end on bench_extract's tile stores (its warm-up store first)."""
    from rich.console import Console

    from wsi_pipeline.extract.config import ExtractConfig
    from wsi_pipeline.extract.run import extract_stores

    s = sizes(smoke)
    out_dir = OUT / "gpu_check_vitl_features"
    shutil.rmtree(out_dir, ignore_errors=True)
    config = ExtractConfig(
        model="uni", random_init=True, batch_size=s["batch"], workers=s["workers"], device=s["device"]
    )
    stores = OUT / "extract" / "tiles-throughput"  # bench_extract.py's OUT
    outcomes = extract_stores(stores, out_dir, config, Console(stderr=True, quiet=True))
    measured = next(o for o in outcomes if o.slide_id == "measured")
    if measured.status != "done":
        raise SystemExit(f"ViT-L extract failed: {measured.reason}")
    return {"model": "uni (ViT-L/16, random init)", "workers": s["workers"], **measured.fields}


def predict_big_bag(smoke: bool) -> dict[str, Any]:
    """Train a one-epoch vit_sf run on a small cohort, then time `wsi predict` (with heatmap) of one big bag."""
    import numpy as np
    from bench_train import FEATURE_DIM, write_cohort

    from wsi_pipeline.stores.feature_bag import write_bag
    from wsi_pipeline.train import TrainConfig, run_training

    s = sizes(smoke)
    folder = OUT / f"gpu_check_predict_{s['device']}"
    shutil.rmtree(folder, ignore_errors=True)
    cohort = write_cohort(folder / "cohort", 0.01, 0, (200, 300))
    train = TrainConfig(
        features=cohort / "features",
        labels=cohort / "labels.csv",
        model="vit_sf",
        epochs=1,
        device=s["device"],
    )
    run_training(train, folder / "run")
    n = s["predict_tiles"]
    side = int(np.ceil(np.sqrt(n)))
    coords = np.stack([np.arange(n) % side, np.arange(n) // side], 1).astype(np.int64) * 512
    attrs = {"extractor": "synthetic", "feature_dim": FEATURE_DIM, "slide_id": "big", "tile_px_level0": 512}
    rng = np.random.default_rng(0)
    with write_bag(folder / "bag" / "big.h5", coords=coords, feature_dim=FEATURE_DIM, dtype="float16",
                   attrs=attrs) as writer:  # fmt: skip
        for i in range(0, n, 50_000):
            writer.write(rng.standard_normal((min(50_000, n - i), FEATURE_DIM), dtype=np.float32))
    command = [sys.executable, "-m", "cli.main", "predict", "--run", str(folder / "run")]
    command += ["--features", str(folder / "bag")]
    started = time.perf_counter()
    subprocess.run([*command, "--out", str(folder / "predicted")], check=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    heatmaps = sorted(p.name for p in (folder / "predicted").rglob("*") if p.suffix in (".png", ".geojson"))
    if not heatmaps:
        raise SystemExit("wsi predict wrote no heatmap")
    return {"tiles": n, "seconds": round(seconds, 1), "tiles_per_s": round(n / seconds), "heatmaps": heatmaps}


# ------------------------------------------------------------------------------------- the report


def sub_result(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# GPU check ({'smoke, CPU toy sizes' if report['smoke'] else 'full'}), {report['started']}",
        "",
        f"`{report['command']}` on {report['machine'].get('gpu') or report['machine']['cpu']}, "
        f"{report['machine']['cores']} cores, {report['machine']['memory_gb']} GB, torch "
        f"{report['machine'].get('torch')}. Total {report.get('total_s', 0):.0f} s.",
        "",
        "| step | status | seconds | figures / detail |",
        "|---|---|---:|---|",
    ]
    for name, row in report["steps"].items():
        detail = json.dumps(row.get("figures")) if "figures" in row else row.get("files", "")
        lines.append(f"| {name} | {row['status']} | {row['seconds']} | {detail} |")
    lines.append("")
    for name, text in report.get("markdown", {}).items():
        lines += [f"## {name}", "", text, ""]
    return "\n".join(lines) + "\n"


def sub_results(name: str, smoke: bool, device: str) -> list[Path]:
    """The files a sub-benchmark step wrote into benchmarks/results/."""
    tag = f"{'smoke' if smoke else 'gpu_check'}_{device}"
    stem = {"extract_retccl": f"extract_{tag}", "steps": f"attention_{tag}", "epoch": f"train_{tag}"}.get(
        name
    )
    return sorted(RESULTS.glob(f"{stem}.*")) if stem else []


def drive(smoke: bool, only: list[str] | None = None, limit_scale: float = 1.0) -> int:
    s = sizes(smoke)
    dest = OUT / "gpu_check_smoke" if smoke else RESULTS
    dest.mkdir(parents=True, exist_ok=True)
    limits = SMOKE_LIMITS if smoke else FULL_LIMITS
    report: dict[str, Any] = {
        "command": "bash benchmarks/gpu_check.sh" + (" --smoke" if smoke else ""),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "smoke": smoke,
        "machine": {**describe_machine(), "load_before": os.getloadavg()[0]},
        "settings": s,
        "steps": {},
        "markdown": {},
    }
    started = time.perf_counter()
    for name, command in step_commands(s, smoke).items():
        if only and name not in only:
            continue
        limit = limits[name] * limit_scale
        print(f"gpu_check: {name} (limit {limit:.0f} s) ...", file=sys.stderr, flush=True)
        row = run_step(name, command, limit)
        files = []
        for path in sub_results(name, smoke, s["device"]):
            if smoke:
                path = Path(shutil.move(path, dest / path.name))
            files.append(path.name)
            if path.suffix == ".md":
                report["markdown"][name] = path.read_text()
        row["files"] = files
        report["steps"][name] = row
        print(f"gpu_check: {name}: {row['status']} in {row['seconds']} s", file=sys.stderr, flush=True)
        report["total_s"] = time.perf_counter() - started
        report["machine"]["load_after"] = os.getloadavg()[0]
        out = dest / f"gpu_check_{s['device']}"
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0 if all(r["status"] == "ok" for r in report["steps"].values()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="the same steps on the CPU at toy sizes")
    parser.add_argument("--only", nargs="+", choices=list(FULL_LIMITS), help="run only these steps")
    parser.add_argument(
        "--limit-scale", type=float, default=1.0, help="multiply every step's time limit (a slow machine)"
    )
    parser.add_argument("--step", choices=["extract_vitl", "predict"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        figures = (extract_vitl if args.step == "extract_vitl" else predict_big_bag)(args.smoke)
        print("STEP " + json.dumps(figures, default=str), flush=True)
        return
    sys.exit(drive(args.smoke, args.only, args.limit_scale))


if __name__ == "__main__":
    main()
