"""Slide identifiers, the join key between stages.

A slide id is the slide's file name without its extension. It becomes an output file name, so it is
checked here once: no separators, no `.`/`..`, no control characters; nothing can write outside an output
folder through a crafted file name.
"""

from pathlib import Path

from wsi_pipeline.errors import WsiError

# Multi-part extensions first so "x.ome.tiff" becomes "x", not "x.ome".
SLIDE_EXTENSIONS: tuple[str, ...] = (
    ".ome.tiff", ".ome.tif", ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs",
    ".svslide", ".bif", ".czi", ".dcm", ".isyntax", ".qptiff", ".jp2",
)


def is_slide_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(SLIDE_EXTENSIONS)


def slide_id_for(path: Path) -> str:
    """The slide id of a slide file: its name without the (possibly multi-part) slide extension."""
    name = path.name
    lowered = name.lower()
    for ext in SLIDE_EXTENSIONS:
        if lowered.endswith(ext):
            return check_slide_id(name[: -len(ext)])
    return check_slide_id(path.stem)


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
    return slide_id
