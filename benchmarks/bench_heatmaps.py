"""Heatmap faithfulness benchmark: do the tile scores of each model find the tiles that carry the signal?

Planted-signal cohorts from four generators of different geometry, so no score method can be tuned to one:

- `isotropic`: every tile N(0, I) in `--in-dim` dimensions; planted tiles get `--iso-shift` along a fixed
  direction. A synthetic generator may name its own width, `isotropic@2048`: a cohort of its own in one report,
  so one run sees whether a method holds at both widths (at 2,048-d, the width of real features, the planted
  direction is one of many more that the model could attend to), and its own densities,
  `isotropic@2048:30,10` (instead of `--densities`).
- `lowrank`: benchmarks/bench_signal.py's tiles (a 32-d background subspace plus small noise); planted tiles
  get `--shift` along a direction outside it.
- `real`: real tile features: `wsi tile` + `wsi extract --random-init` of crops of the two real slides in
  tests/data (the demo cohort's crops, `wsi_pipeline.demo`). Bags are drawn from the skin slide's tiles;
  positive bags get tiles of the TCGA slide (another tissue, another stain) planted among them. Train and
  test bags draw from disjoint halves of each pool.
- `combination`: low-rank background and two planted tile types A and B; positive bags hold both (half of the
  planted tiles each), negative bags only one type (all of them A, or all B). Only the co-occurrence tells
  the classes apart, so a map must point at both types.

Each model trains on each cohort (AdamW, batch 1, per-feature standardisation from the training tiles as
`wsi train` does); then on the positive test bags every score method is measured against the planted tiles:

- top-k precision (k = number of planted tiles; chance = the density);
- deletion: the drop of the positive class's probability (the class the scores explain) when the top 10% of
  tiles by score are removed, against removing 10% at random (`wsi_pipeline.inference.faithfulness`);
- deletion of the top k (k = the number of planted tiles, the tiles top-k precision counts) against k random
  tiles removed: 10% cannot move a prediction carried by 30% of the tiles, whatever the map;
- insertion: the probability with only the top 10% kept, against 10% random tiles kept.

Per model x method x generator x density: mean ± sd over seeds. The default score method of a model is the
one with the best *worst case* over the cells the model classifies, on the precision gain over chance,
(top-k - density) / (1 - density). A cell counts when most of its runs (seeds) classify (test AUROC >= 0.9),
and is judged on those runs; `occlusion` (quadratic, the reference) is not eligible.

    uv run python benchmarks/bench_heatmaps.py --reduced    # 2 seeds, 3 densities, bags of 400-600 tiles
    uv run python benchmarks/bench_heatmaps.py --workers 2  # 5 seeds, 4 densities, 500-1,000 tiles: 50 min
    uv run python benchmarks/bench_heatmaps.py --full --device cuda   # all models, 500-3,000 tiles per bag

Writes benchmarks/results/heatmaps_<tag>.{json,md}; the JSON is rewritten after every cohort, so an
interrupted benchmark keeps what it measured (`--report-only` renders it).
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import default_pick_lines  # benchmarks/_common.py, next to this script
from bench_signal import FeatureSpace, mean_sd, top_k_precision
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from wsi_pipeline.inference.faithfulness import DELETION_FRACTION, model_probabilities, tile_subsets
from wsi_pipeline.models import SCORE_METHODS, build_model

RESULTS = Path(__file__).resolve().parent / "results"
REAL_DIR = Path(__file__).resolve().parent / "out" / "heatmaps_real"
GENERATORS = ["isotropic", "lowrank", "combination", "real"]
# Default-preset cohorts: the four generators at `--in-dim`, and isotropic at real features' width, where
# `vit_sf`'s maps differ most (30%, 5 seeds: `evidence_profile` 0.74 top-k, `projected_gradient` 0.42;
# benchmarks/RESULTS.md, "A 2,048-d cohort in the default preset"), at 30% and 10% only: at 3% and 1% neither
# ViT classified it on more than one seed of five (AUROC >= 0.9), so those cells never count for a pick.
DEFAULT_COHORTS = ["isotropic", "isotropic@2048:30,10", "lowrank", "combination", "real"]
REFERENCE = "occlusion"
CLASSIFIES = 0.9  # test AUROC from which a run's maps count for the default method
# A cohort on a seed that runs the occlusion reference costs about this many others: in the default preset a run
# took 69-72 s on the occlusion seed (the smallest positive bag occluded) and 23-25 s on the others (2026-11-30).
OCCLUSION_COST = 3.0
METRICS = (
    "topk", "top_drop", "random_drop", "top_drop_k", "random_drop_k", "insert_top", "insert_random", "seconds"
)  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    # What a shared, overloaded 2-core machine allowed on 2026-11-29 (one busy core): bags of 400-600 tiles,
    # 2 seeds, 3 densities; with `--methods` restricted to the candidates it runs in ~25 min.
    "reduced": dict(
        models=["vit_sf", "vit_sf_ca"], densities=[30, 10, 3], seeds=2, train_bags=24, test_bags=6,
        min_tiles=400, max_tiles=600, epochs=4, in_dim=256, occlusion_bags=1, methods=list(SCORE_METHODS),
        generators=GENERATORS,
    ),
    # 5 seeds, 4 densities, the two default ViTs, bags of 500-1,000 tiles, every linear method and the occlusion
    # reference (seed 0), not integrated gradients (it alone cost as much as training in the reduced run; the
    # full preset has it). Measured 2026-11-29 on the 2-core VM with 2-4 other processes: ~31 s a cohort and
    # model, 16 min a seed over the four 256-d/real cohorts; seed 0 (occlusion) about 3.5 times that. With the
    # `isotropic@2048` cohort, `--workers 2` (seeds {0}, {1, 2, 3, 4}) on the idle 2-core VM did 154 of the 200
    # cohort-model runs in 70 min (2026-11-30): about 90 min in all. Since then that cohort runs at 30% and 10%
    # only, occlusion takes the smallest positive bag, the score-free forwards are shared by all methods and the
    # workers get (seed, cohort) units: 50 min for all 180 runs (2026-11-30, `--workers 2`, idle 2-core VM).
    "default": dict(
        models=["vit_sf", "vit_sf_ca"], densities=[30, 10, 3, 1], seeds=5, train_bags=24, test_bags=6,
        min_tiles=500, max_tiles=1000, epochs=4, in_dim=256, occlusion_bags=1,
        methods=[m for m in SCORE_METHODS if m != "integrated_gradients"], generators=DEFAULT_COHORTS,
    ),
    "full": dict(
        models=["vit_sf", "vit_sf_ca", "vit", "vit_sima", "abmil", "transmil", "mean_linear", "meanmax_mlp"],
        densities=[30, 10, 3, 1], seeds=5, train_bags=96, test_bags=40, min_tiles=500, max_tiles=3000,
        epochs=6, in_dim=2048, occlusion_bags=4, methods=list(SCORE_METHODS), generators=GENERATORS,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Bag:
    x: Tensor  # (N, D) float32
    label: int
    planted: Tensor  # (N,) bool


@dataclass(frozen=True)
class Space(FeatureSpace):
    second: Tensor  # (D,) a second planted direction, orthogonal to the basis and to `direction`

    @classmethod
    def draw(cls, in_dim: int, rank: int, gen: torch.Generator) -> "Space":
        q, _ = torch.linalg.qr(torch.randn(in_dim, rank + 2, generator=gen))
        return cls(basis=q[:, :rank].T * (in_dim / rank) ** 0.5, direction=q[:, rank], second=q[:, rank + 1])


@dataclass(frozen=True)
class Draw:
    """What one cohort needs: sizes, density, generator state and (for `real`) the feature pools."""

    n_bags: int
    density: float
    in_dim: int  # of the synthetic tiles
    args: argparse.Namespace
    gen: torch.Generator
    space: "Space"
    pools: tuple[Tensor, Tensor] | None  # (background tiles, planted tiles), for `real`


def bag_size(d: Draw) -> int:
    return int(torch.randint(d.args.min_tiles, d.args.max_tiles + 1, (1,), generator=d.gen))


def planted_mask(n: int, k: int, gen: torch.Generator) -> Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=gen)[:k]] = True
    return mask


def lowrank_tiles(n: int, d: Draw) -> Tensor:
    z = torch.randn(n, d.space.basis.shape[0], generator=d.gen)
    return z @ d.space.basis + d.args.noise * torch.randn(n, d.in_dim, generator=d.gen)


def make_bags(generator: str, d: Draw) -> list[Bag]:
    bags = []
    for i in range(d.n_bags):
        label, n = i % 2, bag_size(d)
        k = max(1, round(d.density * n))
        planted = planted_mask(n, k, d.gen) if label == 1 else torch.zeros(n, dtype=torch.bool)
        if generator == "isotropic":
            x = torch.randn(n, d.in_dim, generator=d.gen)
            x[planted] += d.args.iso_shift * d.space.direction
        elif generator == "lowrank":
            x = lowrank_tiles(n, d)
            x[planted] += d.args.shift * d.space.direction
        elif generator == "combination":
            x = lowrank_tiles(n, d)
            typed = planted_mask(n, k, d.gen) if label == 0 else planted
            a_or_b = torch.rand(n, generator=d.gen) < 0.5 if label == 1 else torch.full((n,), i % 4 == 0)
            x[typed & a_or_b] += d.args.shift * d.space.direction
            x[typed & ~a_or_b] += d.args.shift * d.space.second
        else:
            background, foreground = d.pools  # type: ignore[misc]
            x = background[torch.randint(len(background), (n,), generator=d.gen)].clone()
            x[planted] = foreground[torch.randint(len(foreground), (int(planted.sum()),), generator=d.gen)]
        bags.append(Bag(x.float(), label, planted))
    return bags


def cohort_spec(text: str) -> str:
    """argparse's check of a cohort: a generator, a synthetic one with its own width (`isotropic@2048`), and
    either with the densities it runs at instead of `--densities` (`isotropic@2048:30,10`)."""
    cohort, colon, densities = text.partition(":")
    base, at, width = cohort.partition("@")
    if base not in GENERATORS:
        raise argparse.ArgumentTypeError(f"unknown generator {base!r}; choose from {', '.join(GENERATORS)}")
    if at and (base == "real" or not width.isdigit() or int(width) < 1):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a width is a positive integer after a synthetic generator (real features have theirs)"
        )
    if colon and not all(_is_percent(d) for d in densities.split(",")):
        raise argparse.ArgumentTypeError(f"{text!r}: densities are percents in (0, 100], comma-separated")
    return text


def _is_percent(text: str) -> bool:
    try:
        return 0 < float(text) <= 100
    except ValueError:
        return False


def at_least_one(text: str) -> int:
    """argparse's check of a count that must be positive (`--workers 0` would deal the seeds to no one)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def split_cohort(spec: str, default_dim: int) -> tuple[str, int]:
    """(generator, width of its synthetic tiles): `isotropic@2048:30` -> (isotropic, 2048)."""
    base, _, width = cohort_name(spec).partition("@")
    return base, int(width) if width else default_dim


def cohort_name(spec: str) -> str:
    """The cohort as runs and tables name it, without its densities: `isotropic@2048:30,10` -> isotropic@2048."""
    return spec.partition(":")[0]


def cohort_densities(spec: str, default: list[float]) -> list[float]:
    """The densities (percent) a cohort runs at: its own (`isotropic@2048:30,10`), else `default`."""
    _, colon, densities = spec.partition(":")
    return [float(d) for d in densities.split(",")] if colon else default


def real_pools(features: Path, train: bool) -> tuple[Tensor, Tensor]:
    """Disjoint halves (train/test) of the skin and TCGA tiles' features, shuffled once with a fixed seed."""
    pools = []
    for prefix in ("demo-cmu", "demo-tcga"):
        tiles = torch.cat([load_features(p) for p in sorted(features.glob(f"{prefix}*.h5"))])
        order = torch.randperm(len(tiles), generator=torch.Generator().manual_seed(7))
        half = len(tiles) // 2
        pools.append(tiles[order[:half]] if train else tiles[order[half:]])
    return pools[0], pools[1]


def features_digest(features: Path) -> dict[str, Any]:
    """What the `real` cohort was drawn from: tiles per slide and a SHA-256 of their features, so two reports
    tell whether they drew from the same extraction (their `real` figures differ when not)."""
    digest, tiles = hashlib.sha256(), {}
    for prefix in ("demo-cmu", "demo-tcga"):
        arrays = [load_features(p).numpy() for p in sorted(features.glob(f"{prefix}*.h5"))]
        tiles[prefix] = sum(len(a) for a in arrays)
        for array in arrays:
            digest.update(array.tobytes())
    return {"tiles": tiles, "sha256": digest.hexdigest()}


def load_features(path: Path) -> Tensor:
    from wsi_pipeline.stores.feature_bag import load_bag

    return torch.as_tensor(np.asarray(load_bag(path).features, dtype=np.float32))


def ensure_real_features(features: Path) -> None:
    """Tile and extract (random-init ResNet-50) the demo cohort's crops of the tests/data slides, once."""
    if any(features.glob("demo-tcga*.h5")):
        return
    from rich.console import Console

    from wsi_pipeline.demo import run as demo_run
    from wsi_pipeline.demo.cohort import build_cohort
    from wsi_pipeline.demo.config import DemoConfig
    from wsi_pipeline.tiling.config import TileConfig

    console, cfg, tile_cfg = Console(stderr=True), DemoConfig(), TileConfig()
    cohort = build_cohort(REAL_DIR, cfg, tile_cfg.tile_um, overwrite=False, console=console)
    demo_run._tile(cohort, REAL_DIR / "tiles", tile_cfg, False, False, console)
    demo_run._extract(cfg, REAL_DIR / "tiles", REAL_DIR / "features", False, False, console)


def train_model(name: str, train: list[Bag], seed: int, args: argparse.Namespace) -> nn.Module:
    device = torch.device(args.device)
    torch.manual_seed(seed)
    model = build_model(name, in_dim=train[0].x.shape[1], n_classes=2).to(device)
    tiles = torch.cat([b.x for b in train])
    model.set_feature_norm(tiles.mean(dim=0), tiles.std(dim=0).clamp_min(1e-6))
    model.set_class_means(
        torch.stack([torch.cat([b.x for b in train if b.label == c]).mean(dim=0) for c in (0, 1)])
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    order = torch.Generator().manual_seed(seed)
    for _ in range(args.epochs):
        model.train()
        for i in torch.randperm(len(train), generator=order).tolist():
            opt.zero_grad(set_to_none=True)
            logits = model(train[i].x[None].to(device))
            nn.functional.cross_entropy(
                logits.float(), torch.tensor([train[i].label], device=device)
            ).backward()
            opt.step()
    return model.eval()


def measure_bag(
    model: nn.Module, bag: Bag, methods: list[str], device: torch.device
) -> dict[str, dict[str, float]]:
    """Per method: top-k precision, deletion and insertion of one positive bag's scores, as
    `wsi_pipeline/inference/faithfulness.py` defines them (`tile_subsets`), and the deletion of the top k
    tiles, k the number planted: the tiles top-k precision counts. Removing 10% cannot move a prediction that
    30% of the tiles carry, whatever the map; removing as many tiles as carry the signal can, if the map found
    them. The whole bag and its random subsets do not depend on the scores: forwarded once for all methods."""
    x = bag.x[None].to(device)
    predict = model_probabilities(model)
    whole = float(predict(x)[1])  # explain the positive class: do the scores point at the planted tiles?
    planted = float(bag.planted.float().mean())
    fractions = {"": DELETION_FRACTION, "_k": planted}
    randoms = {tag: tile_subsets(torch.zeros(x.shape[1]), f, seed=0)[1] for tag, f in fractions.items()}
    random_drops = {tag: whole - float(predict(x[:, ~random])[1]) for tag, random in randoms.items()}
    insert_random = float(predict(x[:, randoms[""]])[1])
    rows = {}
    for method in methods:
        started = time.perf_counter()
        scores = model.tile_scores(x, method=method, target=1)[0].cpu()
        seconds = time.perf_counter() - started
        tops = {tag: tile_subsets(scores, f, seed=0)[0] for tag, f in fractions.items()}
        rows[method] = {
            "topk": top_k_precision(scores, bag.planted),
            **{f"top_drop{tag}": whole - float(predict(x[:, ~top])[1]) for tag, top in tops.items()},
            **{f"random_drop{tag}": drop for tag, drop in random_drops.items()},
            "insert_top": float(predict(x[:, tops[""]])[1]),
            "insert_random": insert_random,
            "seconds": seconds,
        }
    return rows


def run_one(
    name: str, train: list[Bag], test: list[Bag], seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    device = torch.device(args.device)
    started = time.perf_counter()
    model = train_model(name, train, seed, args)
    train_s = time.perf_counter() - started
    with torch.no_grad():
        probs = [float(model(b.x[None].to(device)).float().softmax(-1)[0, 1]) for b in test]
    positives = [b for b in test if b.label == 1]
    cheap = [m for m in args.methods if m != REFERENCE]
    rows = [measure_bag(model, b, cheap, device) for b in positives]
    if REFERENCE in args.methods and seed < args.occlusion_seeds:  # quadratic: on the smallest bags only
        smallest = sorted(positives, key=lambda b: len(b.x))[: args.occlusion_bags]
        rows += [measure_bag(model, b, [REFERENCE], device) for b in smallest]
    per_method = {
        m: {key: statistics.fmean(r[m][key] for r in rows if m in r) for key in METRICS}
        for m in args.methods
        if any(m in r for r in rows)
    }
    return {
        "model": name,
        "seed": seed,
        "auroc": roc_auc_score([b.label for b in test], probs),
        "methods": per_method,
        "train_s": train_s,
    }


def cells(report: dict[str, Any], model: str) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(generator, density, runs) for `model`, in the benchmark's order."""
    out = []
    for generator in dict.fromkeys(map(cohort_name, report["settings"]["generators"])):
        for density in report["settings"]["densities"]:
            runs = [
                r for r in report["runs"]
                if r["model"] == model and r["generator"] == generator and r["density"] == density
            ]  # fmt: skip
            if runs:
                out.append((generator, density, runs))
    return out


def values(runs: list[dict[str, Any]], method: str, key: str) -> list[float]:
    """`key` of `method` over the runs that measured it (reports before a key existed lack it)."""
    return [r["methods"][method][key] for r in runs if key in r["methods"].get(method, {})]


def gain(topk: float, density: float) -> float:
    """Precision gain over chance: 0 at chance, 1 when every top-k tile is planted."""
    return (topk - density / 100) / (1 - density / 100)


def pick_default_methods(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model: the method with the best worst-case precision gain over the cells it classifies: those where
    most runs reach test AUROC >= CLASSIFIES, each judged on those runs only.

    Worst case, not mean: a reader of a heatmap cannot tell which regime a slide is in. Runs, not the cell's
    mean AUROC: a heatmap explains one trained model, and one seed that did not learn the task says nothing
    about the maps of the ones that did (a mean of 0.89 dropped `real` 3% whole, 3 of 5 seeds at 1.00, where
    the methods differ most). Most, not any: 6 test bags reach AUROC 0.9 by chance now and then, and a lone
    lucky run at 1% made every method's worst case the noise floor. Ties within 0.02 go to the cheaper method
    (the order of `SCORE_METHODS`)."""
    picks = {}
    for model in report["settings"]["models"]:
        solved = [
            (g, d, ok, len(runs)) for g, d, runs in cells(report, model)
            if 2 * len(ok := [r for r in runs if r["auroc"] >= CLASSIFIES]) > len(runs)
        ]  # fmt: skip
        if not solved:
            picks[model] = {"method": None, "solved": []}
            continue
        worst = {
            m: min(gain(statistics.fmean(values(ok, m, "topk")), d) for _, d, ok, _ in solved)
            for m in SCORE_METHODS
            if m != REFERENCE and all(values(ok, m, "topk") for _, _, ok, _ in solved)
        }
        best = max(worst.values())
        method = next(m for m in worst if worst[m] >= best - 0.02)
        picks[model] = {
            "method": method,
            "solved": [f"{g} {d:g}% ({len(ok)}/{n})" for g, d, ok, n in solved],
            "worst_gain": worst,
        }
    return picks


def model_table(report: dict[str, Any], model: str, key: str) -> list[str]:
    methods = [m for m in SCORE_METHODS if any(m in r["methods"] for r in report["runs"])]
    lines = [
        "| generator | density | AUROC | " + " | ".join(f"`{m}`" for m in methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    for generator, density, runs in cells(report, model):
        row = [generator, f"{density:g}%", mean_sd([r["auroc"] for r in runs])]
        for m in methods:
            v = values(runs, m, key)
            row.append(mean_sd(v) if v else "")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"Preset `{s['preset']}`: {s['seeds']} seeds; per cohort {s['train_bags']} train / {s['test_bags']} test bags "
        f"of {s['min_tiles']}-{s['max_tiles']} tiles ({s['in_dim']}-d synthetic unless a cohort names its width, "
        "real features 2048-d); "
        f"{s['epochs']} epochs of AdamW (lr {s['lr']:g}, batch 1); paper-default architectures. "
        f"`{REFERENCE}` on the {s['occlusion_bags']} smallest positive bag(s) of seed 0 only. Mean ± sd over seeds "
        f"(of the per-run means over the positive test bags). Load average {report['load_average_start'][0]:.1f} "
        f"at the start, {report.get('load_average_end', [float('nan')])[0]:.1f} at the end; "
        f"{report.get('wall_s', float('nan')) / 60:.0f} min.{real_features_note(report)}",
    ]
    for model in s["models"]:
        for title, key in (
            ("top-k precision on the planted tiles (chance = density)", "topk"),
            ("deletion: probability drop, top 10% removed", "top_drop"),
            ("deletion: probability drop, random 10% removed", "random_drop"),
            ("deletion: probability drop, top k removed (k = the planted tiles' count)", "top_drop_k"),
            ("deletion: probability drop, k random tiles removed", "random_drop_k"),
            ("insertion: probability with only the top 10% kept", "insert_top"),
        ):
            if any(key in m for r in report["runs"] for m in r["methods"].values()):
                lines += ["", f"**`{model}`: {title}**", "", *model_table(report, model, key)]
    lines += [
        "",
        "Default score method per model: best worst-case precision gain over the cells it classifies",
        "",
    ]
    lines += default_pick_lines(
        report["default_methods"], "worst_gain", "worst gain:", "classifies no cell (AUROC < 0.9 everywhere)"
    )
    return "\n".join(lines) + "\n"


def real_features_note(report: dict[str, Any]) -> str:
    drawn_from = report.get("real_features")
    if drawn_from is None:
        return ""
    if isinstance(drawn_from, list):
        return " **`real` bags drawn from different feature extractions in the merged runs.**"
    tiles = ", ".join(f"{n} {prefix}" for prefix, n in drawn_from["tiles"].items())
    return f" `real` cohort: {tiles} tiles, features sha256 {drawn_from['sha256'][:16]}."


def write_report(report: dict[str, Any], json_path: Path) -> None:
    report["default_methods"] = pick_default_methods(report)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(json_path)
    json_path.with_suffix(".md").write_text(markdown(report))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--reduced", action="store_true", help="what a busy shared CPU allows: 2 seeds")
    preset.add_argument("--full", action="store_true", help="all models, bags of 500-3,000 tiles, for a GPU")
    parser.add_argument("--models", nargs="+")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=SCORE_METHODS,
        help="score methods to measure; default: the preset's",
    )
    parser.add_argument(
        "--generators",
        nargs="+",
        type=cohort_spec,
        help=f"cohorts: {', '.join(GENERATORS)}, a synthetic one may name its width (isotropic@2048); "
        "default: the preset's",
    )
    parser.add_argument(
        "--densities", nargs="+", type=float, help="percent of planted tiles in positive bags"
    )
    for name in (
        "seeds",
        "train-bags",
        "test-bags",
        "min-tiles",
        "max-tiles",
        "epochs",
        "in-dim",
        "occlusion-bags",
    ):
        parser.add_argument(f"--{name}", type=int)
    parser.add_argument("--occlusion-seeds", type=int, default=1, help="seeds on which the reference runs")
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. seeds-1 only")
    parser.add_argument(
        "--workers", type=at_least_one, default=1, help="processes; cohorts dealt by cost, results merged"
    )
    parser.add_argument("--only-units", nargs="+", help=argparse.SUPPRESS)  # a worker's share: seed/cohort
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--shift", type=float, default=24.0, help="planted shift of `lowrank`, `combination`")
    parser.add_argument(
        "--iso-shift", type=float, default=4.0, help="planted shift of `isotropic` (noise sd 1)"
    )
    parser.add_argument("--real-features", type=Path, default=REAL_DIR / "features")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--tag", default="")
    parser.add_argument(
        "--report-only",
        type=Path,
        nargs="+",
        help="render the .md of JSON results (several: their runs merged)",
    )
    return parser.parse_args()


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report of several runs' (workers, runs over different seeds or cohorts): the first one's settings,
    with the cohorts of all, in order of first appearance."""
    merged = reports[0] | {"runs": [run for r in reports for run in r["runs"]]}
    drawn_from = [r["real_features"] for r in reports if "real_features" in r]
    if drawn_from:  # a list when the runs drew `real` bags from different extractions
        merged["real_features"] = drawn_from[0] if all(d == drawn_from[0] for d in drawn_from) else drawn_from
    cohorts = dict.fromkeys(g for r in reports for g in r["settings"].get("generators", []))
    merged["settings"] = merged["settings"] | {
        "seeds": len({run["seed"] for run in merged["runs"]}),
        "generators": list(cohorts),
    }
    return merged


def all_units(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(seed, index into `args.generators`) of every cohort to run, seed-major, so an interrupted run still
    covers every cohort (`real` last within a seed); a worker runs its share (`--only-units`) only."""
    if args.only_units:
        return [(int(seed), int(index)) for seed, index in (unit.split("/") for unit in args.only_units)]
    return [(seed, i) for seed in range(args.first_seed, args.seeds) for i in range(len(args.generators))]


def deal_units(args: argparse.Namespace) -> list[list[tuple[int, int]]]:
    """Units per worker, balanced by cost, the dearest first to the least loaded worker. A unit costs its
    number of densities, times OCCLUSION_COST on a seed that runs the occlusion reference (quadratic in the
    bag): dealing whole seeds left one worker with the reference seed and the other with all the rest."""

    def cost(unit: tuple[int, int]) -> float:
        seed, index = unit
        densities = len(cohort_densities(args.generators[index], args.densities))
        return densities * (OCCLUSION_COST if seed < args.occlusion_seeds else 1.0)

    shares: list[list[tuple[int, int]]] = [[] for _ in range(args.workers)]
    loads = [0.0] * args.workers
    for unit in sorted(all_units(args), key=cost, reverse=True):
        least = loads.index(min(loads))
        shares[least].append(unit)
        loads[least] += cost(unit)
    return [sorted(share) for share in shares]


def worker_argv(part: Path, units: list[tuple[int, int]]) -> list[str]:
    """This script's own command line for one worker (later options win in argparse)."""
    tag = part.stem.removeprefix("heatmaps_")
    return [
        sys.executable,
        __file__,
        *sys.argv[1:],
        "--workers",
        "1",
        "--tag",
        tag,
        "--only-units",
        *(f"{seed}/{index}" for seed, index in units),
    ]


def run_workers(args: argparse.Namespace, path: Path) -> None:
    """Cohorts dealt to `--workers` child processes of this script (`deal_units`), their reports merged into
    `path`. When any worker fails, the workers' own JSONs stay behind for `--report-only`."""
    if any(split_cohort(g, args.in_dim)[0] == "real" for g in args.generators):
        ensure_real_features(args.real_features)  # once, before workers could race to build them
    shares = [share for share in deal_units(args) if share]
    parts = [path.with_name(f"{path.stem}_w{i}.json") for i in range(len(shares))]
    started = time.perf_counter()
    children = [subprocess.Popen(worker_argv(part, share)) for part, share in zip(parts, shares, strict=True)]
    if any(child.wait() != 0 for child in children):
        sys.exit(f"a worker failed; what finished is in {', '.join(p.name for p in parts)} (--report-only)")
    merged = merge_reports([json.loads(part.read_text()) for part in parts])
    merged["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    merged["wall_s"] = time.perf_counter() - started
    write_report(merged, path)
    for part in parts:
        part.unlink()
        part.with_suffix(".md").unlink()
    print(path.with_suffix(".md").read_text())


def main() -> None:
    args = parse_args()
    if args.report_only:
        write_report(
            merge_reports([json.loads(p.read_text()) for p in args.report_only]), args.report_only[0]
        )
        print(args.report_only[0].with_suffix(".md").read_text())
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    name = "reduced" if args.reduced else "full" if args.full else "default"
    for key, value in PRESETS[name].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.densities = [float(d) for d in args.densities]
    path = RESULTS / f"heatmaps_{args.tag or name + '_' + args.device}.json"
    if args.workers > 1:
        run_workers(args, path)
        return
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_start": os.getloadavg(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {"preset": name},
        "runs": [],
    }
    started = time.perf_counter()
    for seed, index in all_units(args):
        generator = args.generators[index]
        for density in cohort_densities(generator, args.densities):
            run_cohort(report, generator, density, seed, args)
            report["wall_s"], report["load_average_end"] = time.perf_counter() - started, os.getloadavg()
            write_report(report, path)
    print(markdown(report))


def run_cohort(
    report: dict[str, Any], generator: str, density: float, seed: int, args: argparse.Namespace
) -> None:
    base, in_dim = split_cohort(generator, args.in_dim)
    if base == "real":
        ensure_real_features(args.real_features)  # on first use: the other generators need no slides
        report.setdefault("real_features", features_digest(args.real_features))
    gen = torch.Generator().manual_seed(10_000 * seed + round(density * 100) + 17 * GENERATORS.index(base))
    space = Space.draw(in_dim, args.rank, gen)
    cohorts = []
    for n_bags, train in ((args.train_bags, True), (args.test_bags, False)):
        pools = real_pools(args.real_features, train) if base == "real" else None
        cohorts.append(make_bags(base, Draw(n_bags, density / 100, in_dim, args, gen, space, pools)))
    for model in args.models:
        run = run_one(model, cohorts[0], cohorts[1], seed, args) | {
            "generator": cohort_name(generator),
            "density": density,
        }
        report["runs"].append(run)
        print(
            f"{generator:>11} {density:>4g}% seed {seed} {model:>9}: AUROC {run['auroc']:.2f} top-k "
            + " ".join(f"{m[:6]} {v['topk']:.2f}" for m, v in run["methods"].items())
            + f" ({run['train_s']:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
