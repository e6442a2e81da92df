"""Slide readers behind one small interface, so stages never care which library decodes a file.

OpenSlide is tried first (fast, the common scanner formats); what it cannot open goes to tiatoolbox's
`WSIReader` (OME-TIFF, plain images, formats through other back-ends). Every read names its level and
takes level-0 pixel coordinates, the unit stored in tile stores and feature bags.
"""

import importlib
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from wsi_pipeline.errors import SlideError

# Formats that tiatoolbox would also hand to OpenSlide (or not read at all): when OpenSlide rejects one of
# these, falling back only costs the seconds of importing tiatoolbox and ends in the same verdict.
OPENSLIDE_ONLY_EXTENSIONS: tuple[str, ...] = (
    ".svs",
    ".ndpi",
    ".mrxs",
    ".vms",
    ".vmu",
    ".scn",
    ".svslide",
    ".bif",
)

# Tiles are shrunk by an integer box reduction first and an antialiased bilinear resize for the rest
# (PIL's `reducing_gap`): about half the time of a one-step bilinear or bicubic resize of a 513 px read,
# with no aliasing, which matters when a tile filter runs on every tile of a slide.
RESIZE_REDUCING_GAP = 1.0


def resize_tile(image: Image.Image, tile_px: int) -> Image.Image:
    """Resize a square read to `tile_px`: the one resize the stages share, so filters see model inputs."""
    if image.size == (tile_px, tile_px):
        return image
    return image.resize((tile_px, tile_px), Image.Resampling.BILINEAR, reducing_gap=RESIZE_REDUCING_GAP)


class SlideReader(ABC):
    """An open slide. Not safe to share across processes: open one per worker."""

    path: Path
    level_dimensions: tuple[tuple[int, int], ...]  # (width, height) in pixels, per level
    level_downsamples: tuple[float, ...]
    mpp_from_metadata: float | None  # µm per level-0 pixel as written by the scanner
    objective_power: float | None

    @property
    def level0_px(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @abstractmethod
    def read_region(
        self, x_level0: int, y_level0: int, level: int, width_px: int, height_px: int
    ) -> np.ndarray:
        """RGB uint8 (height_px, width_px, 3) at `level`, top-left at level-0 (x, y); outside = white."""

    @abstractmethod
    def thumbnail(self, max_px: int) -> np.ndarray:
        """RGB uint8 image of the whole slide whose longer side is at most `max_px`."""

    def read_tile(self, x_level0: int, y_level0: int, level: int, read_px: int, tile_px: int) -> np.ndarray:
        """RGB uint8 (tile_px, tile_px, 3): a `read_px` square at `level`, resized with `resize_tile`."""
        region = self.read_region(x_level0, y_level0, level, read_px, read_px)
        if read_px == tile_px:
            return region
        return np.array(resize_tile(Image.fromarray(region), tile_px))

    def close(self) -> None:  # noqa: B027 - optional for readers without handles
        """Release the file handle."""

    def __enter__(self) -> "SlideReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level that is not coarser than `downsample` (so tiles are downsized, never upsized).

        A tolerance of 1% absorbs the rounding in stored downsamples (e.g. 8.02 for a nominal 8).
        """
        best = 0
        for level, level_downsample in enumerate(self.level_downsamples):
            if level_downsample <= downsample * 1.01 and level_downsample >= self.level_downsamples[best]:
                best = level
        return best


def _rgba_to_rgb_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite onto white: OpenSlide marks pixels outside the scanned area as transparent.

    Almost every region is fully opaque, and the blend costs more than the read itself, so it only runs
    when some pixel is not.
    """
    if rgba.shape[-1] == 3:
        return rgba
    if rgba[..., 3].min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _float_or_none(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


class OpenSlideReader(SlideReader):
    def __init__(self, path: Path) -> None:
        import openslide  # heavy: OpenSlide

        self.path = path
        self._slide = openslide.OpenSlide(str(path))
        props = self._slide.properties
        self.level_dimensions = tuple(tuple(map(int, d)) for d in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        mpp_x = _float_or_none(props.get("openslide.mpp-x"))
        mpp_y = _float_or_none(props.get("openslide.mpp-y"))
        self.mpp_from_metadata = mpp_x if mpp_x is not None else mpp_y
        self.objective_power = _float_or_none(props.get("openslide.objective-power"))

    def read_region(
        self, x_level0: int, y_level0: int, level: int, width_px: int, height_px: int
    ) -> np.ndarray:
        region = self._slide.read_region(
            (int(x_level0), int(y_level0)), int(level), (int(width_px), int(height_px))
        )
        return _rgba_to_rgb_on_white(np.asarray(region))

    def read_tile(self, x_level0: int, y_level0: int, level: int, read_px: int, tile_px: int) -> np.ndarray:
        # Stays in PIL from decode to resize: the hot loop of tiling and extraction.
        region = self._slide.read_region(
            (int(x_level0), int(y_level0)), int(level), (int(read_px), int(read_px))
        )
        if region.getchannel("A").getextrema()[0] == 255:
            rgb = region.convert("RGB")
        else:
            white = Image.new("RGBA", region.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, region).convert("RGB")
        return np.array(resize_tile(rgb, tile_px))  # a writable copy, like `read_region`'s

    def thumbnail(self, max_px: int) -> np.ndarray:
        return _rgba_to_rgb_on_white(np.asarray(self._slide.get_thumbnail((max_px, max_px)).convert("RGBA")))

    def close(self) -> None:
        self._slide.close()


class TiatoolboxReader(SlideReader):
    """Formats OpenSlide cannot read. tiatoolbox.wsicore imports in seconds, so it is imported only here."""

    def __init__(self, path: Path) -> None:
        WSIReader = import_tiatoolbox("tiatoolbox.wsicore.wsireader").WSIReader

        self.path = path
        self._reader = WSIReader.open(path)
        info = self._reader.info
        self.level_dimensions = tuple(tuple(map(int, d)) for d in info.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in info.level_downsamples)
        mpp = info.mpp
        self.mpp_from_metadata = _float_or_none(mpp[0]) if mpp is not None else None
        self.objective_power = _float_or_none(info.objective_power)

    def read_region(
        self, x_level0: int, y_level0: int, level: int, width_px: int, height_px: int
    ) -> np.ndarray:
        region = self._reader.read_rect(
            (int(x_level0), int(y_level0)),
            (int(width_px), int(height_px)),
            resolution=int(level),
            units="level",
            coord_space="baseline",
            pad_constant_values=255,
        )
        return np.ascontiguousarray(region[..., :3], dtype=np.uint8)

    def thumbnail(self, max_px: int) -> np.ndarray:
        width, height = self.level0_px
        downsample = max(width, height) / max_px
        level = self.best_level_for_downsample(downsample)
        level_w, level_h = self.level_dimensions[level]
        image = self.read_region(0, 0, level, level_w, level_h)
        from skimage.transform import resize  # heavy: scikit-image

        scale = max_px / max(width, height)
        shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        return (resize(image, shape, anti_aliasing=True, preserve_range=True)).round().astype(np.uint8)


def import_tiatoolbox(module: str) -> ModuleType:
    """A tiatoolbox module, imported so that tiatoolbox's log lines stay out of the user's terminal.

    Importing tiatoolbox gives the root logger handlers that print INFO to stdout (where `wsi tile` lists
    its QC images) and WARNING to stderr (through the progress display), and it warns "Raw data is None."
    and "Unknown scale" for every plain image, also when --mpp supplies the scale. Those handlers are
    removed again, and a filter on the root logger (which tiatoolbox logs to directly) drops its records
    below ERROR; errors still reach the user through the exception that names the slide.
    """
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    imported = importlib.import_module(module)
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    if _drop_tiatoolbox_notes not in root.filters:
        root.addFilter(_drop_tiatoolbox_notes)
    return imported


def _drop_tiatoolbox_notes(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or f"{os.sep}tiatoolbox{os.sep}" not in record.pathname


def open_slide(path: Path) -> SlideReader:
    """Open `path` with OpenSlide, else tiatoolbox; raise a one-line `SlideError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise SlideError(f"{path}: no such slide file")
    if path.is_dir() and not path.name.lower().endswith(".mrxs"):
        raise SlideError(f"{path}: is a folder, not a slide file")
    try:
        n_bytes = path.stat().st_size
    except OSError as exc:
        raise SlideError(f"{path}: cannot access ({exc.strerror})") from exc
    if n_bytes == 0:
        raise SlideError(f"{path}: empty file (0 bytes)")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise SlideError(f"{path}: cannot read ({exc.strerror})") from exc

    import openslide  # heavy: OpenSlide

    try:
        return OpenSlideReader(path)
    except openslide.OpenSlideUnsupportedFormatError:
        openslide_error = "format not recognised by OpenSlide"
        if path.name.lower().endswith(OPENSLIDE_ONLY_EXTENSIONS):
            raise SlideError(f"{path}: not a readable slide ({openslide_error})") from None
    except openslide.OpenSlideError as exc:
        raise SlideError(f"{path}: corrupt or unreadable slide ({exc})") from exc
    try:
        return TiatoolboxReader(path)
    except Exception as exc:  # tiatoolbox raises many types for unknown formats
        raise SlideError(f"{path}: not a readable slide ({openslide_error}; tiatoolbox: {exc})") from exc
