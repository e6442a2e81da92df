"""`wsi demo` as a library call: the demo cohort through tile -> extract -> train -> eval, in this process.

Each step calls the stage's own library entry point with the stage's defaults (its config model), so the demo
folder holds exactly what the four commands would have written:

    README.txt          what this folder is: the mechanics of the pipeline, not a diagnosis
    demo_config.yaml    the demo's settings
    cohort.csv, labels.csv, slides/    the demo cohort (`wsi_pipeline.demo.cohort`)
    tiles/              wsi tile: <slide_id>.zarr stores, <slide_id>.qc.png, tile_config.yaml
    features/           wsi extract: <slide_id>.h5 bags of a RANDOM-INIT ResNet-50, extract_config.yaml
    runs/demo/          wsi train: config.yaml, splits.csv, checkpoint.pt, history.csv
    runs/demo/eval/     wsi eval: metrics.json, predictions.csv, roc.png, heatmaps/

Re-running resumes: the stages skip their complete outputs and training continues its run; evaluation,
seconds long, is redone. `overwrite` redoes every step. The extractor's random weights are seeded, so bags
written by an interrupted run and by its resumption come from the same network.
"""

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from rich.console import Console

from wsi_pipeline.batch import SlideOutcome, print_summary
from wsi_pipeline.config import load_config, write_resolved_config
from wsi_pipeline.demo.cohort import Cohort, build_cohort
from wsi_pipeline.demo.config import DemoConfig
from wsi_pipeline.errors import WsiError
from wsi_pipeline.evaluate.config import EvalConfig
from wsi_pipeline.evaluate.run import EvalResult, run_evaluation
from wsi_pipeline.extract.config import ExtractConfig
from wsi_pipeline.extract.run import SUMMARY_COLUMNS, extract_stores
from wsi_pipeline.stores.atomic import write_text_atomic
from wsi_pipeline.tiling.config import TileConfig
from wsi_pipeline.tiling.runner import tile_slides
from wsi_pipeline.train.config import resolve_train_config
from wsi_pipeline.train.run import run_training

README_FILE = "README.txt"
README_TITLE = "wsi demo folder"
CONFIG_FILE = "demo_config.yaml"
RUN_NAME = "demo"
MECHANICS_NOTE = (
    "This shows the mechanics of the pipeline, not a diagnosis: the features come from a RANDOM-INIT "
    "ResNet-50 (no pretrained weights), and the two classes are crops of two slides, one slide per class, "
    "so a high AUROC only says that the two source slides look different."
)
README_TEXT = f"""{README_TITLE}

Written by `wsi demo`. {MECHANICS_NOTE}
Each crop has its own patient id so that the patient-level split can place both classes in train, val
and test; in truth all crops of a class come from one patient.

  cohort.csv, labels.csv, slides/   the demo slides: where each crop came from, its class, the TIFFs
  tiles/                            wsi tile: tile stores and QC images (<slide_id>.qc.png)
  features/                         wsi extract --random-init: feature bags
  runs/demo/                        wsi train: the run folder (config, splits, checkpoint, history)
  runs/demo/eval/                   wsi eval: metrics.json (AUROC with 95% CI), predictions.csv, roc.png,
                                    heatmaps/<slide_id>.png and .geojson (open the .geojson in QuPath)

Run `wsi demo --out <this folder>` again to resume, with --overwrite to redo everything.
"""

T = TypeVar("T")


@dataclass(frozen=True)
class DemoResult:
    out_dir: Path
    evaluation: EvalResult
    heatmaps: list[Path]
    qc_images: list[Path]
    step_seconds: dict[str, float]

    def report_lines(self) -> list[str]:
        """The figures and paths a user looks at, one per line; every path named exists."""
        metrics = self.evaluation.metrics
        auroc = metrics.get("auroc")
        shown = "undefined" if auroc is None else f"{auroc:.3f}"
        per_class = ", ".join(f"{name} {n}" for name, n in metrics["n_per_class"].items())
        eval_dir = self.evaluation.out_dir
        # Not a result: every crop of a class comes from one slide of one patient, so there are two
        # patients in truth and no interval could mean anything; it only shows that the stages ran.
        return [
            f"demo mechanics check: test AUROC {shown} on {metrics['n_slides']} test crops ({per_class}); "
            "NOT a result (each class is crops of one slide, one patient): no confidence interval",
            f"NOTE: {MECHANICS_NOTE}",
            "heatmaps of the test slides (tile scores over the slide, with a .geojson for QuPath beside "
            "each) and their top-scoring tiles (.topk.png):",
            *(f"  {path}" for path in self.heatmaps),
            "QC images of the same slides (tissue mask, kept and rejected tiles):",
            *(f"  {path}" for path in self.qc_images),
            f"ROC curve: {eval_dir / 'roc.png'}",
            f"metrics: {eval_dir / 'metrics.json'}",
            f"predictions: {eval_dir / 'predictions.csv'}",
            f"everything else (all {len(list((self.out_dir / 'tiles').glob('*.qc.png')))} QC images, "
            f"the run folder): {self.out_dir}",
        ]


def run_demo(
    out_dir: Path,
    cfg: DemoConfig | None = None,
    *,
    overwrite: bool = False,
    debug: bool = False,
    console: Console | None = None,
) -> DemoResult:
    """Build the demo cohort and run every stage on it into `out_dir`; raises `WsiError` when a step fails."""
    cfg = cfg or DemoConfig()
    console = console or Console(stderr=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)
    try:
        return _run_steps(out_dir, cfg, overwrite, debug, console)
    finally:
        torch.set_num_threads(threads)


def _run_steps(out_dir: Path, cfg: DemoConfig, overwrite: bool, debug: bool, console: Console) -> DemoResult:
    _claim_folder(out_dir)
    write_resolved_config(out_dir / CONFIG_FILE, cfg)
    seconds: dict[str, float] = {}

    def step(name: str, title: str, work: Callable[[], T]) -> T:
        console.rule(f"[bold]{title}")
        started = time.perf_counter()
        result = work()
        seconds[name] = time.perf_counter() - started
        return result

    tile_cfg = TileConfig()
    cohort = step(
        "cohort",
        f"1/5 demo cohort: {cfg.n_per_class} crops of each of 2 real slides",
        lambda: build_cohort(out_dir, cfg, tile_cfg.tile_um, overwrite=overwrite, console=console),
    )
    tiles = out_dir / "tiles"
    step("tile", "2/5 wsi tile", lambda: _tile(cohort, tiles, tile_cfg, overwrite, debug, console))
    features = out_dir / "features"
    step(
        "extract",
        "3/5 wsi extract --random-init",
        lambda: _extract(cfg, tiles, features, overwrite, debug, console),
    )
    run_dir = out_dir / "runs" / RUN_NAME
    step(
        "train",
        f"4/5 wsi train ({cfg.model}, {cfg.epochs} epochs)",
        lambda: _train(cfg, features, cohort.labels_csv, run_dir, overwrite, console),
    )
    evaluation = step("eval", "5/5 wsi eval", lambda: _evaluate(run_dir, tiles, cohort.slides_dir, console))

    heatmaps, qc_images = [], []
    for outcome in evaluation.outcomes:
        heatmap_dir = evaluation.out_dir / "heatmaps"
        for name in (f"{outcome.slide_id}.png", f"{outcome.slide_id}.topk.png"):
            if (heatmap_dir / name).is_file():
                heatmaps.append(heatmap_dir / name)
        if (tiles / f"{outcome.slide_id}.qc.png").is_file():
            qc_images.append(tiles / f"{outcome.slide_id}.qc.png")
    console.print(
        "wsi demo: "
        + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
        + f"; total {sum(seconds.values()):.0f} s"
    )
    return DemoResult(out_dir, evaluation, heatmaps, qc_images, seconds)


def _claim_folder(out_dir: Path) -> None:
    """Write only into a new, empty or earlier demo folder: `--overwrite` must never touch a user's files."""
    readme = out_dir / README_FILE
    if out_dir.exists() and not out_dir.is_dir():
        raise WsiError(f"{out_dir}: exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        is_demo = readme.is_file() and readme.read_text(encoding="utf-8").startswith(README_TITLE)
        if not is_demo:
            raise WsiError(
                f"{out_dir}: not empty and not a demo folder (no {README_FILE} of wsi demo); "
                "choose a new or empty --out"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(readme, README_TEXT)


def _check(stage: str, outcomes: list[SlideOutcome]) -> None:
    failed = [o.slide_id for o in outcomes if o.status == "failed"]
    if failed:
        raise WsiError(
            f"{stage} failed for {len(failed)} demo slide(s): {', '.join(failed)} (see the table above)"
        )


def _tile(
    cohort: Cohort, tiles: Path, cfg: TileConfig, overwrite: bool, debug: bool, console: Console
) -> None:
    _check(
        "wsi tile",
        tile_slides(cohort.slide_paths, tiles, cfg, overwrite=overwrite, debug=debug, console=console),
    )


def _extract(
    cfg: DemoConfig, tiles: Path, features: Path, overwrite: bool, debug: bool, console: Console
) -> None:
    console.print(
        "[bold yellow]RANDOM-INIT extractor:[/] ResNet-50 (RetCCL's architecture) with random weights, "
        "so the features carry colour and texture statistics, not learned morphology"
    )
    # The same random network on every run, so a resumed extraction never mixes two encoders' bags.
    torch.manual_seed(cfg.seed)
    # Tiles read in this process: a reader process per slide costs more than a few tiles take to read.
    settings = ExtractConfig(random_init=True, workers=0, overwrite=overwrite)
    outcomes = extract_stores(tiles, features, settings, console, debug=debug)
    print_summary(console, "wsi extract", outcomes, SUMMARY_COLUMNS)
    _check("wsi extract", outcomes)


def _train(
    cfg: DemoConfig, features: Path, labels: Path, run_dir: Path, overwrite: bool, console: Console
) -> None:
    if overwrite and run_dir.is_dir():
        shutil.rmtree(run_dir)  # inside the demo folder that `_claim_folder` vouched for
    overrides = {
        "features": features,
        "labels": labels,
        "model": cfg.model,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "threads": cfg.torch_threads,
    }
    # Resume whatever part of the run exists (all of it: its finished fold is skipped).
    resume = (run_dir / "config.yaml").is_file()
    train_cfg = resolve_train_config(None, overrides, run_dir, resume)
    summary = run_training(train_cfg, run_dir, resume=resume, console=console)
    console.print(summary.final_line())


def _evaluate(run_dir: Path, tiles: Path, slides: Path, console: Console) -> EvalResult:
    settings = load_config(EvalConfig, None, {"tiles": tiles, "slides_root": slides})
    result = run_evaluation(settings, run_dir, console=console)
    print_summary(console, "wsi eval", result.outcomes, ["tiles", "label", "predicted"])
    _check("wsi eval", result.outcomes)
    console.print(result.final_line())
    return result
