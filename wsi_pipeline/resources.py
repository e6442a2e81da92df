"""Data files the library reads at run time: the YAML presets in `configs/` and the demo's two real slides.

In a source checkout (and an editable install) they sit at the repository root, in `configs/` and
`tests/data/slides/`. A wheel has no repository around it, so the build copies them into the package as
`wsi_pipeline/_resources/configs/` and `wsi_pipeline/_resources/demo_slides/` (pyproject.toml,
`[tool.hatch.build.targets.wheel.force-include]`), with the slides' provenance and licence note
(`SOURCES.md`). Every lookup of these files goes through this module, installed copy first.
"""

from pathlib import Path

from wsi_pipeline.errors import WsiError

PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED_DIR = PACKAGE_DIR / "_resources"
SOURCE_ROOT = PACKAGE_DIR.parent

CMU_SLIDE = "CMU-1-Small-Region.svs"
TCGA_SLIDE = "tcga-cr-7395-01a-01-ts1.svs"
DEMO_SLIDES = (CMU_SLIDE, TCGA_SLIDE)


def configs_dir() -> Path:
    """The folder of YAML presets (`tcga_nsclc.yaml`, `extractor_spec.yaml`); stage defaults live in the
    config models, not here.

    Never raises: callers check for the file they want.
    """
    for candidate in (INSTALLED_DIR / "configs", SOURCE_ROOT / "configs"):
        if candidate.is_dir():
            return candidate
    return INSTALLED_DIR / "configs"


def demo_slides_dir() -> Path:
    """The folder holding both demo slides (`DEMO_SLIDES`); a one-line error when neither place has them."""
    candidates = (INSTALLED_DIR / "demo_slides", SOURCE_ROOT / "tests" / "data" / "slides")
    for candidate in candidates:
        if all((candidate / name).is_file() for name in DEMO_SLIDES):
            return candidate
    raise WsiError(
        f"the demo slides ({', '.join(DEMO_SLIDES)}) are in neither {candidates[0]} (installed package) nor "
        f"{candidates[1]} (source checkout); reinstall the wsi package or run from a full checkout"
    )
