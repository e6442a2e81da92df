"""Slide identifiers, the join key between stages.

A slide id is the slide's file name without its extension. It becomes an output file name, so it is
checked here once: no separators, no `.`/`..`, no control characters, no leading `.` (hidden names are the
stages' temporaries); nothing can write outside an output folder through a crafted file name.
"""

from pathlib import Path

from wsi_pipeline.errors import WsiError

# Multi-part extensions first so "x.ome.tiff" becomes "x", not "x.ome".
SLIDE_EXTENSIONS: tuple[str, ...] = (
    ".ome.tiff",
    ".ome.tif",
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".czi",
    ".dcm",
    ".isyntax",
    ".qptiff",
    ".jp2",
)


# File names are limited to 255 bytes; the longest name made from an id, a heatmap strip's temporary
# `.<id>.topk.png.tmp-xxxxxxxx`, adds 23.
MAX_SLIDE_ID_BYTES = 200


def is_slide_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(SLIDE_EXTENSIONS)


def slide_id_for(path: Path) -> str:
    """The slide id of a slide file: its name without the (possibly multi-part) slide extension."""
    name = path.name
    lowered = name.lower()
    stem = next((name[: -len(ext)] for ext in SLIDE_EXTENSIONS if lowered.endswith(ext)), path.stem)
    try:
        return check_slide_id(stem)
    except WsiError as exc:
        raise WsiError(f"{path}: {exc}") from None


def check_slide_id(slide_id: str) -> str:
    """Return `slide_id` if it is safe to use as a file name inside an output folder, else raise."""
    if (
        not slide_id
        or slide_id in {".", ".."}
        or "/" in slide_id
        or "\\" in slide_id
        or any(ord(ch) < 32 for ch in slide_id)
    ):
        raise WsiError(f"unsafe slide id {slide_id!r}: it must be a plain file name")
    if len(slide_id.encode("utf-8", "surrogateescape")) > MAX_SLIDE_ID_BYTES:
        raise WsiError(
            f"slide id of {len(slide_id.encode('utf-8', 'surrogateescape'))} bytes is too long: outputs are "
            f"named after it and file names are limited to 255 bytes; rename the slide to at most "
            f"{MAX_SLIDE_ID_BYTES}"
        )
    if slide_id.startswith("."):
        # Hidden names are the stages' temporaries: such an output would be ignored, or even removed as
        # an interrupted run's leftover, by the next run.
        raise WsiError(f"unsafe slide id {slide_id!r}: it must not start with '.' (outputs would be hidden)")
    return slide_id
