"""The demo cohort: two classes of small slides, each class cut from one of two different real slides.

A demo slide is a square crop of a source slide, `tiles_per_side` tiles of the tile stage's `tile_um` wide,
at a seeded random position where the source's tissue mask (the tile stage's own Otsu mask) covers at least
`min_crop_tissue` of it, turned by a random multiple of 90° and sometimes mirrored so crops that overlap in
the source still differ. It is written as a small pyramidal TIFF (`wsi_pipeline.slides.writer`) with its
µm/px in the resolution tags, so tiling needs no `--mpp`; a source without a resolution (the TCGA slide)
is taken at `mpp_without_metadata`, and that value goes into its crops.

The class is the source slide, so stain and tissue type separate the classes: the demo shows the mechanics
of the pipeline, not a diagnosis. Each crop is given its own patient id so that the trainer's patient-level
split can put both classes into train, val and test; in truth all crops of a class come from one patient.

Files, next to `slides/`: `cohort.csv` (where each crop came from; written first, it is the plan),
`slides/<slide_id>.tiff`, then `labels.csv` (slide_id, label, patient_id). A re-run plans again (cheap and
deterministic) and keeps the slides already written when `cohort.csv` holds the same plan.
"""

import csv
import io
from contextlib import ExitStack
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np
from rich.console import Console

from wsi_pipeline.demo.config import DemoConfig
from wsi_pipeline.errors import WsiError
from wsi_pipeline.progress import progress_bar
from wsi_pipeline.resources import CMU_SLIDE, TCGA_SLIDE, demo_slides_dir
from wsi_pipeline.slides import SlideReader, open_slide, resolve_mpp
from wsi_pipeline.slides.writer import write_slide
from wsi_pipeline.stores.atomic import atomic_path, clean_stale_temporaries, write_text_atomic
from wsi_pipeline.tiling.geometry import tissue_fractions
from wsi_pipeline.tiling.tissue import tissue_mask

SLIDES_DIR = "slides"
LABELS_FILE = "labels.csv"
COHORT_FILE = "cohort.csv"
SLIDE_SUFFIX = ".tiff"
# Random crop positions tried per source; the first `n_per_class` with enough tissue are used.
CANDIDATE_POSITIONS = 2000
PLANNING_THUMBNAIL_PX = 1024


@dataclass(frozen=True)
class DemoSource:
    label: str
    file_name: str
    slide_prefix: str


DEMO_SOURCES = (
    DemoSource("cmu_skin", CMU_SLIDE, "demo-cmu"),
    DemoSource("tcga_lung", TCGA_SLIDE, "demo-tcga"),
)


@dataclass(frozen=True)
class Crop:
    """One demo slide: which source pixels it holds and how they were turned (a row of cohort.csv)."""

    slide_id: str
    label: str
    patient_id: str
    source: str
    x_level0: int
    y_level0: int
    side_level0_px: int
    mpp: float
    mpp_source: str
    quarter_turns: int
    mirrored: bool


@dataclass(frozen=True)
class Cohort:
    slides_dir: Path
    labels_csv: Path
    crops: tuple[Crop, ...]

    @property
    def slide_paths(self) -> list[Path]:
        return [slide_path(self.slides_dir, crop.slide_id) for crop in self.crops]


def slide_path(slides_dir: Path, slide_id: str) -> Path:
    return slides_dir / f"{slide_id}{SLIDE_SUFFIX}"


def build_cohort(
    out_dir: Path, cfg: DemoConfig, tile_um: float, *, overwrite: bool = False, console: Console | None = None
) -> Cohort:
    """Plan the crops, write the demo slides that are missing, then `labels.csv`; returns the cohort."""
    sources = demo_slides_dir()
    slides_dir = out_dir / SLIDES_DIR
    slides_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(slides_dir)
    with ExitStack() as stack:
        readers = {s.file_name: stack.enter_context(open_slide(sources / s.file_name)) for s in DEMO_SOURCES}
        crops = plan_crops(readers, cfg, tile_um)
        plan = cohort_csv(crops)
        plan_file = out_dir / COHORT_FILE
        same_plan = plan_file.is_file() and plan_file.read_text(encoding="utf-8") == plan
        if plan_file.is_file() and not same_plan and not overwrite:
            raise WsiError(
                f"{plan_file}: the demo slides in {slides_dir} were cut with other settings; "
                "pass --overwrite to cut them again, or choose another --out"
            )
        write_text_atomic(plan_file, plan)
        todo = [
            c for c in crops if overwrite or not same_plan or not slide_path(slides_dir, c.slide_id).is_file()
        ]
        with progress_bar(console, transient=False) as progress:
            task = progress.add_task("demo slides", total=len(todo))
            for crop in todo:
                write_crop(readers[crop.source], crop, slide_path(slides_dir, crop.slide_id))
                progress.advance(task)
    labels_csv = out_dir / LABELS_FILE
    write_text_atomic(labels_csv, labels_text(crops))
    if console is not None:
        counts = ", ".join(f"{s.label} {sum(c.label == s.label for c in crops)}" for s in DEMO_SOURCES)
        console.print(
            f"demo cohort: {len(crops)} slides ({counts}) in {slides_dir}, "
            f"{len(crops) - len(todo)} kept from an earlier run; labels in {labels_csv}"
        )
    return Cohort(slides_dir, labels_csv, tuple(crops))


def plan_crops(readers: dict[str, SlideReader], cfg: DemoConfig, tile_um: float) -> list[Crop]:
    """Every crop of the cohort, class by class; the same settings and sources give the same plan."""
    crops: list[Crop] = []
    for index, source in enumerate(DEMO_SOURCES):
        reader = readers[source.file_name]
        mpp, mpp_source = resolve_mpp(reader, cfg.mpp_without_metadata)
        # The tile stage's own rounding, so the crop holds exactly tiles_per_side whole tiles.
        side = cfg.tiles_per_side * round(tile_um / mpp)
        width, height = reader.level0_px
        if side > min(width, height):
            raise WsiError(
                f"{source.file_name}: a crop of {cfg.tiles_per_side} x {tile_um:g} µm tiles ({side} px) "
                f"does not fit into its {width} x {height} px; use fewer tiles per side"
            )
        rng = np.random.default_rng([cfg.seed, index])
        positions = np.stack(
            [
                rng.integers(0, width - side + 1, CANDIDATE_POSITIONS),
                rng.integers(0, height - side + 1, CANDIDATE_POSITIONS),
            ],
            axis=1,
        )
        covered = tissue_fractions(_tissue(reader, mpp), (width, height), positions, side)
        chosen = positions[covered >= cfg.min_crop_tissue][: cfg.n_per_class]
        if len(chosen) < cfg.n_per_class:
            raise WsiError(
                f"{source.file_name}: only {len(chosen)} of {CANDIDATE_POSITIONS} random {side} px crops are at "
                f"least {cfg.min_crop_tissue:g} tissue, {cfg.n_per_class} needed; lower min_crop_tissue "
                "or tiles_per_side"
            )
        turns = rng.integers(0, 4, cfg.n_per_class)
        mirrored = rng.random(cfg.n_per_class) < 0.5
        for k, (x, y) in enumerate(chosen.tolist()):
            slide_id = f"{source.slide_prefix}-{k + 1:02d}"
            crops.append(
                Crop(
                    slide_id=slide_id,
                    label=source.label,
                    patient_id=f"patient-{slide_id}",
                    source=source.file_name,
                    x_level0=int(x),
                    y_level0=int(y),
                    side_level0_px=int(side),
                    mpp=float(mpp),
                    mpp_source=mpp_source,
                    quarter_turns=int(turns[k]),
                    mirrored=bool(mirrored[k]),
                )
            )
    return crops


def _tissue(reader: SlideReader, mpp: float) -> np.ndarray:
    thumbnail = reader.thumbnail(PLANNING_THUMBNAIL_PX)
    return tissue_mask(thumbnail, "otsu", mpp * reader.level0_px[0] / thumbnail.shape[1])


def write_crop(reader: SlideReader, crop: Crop, path: Path) -> None:
    """Cut, turn and write one demo slide; complete or absent (atomic), with its mpp in the file."""
    side = crop.side_level0_px
    pixels = reader.read_region(crop.x_level0, crop.y_level0, 0, side, side)
    pixels = np.rot90(pixels, crop.quarter_turns)
    if crop.mirrored:
        pixels = pixels[:, ::-1]
    with atomic_path(path) as tmp:
        write_slide(tmp, np.ascontiguousarray(pixels), mpp=crop.mpp, layout="levels", downsamples=(1, 2, 4))


def cohort_csv(crops: list[Crop]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([f.name for f in fields(Crop)])
    writer.writerows(astuple(crop) for crop in crops)
    return buffer.getvalue()


def labels_text(crops: list[Crop]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["slide_id", "label", "patient_id"])
    writer.writerows((crop.slide_id, crop.label, crop.patient_id) for crop in crops)
    return buffer.getvalue()
