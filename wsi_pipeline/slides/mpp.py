"""The slide's resolution (µm per level-0 pixel), which fixes the physical size of every tile.

Order (docs/ARCHITECTURE.md, "Tile store"; README, `wsi tile`): the scanner's metadata, else the objective
power (10 µm/px at 1x, so 0.5 at 20x), else the user's `--mpp` as a fallback; with `--mpp-override` the
user's value wins over the file's. A wrong mpp silently changes the tile scale, so when none is known we
refuse rather than guess, and a value outside [0.05, 20] µm/px (from any source) is refused before any
tile is read: typing an objective power (40) where µm/px belongs would otherwise read hundreds of
thousands of tiles a few pixels wide.
"""

from pathlib import Path

from wsi_pipeline.errors import SlideError
from wsi_pipeline.resolution import MppSource
from wsi_pipeline.slides.reader import SlideReader

MICRONS_PER_PX_AT_1X = 10.0
# Scanners run from about 0.1 µm/px (100x oil) to a few µm/px (low-power overviews).
PLAUSIBLE_MPP = (0.05, 20.0)
# A `--mpp` further than this (relative) from the file's own resolution is probably a mistake.
MPP_DISAGREEMENT = 0.25
SOURCE_NAMES: dict[str, str] = {
    "metadata": "from the file's metadata",
    "objective-power": "from the file's objective power",
    "fallback": "from --mpp",
    "mpp-override": "from --mpp with --mpp-override",
}


def resolve_mpp(
    reader: SlideReader, mpp_fallback: float | None, *, override: bool = False
) -> tuple[float, MppSource]:
    """µm per level-0 pixel and where it came from; a one-line `SlideError` when unknown or implausible."""
    mpp, source = _find_mpp(reader, mpp_fallback, override)
    check_plausible_mpp(reader.path, mpp, source)
    return mpp, source


def _find_mpp(reader: SlideReader, mpp_fallback: float | None, override: bool) -> tuple[float, MppSource]:
    if mpp_fallback is not None and mpp_fallback <= 0:
        raise SlideError(f"{reader.path}: --mpp must be positive, got {mpp_fallback}")
    if override and mpp_fallback is not None:
        return float(mpp_fallback), "mpp-override"
    recorded = file_mpp(reader)
    if recorded is not None:
        return recorded
    if mpp_fallback is not None:
        return float(mpp_fallback), "fallback"
    raise SlideError(
        f"{reader.path.name}: no resolution in the file (neither mpp nor objective power); "
        "pass --mpp <µm per level-0 pixel>"
    )


def file_mpp(reader: SlideReader) -> tuple[float, MppSource] | None:
    """The resolution the file itself records, if any."""
    if reader.mpp_from_metadata is not None:
        return reader.mpp_from_metadata, "metadata"
    if reader.objective_power is not None:
        return MICRONS_PER_PX_AT_1X / reader.objective_power, "objective-power"
    return None


def check_plausible_mpp(path: Path, mpp: float, source: str) -> None:
    """Refuse a resolution no scanner has, naming the likely mistake (an objective power typed as µm/px)."""
    low, high = PLAUSIBLE_MPP
    if low <= mpp <= high:
        return
    hint = (
        f"is {mpp:g} an objective power? At {mpp:g}x a scan has about {MICRONS_PER_PX_AT_1X / mpp:.2g} µm/px"
        if mpp > high
        else "is it in mm or nm rather than µm per pixel?"
    )
    raise SlideError(
        f"{path.name}: {mpp:g} µm/px ({SOURCE_NAMES.get(source, source)}) is not a plausible resolution "
        f"(expected {low:g}-{high:g} µm per level-0 pixel); {hint}"
    )


def mpp_disagreement(reader: SlideReader, mpp_given: float | None, override: bool) -> str:
    """A warning when `--mpp` contradicts the file's own resolution by more than `MPP_DISAGREEMENT`."""
    recorded = file_mpp(reader)
    if mpp_given is None or recorded is None:
        return ""
    mpp, source = recorded
    if abs(mpp_given - mpp) <= MPP_DISAGREEMENT * mpp:
        return ""
    used = (
        f"--mpp {mpp_given:g} is used (--mpp-override)"
        if override
        else f"the file's value is used; add --mpp-override to use --mpp {mpp_given:g}"
    )
    return f"--mpp {mpp_given:g} contradicts the {mpp:.4g} µm/px {SOURCE_NAMES[source]}: {used}"
