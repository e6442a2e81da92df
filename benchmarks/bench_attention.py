"""Scaling benchmark: one training step (forward, backward, AdamW) per model and bag size N.

Each (model, N) runs in its own subprocess so peak memory is that configuration's alone and a crash or an
out-of-memory kill cannot take the sweep down. A configuration that runs out of memory or past the time
limit is recorded as such, and larger N are skipped for that model. Time is the median of `--repeats` steps
after one warm-up step; memory is peak RSS on CPU, `torch.cuda.max_memory_allocated` on GPU.

    uv run python benchmarks/bench_attention.py                      # CPU, all models
    uv run python benchmarks/bench_attention.py --device cuda --amp bf16 --compile
    # a whole 40x slide as one bag on CPU: vit_sf, fp16 features, chunked + checkpointed, one step
    nice -n 10 uv run python benchmarks/bench_attention.py --models vit_sf --sizes 1000000 --features fp16 \
        --chunk-tokens 65536 --warmups 0 --repeats 1 --time-limit 3600 --threads 2 --tag cpu_vit_sf_1M

`--chunk-tokens` runs models that support it (`vit_sf`) chunk by chunk with activation checkpointing
(wsi_pipeline/models/chunked.py): the same gradients, memory ~ the bag plus two hidden states. The load
rule of benchmarks/_machine.py applies (`--allow-busy` labels a busy run instead of refusing it); the
report is rewritten after every configuration, so a run cut short by `--budget-s` or a kill keeps its rows.

Writes benchmarks/results/attention_<tag>.{json,md,png}.
"""

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import markdown_table
from _machine import LoadGuard, add_busy_argument, busy_banner, proc_kib

MODELS = ["vit_sf", "vit_sf_ca", "vit_sima", "vit", "abmil", "transmil"]
SIZES = [1_000, 2_000, 5_000, 10_000, 11_000, 25_000, 50_000, 100_000, 200_000]
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- worker: one configuration, one process


def current_rss() -> int:
    return proc_kib("VmRSS") * 1024


FEATURE_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def random_bag(n: int, in_dim: int, dtype_name: str, device: Any) -> Any:
    """(1, n, in_dim) standard-normal features, drawn 2^16 tiles at a time: no float32 copy of a 10^6 bag."""
    import torch

    x = torch.empty(1, n, in_dim, dtype=getattr(torch, dtype_name), device=device)
    for i in range(0, n, 65_536):
        x[:, i : i + 65_536] = torch.randn(1, min(65_536, n - i), in_dim, device=device)
    return x


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch import nn

    from wsi_pipeline.models import build_model
    from wsi_pipeline.models.chunked import supports_chunking

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    started = time.perf_counter()
    model = build_model(args.model, in_dim=args.in_dim, n_classes=2).to(device).train()
    if args.chunk_tokens and hasattr(model, "use_chunks") and supports_chunking(model):
        model.use_chunks(args.chunk_tokens)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_model = torch.compile(model) if args.compile else model
    x = random_bag(args.n, args.in_dim, FEATURE_DTYPES[args.features], device)
    y = torch.tensor([1], device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> float:
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            loss = nn.functional.cross_entropy(step_model(x), y)
        loss.backward()
        opt.step()
        sync()
        return time.perf_counter() - t0

    setup_rss = current_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warmups = [step() for _ in range(max(args.warmups, 2 if args.compile else 0))]
    budget = args.deadline - (time.perf_counter() - started)
    row: dict[str, Any] = {"warmup_s": warmups[-1]} if warmups else {}
    row["chunk_tokens"] = getattr(model, "chunk_tokens", None)
    if warmups and warmups[-1] * args.repeats > budget:
        # Say so now with the one step we have, rather than be killed later with nothing.
        row["status"] = "timeout"
    else:
        times = [step() for _ in range(args.repeats)]
        row.update(status="ok", time_s=statistics.median(times), times_s=times)
    if device.type == "cuda":
        row["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    else:
        row["peak_mem_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        row["setup_rss_bytes"] = setup_rss
    return row


def run_worker(args: argparse.Namespace) -> None:
    try:
        row = worker(args)
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
            row = {"status": "oom", "error": str(exc).splitlines()[0][:200]}
        else:
            raise
    print("RESULT " + json.dumps(row), flush=True)


# ---------------------------------------------------------------- driver: the sweep


def child_rss(pid: int) -> int:
    """RSS of a child and its descendants would need a tree walk; torch does not fork here, so one pid."""
    try:
        return proc_kib("VmRSS", pid) * 1024
    except OSError:  # the child has exited
        return 0


def available_memory() -> int:
    return proc_kib("MemAvailable", pid="", file="meminfo") * 1024


def run_config(args: argparse.Namespace, model: str, n: int) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--worker", "--model", model, "--n", str(n), "--in-dim", str(args.in_dim),
        "--device", args.device, "--amp", args.amp, "--repeats", str(args.repeats),
        "--deadline", str(args.time_limit), "--threads", str(args.threads), "--features", args.features,
        "--chunk-tokens", str(args.chunk_tokens), "--warmups", str(args.warmups),
    ]  # fmt: skip
    if args.compile:
        cmd.append("--compile")
    limit_bytes = int(args.mem_limit_gb * 2**30)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = None
    peak_seen = 0
    while proc.poll() is None:
        elapsed = time.perf_counter() - start
        rss = child_rss(proc.pid)
        peak_seen = max(peak_seen, rss)
        if args.device == "cpu" and rss > limit_bytes:
            status = "oom"  # our cap, before the kernel's OOM killer hits a machine others share
        elif elapsed > args.time_limit + 30:
            status = "timeout"
        if status:
            proc.kill()
            break
        time.sleep(0.2)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    base = {"model": model, "n": n, "wall_s": round(wall, 1)}
    if status == "oom":
        return {
            **base,
            "status": "oom",
            "note": f"RSS passed the {args.mem_limit_gb:.1f} GB cap",
            "peak_mem_bytes": peak_seen,
        }
    if status == "timeout":
        return {**base, "status": "timeout", "note": f"killed after {args.time_limit + 30:.0f} s"}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return {**base, **json.loads(line[len("RESULT ") :])}
    if proc.returncode in (-9, 137):
        return {**base, "status": "oom", "note": "killed by the system (SIGKILL)"}
    tail = (err.strip().splitlines() or ["no output"])[-1][:300]
    return {**base, "status": "error", "note": tail}


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def ratio(
    rows: dict[tuple[str, int], dict[str, Any]], model: str, key: str, big: int, small: int
) -> float | None:
    a, b = rows.get((model, big), {}), rows.get((model, small), {})
    if a.get("status") == "ok" and b.get("status") == "ok":
        return a[key] / b[key]
    return None


def step_time(row: dict[str, Any]) -> float | None:
    """Median step time, or the single warm-up step of a configuration stopped for time."""
    if row.get("status") == "ok":
        return row["time_s"]
    if row.get("status") == "timeout" and "warmup_s" in row:
        return row["warmup_s"]
    return None


def loglog_extrapolation(rows: dict[tuple[str, int], dict[str, Any]], model: str, n: int) -> float | None:
    """Time at N along the log-log line through the largest timed size and the largest ok size <= half of it.

    Labelled as an estimate wherever it is shown; the warm-up step of a configuration stopped for time counts
    as a (single) measurement.
    """
    timed = sorted(
        (size, t) for (m, size), r in rows.items() if m == model and (t := step_time(r)) is not None
    )
    if not timed:
        return None
    n2, t2 = timed[-1]
    smaller = [(size, t) for size, t in timed if size <= n2 / 2]
    if not smaller:
        return None
    n1, t1 = smaller[-1]
    slope = math.log(t2 / t1) / math.log(n2 / n1)
    return t2 * (n / n2) ** slope


def summary(rows: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "vit_sf_time_100k_over_10k": ratio(rows, "vit_sf", "time_s", 100_000, 10_000),
        "vit_sf_mem_100k_over_10k": ratio(rows, "vit_sf", "peak_mem_bytes", 100_000, 10_000),
    }
    sf = rows.get(("vit_sf", 100_000), {})
    vit = rows.get(("vit", 100_000), {})
    if sf.get("status") == "ok" and vit.get("status") == "ok":
        out["vit_over_vit_sf_time_100k"] = vit["time_s"] / sf["time_s"]
    elif sf.get("status") == "ok":
        estimate = loglog_extrapolation(rows, "vit", 100_000)
        if estimate is not None:
            out["vit_time_100k_extrapolated_s"] = estimate
            out["vit_over_vit_sf_time_100k_extrapolated"] = estimate / sf["time_s"]
    return out


def cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    status = row.get("status")
    if status == "ok":
        return f"{row['time_s']:.3g} s / {row['peak_mem_bytes'] / 2**30:.2f} GB"
    if status == "timeout" and "warmup_s" in row:
        return f"timeout (1 step {row['warmup_s']:.0f} s)"
    return str(status)


def markdown(report: dict[str, Any]) -> str:
    rows = {(r["model"], r["n"]): r for r in report["rows"]}
    models = report["settings"]["models"]
    lines = [
        busy_banner(report["load"]) if "load" in report else "",
        f"Training step (fwd + bwd + AdamW), batch 1, {report['settings']['in_dim']}-d tiles, "
        f"device {report['settings']['device']}, amp {report['settings']['amp']}, "
        f"compile {report['settings']['compile']}, {report['settings'].get('features', 'fp32')} features, "
        f"chunk_tokens {report['settings'].get('chunk_tokens') or 'off'} (models that support it): median of "
        f"{report['settings']['repeats']} steps after {report['settings'].get('warmups', 1)} warm-up(s); "
        f"peak {'RSS' if report['settings']['device'] == 'cpu' else 'allocated memory'}.",
        "",
        *markdown_table(
            ["N", *(f"`{m}`" for m in models)],
            ([f"{n:,}", *(cell(rows.get((m, n))) for m in models)] for n in report["settings"]["sizes"]),
            align="r" + "l" * len(models),
        ),
        "",
    ]
    lines.append(
        "`timeout (1 step X s)`: the warm-up step alone showed the configuration could not finish its"
    )
    lines.append("repeats within the time limit; larger N are then skipped (blank).")
    lines.append("")
    for key, value in report["summary"].items():
        if value is not None:
            lines.append(f"- `{key}`: {value:.2f}")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model in report["settings"]["models"]:
        ok = [r for r in report["rows"] if r["model"] == model and r.get("status") == "ok"]
        if not ok:
            continue
        ns = [r["n"] for r in ok]
        ax_t.plot(ns, [r["time_s"] for r in ok], marker="o", label=model)
        ax_m.plot(ns, [r["peak_mem_bytes"] / 2**30 for r in ok], marker="o", label=model)
    ax_t.set(xscale="log", yscale="log", xlabel="tiles per bag (N)", ylabel="seconds per training step")
    ax_m.set(xscale="log", yscale="log", xlabel="tiles per bag (N)", ylabel="peak memory (GB)")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend()
    fig.suptitle(f"{report['machine'].get('gpu', report['machine']['cpu'])} ({report['settings']['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def sweep(args: argparse.Namespace) -> None:
    guard = LoadGuard(threads=args.threads or 1, allow_busy=args.allow_busy)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = (
        args.tag
        or f"{args.device}{'_bf16' if args.amp == 'bf16' else ''}{'_compile' if args.compile else ''}"
    )
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_start": os.getloadavg(),
        "machine": machine(),
        "settings": {
            k: v
            for k, v in vars(args).items()
            if k not in ("worker", "model", "n", "deadline", "report_only")
        },
        "rows": [],
    }
    json_path = RESULTS / f"attention_{tag}.json"
    started = time.perf_counter()
    for model in args.models:
        stopped = None
        for n in args.sizes:
            if args.budget_s and time.perf_counter() - started > args.budget_s:
                stopped = stopped or f"the {args.budget_s:.0f} s budget"
            if stopped:
                report["rows"].append(
                    {"model": model, "n": n, "status": "skipped", "note": f"after {stopped}"}
                )
                continue
            row = run_config(args, model, n)
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
            report["partial"] = True
            write_report(report, json_path, with_plot=False)  # a killed sweep keeps what it measured
            if row["status"] != "ok":
                stopped = f"{row['status']} at N={n:,}"
    report["load_average_end"] = os.getloadavg()
    report["load"] = guard.finish()
    report["partial"] = False
    write_report(report, json_path)


def write_report(report: dict[str, Any], json_path: Path, with_plot: bool = True) -> None:
    """JSON, Markdown table and log-log plot side by side; the summary is recomputed from the rows."""
    report["summary"] = summary({(r["model"], r["n"]): r for r in report["rows"]})
    json_path.write_text(json.dumps(report, indent=2))
    json_path.with_suffix(".md").write_text(markdown(report))
    if with_plot:
        plot(report, json_path.with_suffix(".png"))
        print(markdown(report))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=SIZES)
    parser.add_argument("--in-dim", type=int, default=2048)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", default="none", choices=["none", "bf16"], help="autocast dtype")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmups", type=int, default=1, help="untimed steps first (2 with --compile)")
    parser.add_argument("--features", default="fp32", choices=sorted(FEATURE_DTYPES), help="bag dtype")
    parser.add_argument(
        "--chunk-tokens", type=int, default=0, help="chunked + checkpointed steps where supported (0 = off)"
    )
    parser.add_argument("--budget-s", type=float, default=0.0, help="skip what is left after this (0 = none)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per configuration")
    parser.add_argument(
        "--mem-limit-gb", type=float, default=0.6 * available_memory() / 2**30,
        help="CPU: kill a configuration whose RSS passes this (default 60%% of available memory)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--tag", default="", help="output name suffix (default from device/amp/compile)")
    parser.add_argument(
        "--report-only", type=Path, help="rewrite the .md and .png of an existing JSON result"
    )
    add_busy_argument(parser)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=120.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
    elif args.report_only:
        write_report(json.loads(args.report_only.read_text()), args.report_only)
    else:
        sweep(args)


if __name__ == "__main__":
    main()
