"""The QC image `<slide_id>.qc.png`: what the tiler did to one slide, checkable at a glance.

On the thumbnail: the tissue-mask outline (a yellow line inside a black one, so it shows on pale and dark
stains alike), marker ink cross-hatched in blue, the strips outside the tile grid hatched in
grey, kept tiles outlined, rejected tiles shaded by the filter that rejected them (grid tiles with some,
but too little, tissue; under ink; white; blurry). A legend strip underneath names the slide, the
geometry, the tissue recall and the counts. Colours are the Okabe-Ito palette, readable with the common
colour-vision deficiencies. Text uses matplotlib's bundled DejaVu Sans, which has a µ (PIL's own font
does not).
"""

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KEPT = (0, 158, 115)
MASK_OUTLINE = (240, 228, 66)
MASK_HALO = (0, 0, 0)
INK = (0, 114, 178)
OUTSIDE_GRID = (90, 90, 90)
SHADE_ALPHA = 120
REJECT_COLOURS = {
    "tissue": (153, 153, 153),
    "ink": INK,
    "white": (86, 180, 233),
    "blur": (213, 94, 0),
}
REJECT_LABELS = {"tissue": "below min tissue", "ink": "under ink", "white": "white", "blur": "blurry"}
HATCH_PX = 6  # period of the hatching, in QC pixels


@dataclass(frozen=True)
class QcTiles:
    """Tiles to draw, in level-0 pixels; `rejected` maps a filter to the tiles it removed."""

    level0_px: tuple[int, int]
    tile_px_level0: int
    grid: np.ndarray
    kept: np.ndarray
    rejected: dict[str, np.ndarray]
    counts: dict[str, int]  # per filter, including tiles not drawn (tissue-free grid tiles)


def render_qc_png(
    thumbnail: np.ndarray, mask: np.ndarray, ink: np.ndarray, tiles: QcTiles, title: str
) -> bytes:
    base = Image.fromarray(thumbnail).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for reason, coords in tiles.rejected.items():
        fill = (*REJECT_COLOURS[reason], SHADE_ALPHA // 2 if reason == "tissue" else SHADE_ALPHA)
        for x, y in coords:
            draw.rectangle(_box(tiles, base.size, x, y), fill=fill)
    layers = np.zeros((base.height, base.width, 4), dtype=np.uint8)
    hatch = _hatch(base.size)
    layers[hatch & ~_grid_cover(tiles, base.size)] = (*OUTSIDE_GRID, 200)
    layers[_resized(ink, base.size) & (hatch | _hatch(base.size, flip=True))] = (*INK, 255)
    tissue = _resized(mask, base.size)
    layers[_grow(_boundary(tissue))] = (*MASK_HALO, 255)
    layers[_boundary(tissue)] = (*MASK_OUTLINE, 255)
    overlay = Image.alpha_composite(overlay, Image.fromarray(layers))
    draw = ImageDraw.Draw(overlay)
    line_px = 2 if tiles.tile_px_level0 * base.width / tiles.level0_px[0] >= 16 else 1
    for x, y in tiles.kept:
        draw.rectangle(_box(tiles, base.size, x, y), outline=(*KEPT, 255), width=line_px)
    image = Image.alpha_composite(base, overlay).convert("RGB")
    return _png_bytes(_with_legend(image, tiles, title))


def _box(tiles: QcTiles, size: tuple[int, int], x: int, y: int) -> tuple[float, float, float, float]:
    scale_x, scale_y = size[0] / tiles.level0_px[0], size[1] / tiles.level0_px[1]
    side = tiles.tile_px_level0
    return (x * scale_x, y * scale_y, (x + side) * scale_x - 1, (y + side) * scale_y - 1)


def _grid_cover(tiles: QcTiles, size: tuple[int, int]) -> np.ndarray:
    """QC pixels inside some grid tile."""
    covered = np.zeros((size[1], size[0]), dtype=bool)
    for x, y in tiles.grid.tolist():
        x0, y0, x1, y1 = (round(v) for v in _box(tiles, size, x, y))
        covered[y0 : y1 + 1, x0 : x1 + 1] = True
    return covered


def _hatch(size: tuple[int, int], flip: bool = False) -> np.ndarray:
    cols, rows = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
    diagonal = (cols - rows) if flip else (cols + rows)
    return diagonal % HATCH_PX == 0


def _resized(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == (size[1], size[0]):
        return mask
    return np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _grow(mask: np.ndarray) -> np.ndarray:
    """`mask` widened by one pixel in each direction (the outline's dark halo)."""
    padded = np.pad(mask, 1, constant_values=False)
    grown = mask.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            grown |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return grown


@lru_cache(maxsize=4)
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    import matplotlib  # heavy: matplotlib

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(dejavu), size_px)


def _with_legend(image: Image.Image, tiles: QcTiles, title: str) -> Image.Image:
    font_px = max(12, image.width // 60)
    font = _font(font_px)
    row_px = int(font_px * 1.6)
    entries = [(KEPT, f"kept {len(tiles.kept)}", "outline"), (MASK_OUTLINE, "tissue outline", "outline")]
    entries += [(INK, "marker ink", "hatch"), (OUTSIDE_GRID, "outside the grid", "hatch")]
    entries += [
        (REJECT_COLOURS[r], f"{REJECT_LABELS[r]} {tiles.counts.get(r, 0)}", "fill") for r in REJECT_COLOURS
    ]
    rows = _legend_rows(entries, font, font_px, image.width)
    title_lines = _wrapped(title, font, image.width - font_px)
    height = image.height + (len(title_lines) + len(rows)) * row_px + font_px // 2
    canvas = Image.new("RGB", (image.width, height), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    top = image.height + font_px // 4
    for index, line in enumerate(title_lines):
        draw.text((font_px // 2, top + index * row_px), line, fill="black", font=font)
    top += (len(title_lines) - 1) * row_px
    for index, row in enumerate(rows):
        x, y = font_px // 2, top + (index + 1) * row_px
        for colour, label, style in row:
            swatch = (x, y + 2, x + font_px, y + font_px + 2)
            if style == "fill":
                draw.rectangle(swatch, fill=colour)
            elif style == "hatch":
                draw.rectangle(swatch, outline=colour, width=1)
                draw.line((swatch[0], swatch[3], swatch[2], swatch[1]), fill=colour, width=2)
            else:
                draw.rectangle(swatch, outline=colour, width=2)
            x += font_px + font_px // 3
            draw.text((x, y), label, fill="black", font=font)
            x += int(draw.textlength(label, font=font)) + font_px
    return canvas


def _wrapped(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """`text` in lines that fit `width`, broken between words."""
    lines = [""]
    for word in text.split(" "):
        candidate = f"{lines[-1]} {word}".strip()
        if lines[-1] and font.getlength(candidate) > width:
            lines.append(word)
        else:
            lines[-1] = candidate
    return lines


def _legend_rows(
    entries: list[tuple[tuple[int, int, int], str, str]],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    font_px: int,
    width: int,
) -> list[list[tuple[tuple[int, int, int], str, str]]]:
    """Legend entries wrapped into rows that fit `width`."""
    rows: list[list[tuple[tuple[int, int, int], str, str]]] = [[]]
    used = font_px // 2
    for entry in entries:
        needed = font_px + font_px // 3 + int(font.getlength(entry[1])) + font_px
        if rows[-1] and used + needed > width:
            rows.append([])
            used = font_px // 2
        rows[-1].append(entry)
        used += needed
    return rows


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)  # zlib's default (6) is slower and barely smaller
    return buffer.getvalue()
