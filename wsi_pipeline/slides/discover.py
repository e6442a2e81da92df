"""Turning command-line arguments (slide files and folders) into the list of slides a stage will process.

Argument mistakes (a path that does not exist, a folder without slides, two slides that would write the
same output) are found here, before any work starts, because they are typos rather than bad slides.
Files named explicitly are taken whatever their extension: if one is not a slide, the stage reports it as
failed with the reason, which is more useful than silently dropping it. Folders yield slide files and
plain images (PNG, JPEG: tiatoolbox reads them as one-level slides; they record no resolution, so they
need --mpp), the same files a user could name one by one, except the stages' own QC images.
"""

from collections.abc import Sequence
from pathlib import Path

from wsi_pipeline.errors import WsiError
from wsi_pipeline.ids import SLIDE_EXTENSIONS, is_slide_file, slide_id_for

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
# Images the stages write themselves (`wsi tile`'s QC images), never slides.
OUTPUT_IMAGE_SUFFIXES: tuple[str, ...] = (".qc.png",)


def find_slides(arguments: Sequence[Path]) -> list[Path]:
    """Slide files named by `arguments` (files, or folders searched recursively), in a stable order."""
    if not arguments:
        raise WsiError("no slides given: pass slide files or folders of slides")
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir() and not path.name.lower().endswith(".mrxs"):
            in_folder = sorted(
                p for p in path.rglob("*") if _is_input_file(p) and not _in_hidden_folder(p, path)
            )
            if not in_folder:
                extensions = ", ".join(SLIDE_EXTENSIONS + IMAGE_EXTENSIONS)
                raise WsiError(f"{path}: no slide files in this folder or below (looked for {extensions})")
            found.extend(in_folder)
        elif path.exists():
            found.append(path)
        else:
            raise WsiError(f"{path}: no such file or folder")
    unique = _unique_files(found)
    _check_unique_ids(unique)
    return unique


def _is_input_file(path: Path) -> bool:
    """A slide file, or a plain image that is not one of the stages' outputs."""
    if is_slide_file(path):
        return True
    name = path.name.lower()
    return (
        path.is_file()
        and not name.startswith(".")
        and name.endswith(IMAGE_EXTENSIONS)
        and not name.endswith(OUTPUT_IMAGE_SUFFIXES)
    )


def _in_hidden_folder(path: Path, root: Path) -> bool:
    """Hidden folders hold temporaries and tool caches, never slides the user meant."""
    return any(part.startswith(".") for part in path.relative_to(root).parts[:-1])


def _unique_files(paths: list[Path]) -> list[Path]:
    """Drop repeats (a file named and also found in its folder) while keeping the first spelling."""
    seen: set[Path] = set()
    unique = []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _check_unique_ids(paths: list[Path]) -> None:
    owners: dict[str, Path] = {}
    for path in paths:
        try:
            slide_id = slide_id_for(path)
        except WsiError:
            continue  # a name that cannot name outputs: the stage reports that slide, the others go on
        if slide_id in owners:
            raise WsiError(
                f"{owners[slide_id]} and {path} have the same slide id '{slide_id}', so their outputs would "
                "collide; rename one or process them into different --out folders"
            )
        owners[slide_id] = path
