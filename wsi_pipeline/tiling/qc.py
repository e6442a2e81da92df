"""The QC image `<slide_id>.qc.png`: what the tiler did to one slide, checkable at a glance.

On the thumbnail: the tissue-mask outline, kept tiles outlined, rejected tiles shaded by the filter that
rejected them (grid tiles with some, but too little, tissue; white; blurry). A legend strip underneath
names the slide, the geometry and the counts. Colours are the Okabe-Ito palette, readable with the common
colour-vision deficiencies.
"""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KEPT = (0, 158, 115)
MASK_OUTLINE = (230, 159, 0)
SHADE_ALPHA = 120
REJECT_COLOURS = {
    "tissue": (153, 153, 153),
    "white": (86, 180, 233),
    "blur": (213, 94, 0),
}
REJECT_LABELS = {"tissue": "below min tissue", "white": "white", "blur": "blurry"}


@dataclass(frozen=True)
class QcTiles:
    """Tiles to draw, in level-0 pixels; `rejected` maps a filter to the tiles it removed."""

    level0_px: tuple[int, int]
    tile_px_level0: int
    kept: np.ndarray
    rejected: dict[str, np.ndarray]
    counts: dict[str, int]  # per filter, including tiles not drawn (tissue-free grid tiles)


def render_qc_png(thumbnail: np.ndarray, mask: np.ndarray, tiles: QcTiles, title: str) -> bytes:
    base = Image.fromarray(thumbnail).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    scale_x = base.width / tiles.level0_px[0]
    scale_y = base.height / tiles.level0_px[1]

    def box(x: int, y: int) -> tuple[float, float, float, float]:
        return (
            x * scale_x,
            y * scale_y,
            (x + tiles.tile_px_level0) * scale_x - 1,
            (y + tiles.tile_px_level0) * scale_y - 1,
        )

    for reason, coords in tiles.rejected.items():
        fill = (*REJECT_COLOURS[reason], SHADE_ALPHA // 2 if reason == "tissue" else SHADE_ALPHA)
        for x, y in coords:
            draw.rectangle(box(x, y), fill=fill)
    outline = np.zeros((*mask.shape, 4), dtype=np.uint8)
    outline[_boundary(mask)] = (*MASK_OUTLINE, 255)
    overlay = Image.alpha_composite(
        overlay, Image.fromarray(outline).resize(base.size, Image.Resampling.NEAREST)
    )
    draw = ImageDraw.Draw(overlay)
    line_px = 2 if tiles.tile_px_level0 * scale_x >= 16 else 1
    for x, y in tiles.kept:
        draw.rectangle(box(x, y), outline=(*KEPT, 255), width=line_px)
    image = Image.alpha_composite(base, overlay).convert("RGB")
    return _png_bytes(_with_legend(image, tiles, title))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _with_legend(image: Image.Image, tiles: QcTiles, title: str) -> Image.Image:
    font_px = max(12, image.width // 60)
    font = ImageFont.load_default(size=font_px)
    row_px = int(font_px * 1.6)
    canvas = Image.new("RGB", (image.width, image.height + 2 * row_px + font_px // 2), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    top = image.height + font_px // 4
    draw.text((font_px // 2, top), title, fill="black", font=font)
    entries = [(KEPT, f"kept {len(tiles.kept)}", False), (MASK_OUTLINE, "tissue mask", False)]
    entries += [
        (REJECT_COLOURS[r], f"{REJECT_LABELS[r]} {tiles.counts.get(r, 0)}", True) for r in REJECT_COLOURS
    ]
    x, y = font_px // 2, top + row_px
    for colour, label, filled in entries:
        swatch = (x, y + 2, x + font_px, y + font_px + 2)
        if filled:
            draw.rectangle(swatch, fill=colour)
        else:
            draw.rectangle(swatch, outline=colour, width=2)
        x += font_px + font_px // 3
        draw.text((x, y), label, fill="black", font=font)
        x += int(draw.textlength(label, font=font)) + font_px
    return canvas


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)  # zlib's default (6) is slower and barely smaller
    return buffer.getvalue()
