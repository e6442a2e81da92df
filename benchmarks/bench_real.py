"""Aggregators against the mean-pooled baseline on real features, by repeated stratified k-fold CV.

Sets: published multiple-instance sets (`.npz` with `features`, `bag_ptr`, `bag_labels` in `--mil-dir`: Musk2
and Fox as in ../shared/data/mil; Musk1, Tiger and Elephant from benchmarks/mil_jld_to_npz.py; attention MIL's
published bag accuracy in PUBLISHED_ACCURACY), and two cohorts of real tiles, `tiles_sparse` and `tiles_mix` (see `build_tile_cohort`): bags drawn from the two real slides
in tests/data after `wsi tile --tile-um 32 --tile-px 64 --mpp 0.25` (small tiles, so two small slides give
~650 tiles each) and `wsi extract --random-init`; run here into benchmarks/out/real_tiles unless
`--tile-features` names such a folder.

Each repeat r shuffles a stratified k-fold split with seed r; inside each fold's training part a stratified
20 % is held out as validation (early stopping, temperature), as `wsi train` does. Every model trains through
the library's own `train_fold` (what `wsi train` runs per fold, members included) in this process with
`TrainConfig(model=...)` defaults, one torch thread.
The baseline is `fit_baseline` (standardised logistic regression on mean-pooled bags) on the same training
part. Reported per set and model: mean and sd over all folds of test AUROC and accuracy, plus ECE. The
load is recorded by the rule of benchmarks/_machine.py and never refused (AUROC and accuracy do not depend on
it); on a busy machine the Markdown says so, and the per-fold seconds in the JSON are busy figures.

    uv run python benchmarks/bench_real.py --mil-dir ../shared/data/mil --repeats 5 --folds 5
    uv run python benchmarks/bench_real.py --sets tiles_sparse tiles_mix --models abmil vit_sf
    uv run python benchmarks/bench_real.py --mil-dir ... --sets fox --models abmil --set lr=1e-3
    uv run python benchmarks/bench_real.py --mil-dir ... --first-repeat 2 --repeats 3   # repeats 2-4 of 5 x 5
    uv run python benchmarks/bench_real.py --merge results/real_A.json results/real_B.json --tag A_B

Writes benchmarks/results/real_<tag>.{json,md}.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._machine import LoadGuard, busy_banner, describe_machine  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# Ilse et al. 2018, Table 2, attention MIL (not gated), mean bag accuracy over 5 x 10-fold CV.
PUBLISHED_ACCURACY = {"musk1": 0.892, "musk2": 0.858, "fox": 0.615, "tiger": 0.839, "elephant": 0.868}
BASELINE = "baseline_lr"


def load_mil_set(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """bags (id -> (n, D) float32) and labels (id -> 0/1) of one published MIL `.npz`."""
    data = np.load(path)
    ptr, labels = data["bag_ptr"], data["bag_labels"]
    features = data["features"].astype(np.float32)
    bags = {f"bag{i:04d}": torch.from_numpy(features[ptr[i] : ptr[i + 1]]) for i in range(len(labels))}
    return bags, {f"bag{i:04d}": int(labels[i]) for i in range(len(labels))}


TILE_COHORTS = ("tiles_sparse", "tiles_mix")
TILE_SLIDES = ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs")


def tile_features(out: Path) -> Path:
    """`wsi tile` + `wsi extract --random-init` of the two real slides in tests/data into out/; resumes."""
    import subprocess

    wsi = [sys.executable, "-m", "cli.main"]
    slides = [str(ROOT / "tests" / "data" / "slides" / name) for name in TILE_SLIDES]
    tile = [
        "tile",
        *slides,
        "--out",
        str(out / "tiles"),
        "--tile-um",
        "32",
        "--tile-px",
        "64",
        "--mpp",
        "0.25",
    ]
    subprocess.run([*wsi, *tile], cwd=ROOT, check=True)
    extract = [
        "extract",
        str(out / "tiles"),
        "--out",
        str(out / "features"),
        "--random-init",
        "--device",
        "cpu",
    ]
    subprocess.run([*wsi, *extract], cwd=ROOT, check=True)
    return out / "features"


def build_tile_cohort(
    features: Path, kind: str, n_bags: int = 60, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Bags of real tile features from two slides' bags in `features` (written by `wsi tile` + `wsi extract`):
    the first slide (by name) is the background, the second the evidence. Half the bags are positive.

    - ``tiles_sparse``: negatives are background tiles only; positives carry 2-10 % evidence tiles, the sparse
      signal an aggregator has to find and a mean dilutes.
    - ``tiles_mix``: every bag carries 5-25 % evidence tiles; positive means more than 15 %, so the label is a
      proportion that a mean reads off directly.

    Bags hold 100-400 tiles drawn without replacement within a bag (bags share tiles: the pools are two slides).
    """
    from wsi_pipeline.stores.feature_bag import load_bag

    paths = sorted(features.glob("*.h5"))
    if len(paths) < 2:
        raise SystemExit(f"{features}: need the bags of two slides, found {len(paths)}")
    background, evidence = (load_bag(p).features.astype(np.float32) for p in paths[:2])
    rng = np.random.default_rng(seed)
    bags, labels = {}, {}
    for i in range(n_bags):
        label = i % 2
        if kind == "tiles_sparse":
            share = rng.uniform(0.02, 0.10) if label else 0.0
        else:
            share = rng.uniform(0.15, 0.25) if label else rng.uniform(0.05, 0.15)
        n = int(rng.integers(100, 401))
        k = round(share * n)
        rows = [background[rng.choice(len(background), n - k, replace=False)]]
        rows.append(evidence[rng.choice(len(evidence), k, replace=False)])
        bag = np.concatenate(rows)[rng.permutation(n)]
        bags[f"{kind}{i:03d}"], labels[f"{kind}{i:03d}"] = torch.from_numpy(bag), label
    return bags, labels


def fold_splits(
    labels: dict[str, int], folds: int, repeat: int
) -> list[tuple[list[str], list[str], list[str]]]:
    """(train, val, test) ids of each fold of repeat `repeat`."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    ids = np.array(sorted(labels))
    y = np.array([labels[i] for i in ids])
    out = []
    for k, (rest, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=repeat).split(ids, y)):
        train, val = train_test_split(rest, test_size=0.2, stratify=y[rest], random_state=1000 * repeat + k)
        out.append((sorted(ids[train].tolist()), sorted(ids[val].tolist()), sorted(ids[test].tolist())))
    return out


def ece(targets: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    from wsi_pipeline.evaluate.calibration import expected_calibration_error

    return expected_calibration_error(targets, probs, bins)


def scores(targets: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    return {
        "auroc": float(roc_auc_score(targets, probs[:, 1])),
        "accuracy": float(np.mean(probs.argmax(axis=1) == targets)),
        "ece": ece(targets, probs),
    }


def run_baseline(
    bags: dict[str, torch.Tensor], labels: dict[str, int], train: list[str], test: list[str]
) -> np.ndarray:
    from wsi_pipeline.stores.baseline import mean_pool
    from wsi_pipeline.train.baseline import fit_baseline

    pooled = {s: mean_pool(bags[s].numpy()) for s in train + test}
    model = fit_baseline(
        np.stack([pooled[s] for s in train]), np.array([labels[s] for s in train]), ("0", "1")
    )
    return model.predict_proba(np.stack([pooled[s] for s in test]))


def run_model(
    name: str,
    settings: dict[str, Any],
    cache: Any,
    labels: dict[str, int],
    split: tuple[list[str], list[str], list[str]],
    in_dim: int,
    seed: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Test probabilities of one fold trained as `wsi train` trains it (`train_fold`: one model, or its
    members) and scored from its checkpoint as `wsi eval` loads it, and the fold's result."""
    from wsi_pipeline.inference.fold_models import checkpoint_model
    from wsi_pipeline.stores.run_folder import CHECKPOINT_FILE, load_checkpoint
    from wsi_pipeline.train.config import TrainConfig
    from wsi_pipeline.train.fold import FoldSetup, train_fold
    from wsi_pipeline.train.loop import FoldData
    from wsi_pipeline.train.process import ProcessRole

    train, val, test = split
    cfg = TrainConfig(model=name, device="cpu", seed=seed, **settings)
    patients = {s: s for s in labels}  # one bag per patient
    setup = FoldSetup(cfg, ("0", "1"), in_dim, cache, patients, torch.device("cpu"), ProcessRole(), None)
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        result = train_fold(setup, FoldData(0, Path(tmp), train, val, labels))
        path = Path(tmp) / CHECKPOINT_FILE
        model = checkpoint_model(load_checkpoint(path), path).eval()
        with torch.no_grad():
            logits = torch.cat([model(cache.get(s).unsqueeze(0)).float() for s in test])
    return torch.softmax(logits, dim=-1).numpy(), {
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "temperature": result.temperature,
        "members": result.members,
    }


def parse_settings(items: list[str]) -> dict[str, Any]:
    """`key=value` (YAML values) into TrainConfig fields; `model_overrides.dropout=0.1` nests."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key.startswith("model_overrides."):
            out.setdefault("model_overrides", {})[key.split(".", 1)[1]] = yaml.safe_load(value)
        else:
            out[key] = yaml.safe_load(value)
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for metric in ("auroc", "accuracy", "ece"):
        values = [r[metric] for r in rows]
        out[metric] = {
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    out["folds"] = {"n": len(rows)}
    return out


def bench_set(
    set_name: str,
    bags: dict[str, torch.Tensor],
    labels: dict[str, int],
    args: argparse.Namespace,
    save: Any,
) -> dict[str, Any]:
    """Model after model (the baseline first), every fold of every repeat; `save` after each model so an
    interrupted run keeps what it finished."""
    from wsi_pipeline.train.bags import BagCache

    cache = BagCache.of_tensors(bags, torch.device("cpu"))
    in_dim = next(iter(bags.values())).shape[1]
    settings = parse_settings(args.set)
    splits = [
        (r, k, split)
        for r in range(args.first_repeat, args.first_repeat + args.repeats)
        for k, split in enumerate(fold_splits(labels, args.folds, r))
    ]
    out: dict[str, Any] = {}
    for name in ([] if args.skip_baseline else [BASELINE]) + args.models:
        rows = []
        for repeat, k, split in splits:
            targets = np.array([labels[s] for s in split[2]])
            start = time.perf_counter()
            if name == BASELINE:
                probs, info = run_baseline(bags, labels, split[0], split[2]), {}
            else:
                probs, info = run_model(name, settings, cache, labels, split, in_dim, seed=repeat * 100 + k)
            row = {**scores(targets, probs), **info, "seconds": time.perf_counter() - start}
            rows.append(row)
            print(
                f"{set_name} r{repeat} f{k} {name}: AUROC {row['auroc']:.3f} acc {row['accuracy']:.3f} "
                f"{info} {row['seconds']:.0f}s",
                flush=True,
            )
        out[name] = {"summary": summarise(rows), "folds": rows}
        save(out)
    return out


def protocol(repeats: int, first_repeat: int, folds: int) -> str:
    return f"{repeats} x {folds}-fold, repeats {first_repeat}-{first_repeat + repeats - 1}"


def run_header(args: argparse.Namespace) -> str:
    cv = protocol(args.repeats, args.first_repeat, args.folds)
    return f"Repeated stratified CV: {cv}; settings {args.set or 'defaults'}."


def markdown(results: dict[str, Any], header: str, load: dict[str, Any]) -> str:
    lines = [
        busy_banner(load).rstrip("\n"),
        "",
        header,
        "",
        "| set | model | AUROC mean ± sd | accuracy mean ± sd | ECE | published accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for set_name, models in results.items():
        for model, body in models.items():
            s = body["summary"]
            pub = PUBLISHED_ACCURACY.get(set_name) if model == "abmil" else None
            lines.append(
                f"| {set_name} | {model} | {s['auroc']['mean']:.3f} ± {s['auroc']['sd']:.3f} | "
                f"{s['accuracy']['mean']:.3f} ± {s['accuracy']['sd']:.3f} | {s['ece']['mean']:.3f} | "
                f"{pub if pub is not None else ''} |"
            )
    return "\n".join(lines) + "\n"


def run_protocol(saved: dict[str, str]) -> str:
    """`protocol` of a run from its JSON's args (runs before `--first-repeat` started at repeat 0)."""
    cv = protocol(int(saved["repeats"]), int(saved.get("first_repeat", 0)), int(saved["folds"]))
    return f"{cv}, settings {saved['set']}"


def merge_results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' results as one, folds concatenated per set and model (repeats 0-1 and 2-4 of one 5 x 5)."""
    folds: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for run in runs:
        for set_name, models in run["results"].items():
            for model, body in models.items():
                folds.setdefault(set_name, {}).setdefault(model, []).extend(body["folds"])
    return {
        set_name: {model: {"summary": summarise(rows), "folds": rows} for model, rows in models.items()}
        for set_name, models in folds.items()
    }


def write_merged(paths: list[Path], tag: str) -> None:
    """real_<tag>.{json,md} of `merge_results`; each run's own machine record is kept beside its name."""
    runs = {str(p): json.loads(p.read_text()) for p in paths}
    results = merge_results(list(runs.values()))
    header = "Merged: " + "; ".join(f"`{Path(p).name}`: {run_protocol(r['args'])}" for p, r in runs.items())
    machines = [r["machine"] for r in runs.values()]
    load = next((m for m in machines if m["busy"]), machines[0])  # the banner warns if any run was busy
    body = {"merged": {p: r["machine"] | {"args": r["args"]} for p, r in runs.items()}, "results": results}
    (RESULTS / f"real_{tag}.json").write_text(json.dumps(body, indent=1) + "\n")
    text = markdown(results, header, load)
    (RESULTS / f"real_{tag}.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mil-dir", type=Path, help="folder with musk2.npz and fox.npz")
    parser.add_argument(
        "--tile-features", type=Path, help="`wsi extract` output of two slides (see build_tile_cohort)"
    )
    parser.add_argument("--sets", nargs="+", default=["musk2", "fox", *TILE_COHORTS])
    parser.add_argument("--models", nargs="*", default=["mean_linear", "meanmax_mlp", "abmil", "vit_sf"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--first-repeat",
        type=int,
        default=0,
        help="repeat r splits with seed r: runs of 0-1 and 2-4 make 5 x k",
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], help="TrainConfig overrides, key=value")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--tag", default="cpu")
    parser.add_argument(
        "--merge", nargs="+", type=Path, help="only merge these results JSONs into real_<tag>.*"
    )
    args = parser.parse_args()
    if args.merge:
        write_merged(args.merge, args.tag)
        return
    torch.set_num_threads(1)
    guard = LoadGuard(threads=1, timing=False)
    results: dict[str, Any] = {}
    RESULTS.mkdir(parents=True, exist_ok=True)

    def save(set_name: str, models: dict[str, Any]) -> None:
        results[set_name] = models
        load = guard.finish()  # the load so far: each save is the end of a measurement
        body = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": describe_machine() | load}
        (RESULTS / f"real_{args.tag}.json").write_text(
            json.dumps(body | {"results": results}, indent=1) + "\n"
        )
        (RESULTS / f"real_{args.tag}.md").write_text(markdown(results, run_header(args), load))

    for set_name in args.sets:
        if set_name in TILE_COHORTS:
            features = args.tile_features or tile_features(ROOT / "benchmarks" / "out" / "real_tiles")
            bags, labels = build_tile_cohort(features, set_name)
        else:
            if args.mil_dir is None:
                continue
            bags, labels = load_mil_set(args.mil_dir / f"{set_name}.npz")
        bench_set(set_name, bags, labels, args, lambda models, s=set_name: save(s, models))
    print(markdown(results, run_header(args), guard.finish()))


if __name__ == "__main__":
    main()
