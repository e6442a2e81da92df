"""Benchmark what `wsi tile` keeps: kept tiles, tissue recall and seconds per slide on the bundled slides,
and the validation of the blur and ink rules on altered copies of them.

For every slide in tests/data/slides (and any further slide files or folders given; slides without a
resolution get `--mpp 0.5`), at the default settings:
  kept tiles, grid tiles, tissue recall (share of the tissue mask covered by kept tiles), wall and CPU
  seconds for `tile_slide` in this process (median of --repeats, after one warm-up run that pays the
  imports; CPU seconds are the fairer figure on a busy machine).
On CMU-1-Small-Region and the TCGA slide (mpp 0.5):
  blur: copies blurred by a Gaussian of 1, 2 and 3 µm at scan resolution; kept tiles against the sharp
  copy's (the rule: at most 30 %);
  ink: copies with a translucent marker stroke (green, blue, black, red; the ink multiplies the colour
  beneath) 150 µm wide across the middle of the slide; kept tiles that touch the stroke (the rule: none).

Writes benchmarks/results/tile_quality.json and tile_quality.md. Run:
  uv run python benchmarks/bench_tile_quality.py [--repeats 3] [EXTRA_SLIDES...]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._common import markdown_table  # noqa: E402
from benchmarks._machine import LoadGuard, add_busy_argument, busy_banner  # noqa: E402
from wsi_pipeline.errors import WsiError  # noqa: E402
from wsi_pipeline.slides.discover import find_slides  # noqa: E402
from wsi_pipeline.slides.writer import write_slide  # noqa: E402
from wsi_pipeline.stores.tile_store import TileStore, read_tile_store, store_path  # noqa: E402
from wsi_pipeline.tiling.config import TileConfig  # noqa: E402
from wsi_pipeline.tiling.slide import SlideJob, tile_slide  # noqa: E402

SLIDES = REPO / "tests" / "data" / "slides"
OUT = REPO / "benchmarks" / "out" / "tile_quality"
RESULTS = REPO / "benchmarks" / "results"
VALIDATION_SLIDES = ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs")
BLUR_UM = (1.0, 2.0, 3.0)
INKS = {"green": (60, 170, 90), "blue": (40, 70, 200), "black": (50, 50, 50), "red": (230, 30, 40)}
STROKE_UM = 150.0
FALLBACK_MPP = 0.5


def tile(slide: Path, out: Path, mpp: float | None = FALLBACK_MPP) -> tuple[TileStore, float, float]:
    """The store, wall seconds and CPU seconds of this process (the fairer figure on a busy machine)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = tile_slide(SlideJob(slide, out, TileConfig(mpp=mpp)))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return read_tile_store(store_path(out, outcome.slide_id)), seconds, cpu_seconds


def slide_figures(slide: Path, repeats: int) -> dict[str, object]:
    try:
        tile(slide, OUT / "warm-up")
    except WsiError as exc:
        return {"slide": slide.name, "error": str(exc)}
    runs = [tile(slide, OUT / "bundled") for _ in range(repeats)]
    meta = runs[-1][0].meta
    return {
        "slide": slide.name,
        "grid": meta.model_extra["n_grid"],
        "kept": meta.n_kept,
        "tissue_recall": meta.tissue_recall,
        "rejected": meta.rejected,
        "mpp_source": meta.mpp_source,
        "seconds": statistics.median(run[1] for run in runs),
        "cpu_seconds": statistics.median(run[2] for run in runs),
    }


def level0(slide: Path) -> np.ndarray:
    import openslide

    with openslide.OpenSlide(str(slide)) as handle:
        return np.asarray(handle.read_region((0, 0), 0, handle.dimensions).convert("RGB"))


def blur_figures(slide: Path, pixels: np.ndarray, mpp: float, sharp_kept: int) -> list[dict[str, object]]:
    from PIL import Image, ImageFilter

    rows = []
    for sigma_um in BLUR_UM:
        soft = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(sigma_um / mpp)))
        path = write_slide(OUT / "copies" / f"{slide.stem}-blur{sigma_um:g}.tif", soft, mpp=mpp)
        meta = tile(path, OUT / "blur")[0].meta
        rows.append(
            {
                "slide": slide.name,
                "sigma_um": sigma_um,
                "sharp_kept": sharp_kept,
                "kept": meta.n_kept,
                "kept_share": meta.n_kept / max(sharp_kept, 1),
                "rejected_blur": meta.rejected["blur"],
            }
        )
    return rows


def ink_figures(slide: Path, pixels: np.ndarray, mpp: float) -> list[dict[str, object]]:
    height, width = pixels.shape[:2]
    stroke = np.zeros((height, width), bool)
    half = round(STROKE_UM / mpp / 2)
    stroke[height // 2 - half : height // 2 + half, width // 5 : 4 * width // 5] = True
    rows = []
    for name, colour in INKS.items():
        inked = pixels.copy()
        inked[stroke] = (inked[stroke].astype(np.float32) * np.array(colour) / 255).astype(np.uint8)
        path = write_slide(OUT / "copies" / f"{slide.stem}-ink-{name}.tif", inked, mpp=mpp)
        store = tile(path, OUT / "ink")[0]
        side = store.meta.tile_px_level0
        under = sum(bool(stroke[y : y + side, x : x + side].any()) for x, y in store.coords.tolist())
        rows.append(
            {
                "slide": slide.name,
                "ink": name,
                "kept": store.meta.n_kept,
                "kept_under_ink": under,
                "rejected_ink": store.meta.rejected["ink"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extra", nargs="*", type=Path, help="further slide files or folders")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bundled-only", action="store_true", help="skip the blurred and inked copies")
    add_busy_argument(parser)
    args = parser.parse_args()
    guard = LoadGuard(threads=1, allow_busy=args.allow_busy)  # benchmarks/_machine.py

    slides = find_slides([SLIDES, *args.extra])
    bundled = [slide_figures(slide, args.repeats) for slide in slides]
    blur, ink = [], []
    for row in bundled:
        if row["slide"] in VALIDATION_SLIDES and "error" not in row and not args.bundled_only:
            slide = SLIDES / str(row["slide"])
            pixels, mpp = (
                level0(slide),
                read_tile_store(store_path(OUT / "bundled", slide.stem)).meta.mpp_level0,
            )
            blur += blur_figures(slide, pixels, mpp, int(row["kept"]))
            ink += ink_figures(slide, pixels, mpp)
    result = {
        "command": "uv run python benchmarks/bench_tile_quality.py " + " ".join(sys.argv[1:]),
        "bundled": bundled,
        "blur": blur,
        "ink": ink,
        "load": guard.finish(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tile_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "tile_quality.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    bundled = [
        [row["slide"], f"failed: {row['error']}", "", "", "", ""]
        if "error" in row
        else [
            row["slide"],
            row["grid"],
            row["kept"],
            f"{row['tissue_recall']:.2f}",
            f"{row['seconds']:.2f}",
            f"{row['cpu_seconds']:.2f}",
        ]
        for row in result["bundled"]
    ]
    blur = [
        [r["slide"], f"{r['sigma_um']:g}", r["sharp_kept"], r["kept"], f"{r['kept_share']:.2f}"]
        for r in result["blur"]
    ]
    ink = [[r["slide"], r["ink"], r["kept"], r["kept_under_ink"], r["rejected_ink"]] for r in result["ink"]]
    lines = [
        busy_banner(result["load"]),
        *markdown_table(
            ["slide", "grid", "kept", "tissue recall", "s per slide", "CPU s per slide"], bundled
        ),
        "",
        *markdown_table(["blurred copy", "σ µm", "sharp kept", "kept", "share"], blur),
        "",
        *markdown_table(["inked copy", "ink", "kept", "kept under the ink", "rejected as ink"], ink, "llrrr"),
        "",
        f"Command: `{result['command'].strip()}`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
