"""The slide's resolution (µm per level-0 pixel), which fixes the physical size of every tile.

Order (DESIGN §4): the scanner's metadata, else the objective power (10 µm/px at 1x, so 0.5 at 20x), else
the user's `--mpp`. A wrong mpp silently changes the tile scale, so when none is known we refuse rather than
guess.
"""

from wsi_pipeline.errors import SlideError
from wsi_pipeline.slides.reader import SlideReader
from wsi_pipeline.stores.tile_store import MppSource

MICRONS_PER_PX_AT_1X = 10.0


def resolve_mpp(reader: SlideReader, mpp_fallback: float | None) -> tuple[float, MppSource]:
    if reader.mpp_from_metadata is not None:
        return reader.mpp_from_metadata, "metadata"
    if reader.objective_power is not None:
        return MICRONS_PER_PX_AT_1X / reader.objective_power, "objective-power"
    if mpp_fallback is not None:
        if mpp_fallback <= 0:
            raise SlideError(f"{reader.path}: --mpp must be positive, got {mpp_fallback}")
        return float(mpp_fallback), "override"
    raise SlideError(
        f"{reader.path.name}: no resolution in the file (neither mpp nor objective power); "
        "pass --mpp <µm per level-0 pixel>"
    )
