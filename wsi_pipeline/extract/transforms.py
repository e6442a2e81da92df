"""From an RGB uint8 tile to the normalised tensor an encoder expects, in two halves.

`prepare` (per tile, in the DataLoader workers) stain-normalises when asked, resizes to the model's input
size only when it has one that differs from the store's tile_px, and keeps uint8: a batch crosses process
boundaries, pinned memory and PCIe at a quarter of the float32 size. `normalize` (per batch, on the model's device) scales and standardises in one pass and returns
channels_last NCHW, the memory format the encoder runs in. `__call__` composes the two for a single tile.
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from wsi_pipeline.slides.reader import resize_tile

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TileTransform:
    """[Stain-normalise,] resize to `input_px` (only if needed) [or to `resize_px`, then centre-crop
    `input_px`], then (x / 255 - mean) / std per channel.

    `input_px=None` is for fully convolutional encoders: they take tiles at the store's `tile_px`, whose
    pixel size (`tile_um / tile_px`) the user chose when tiling; upsampling smaller tiles would add no
    information and cost compute. Models with a fixed input size (ViTs) give theirs. `bilinear` is the
    stages' shared resize (`resize_tile`: box reduction, then antialiased bilinear); `bicubic` is PIL's
    antialiased bicubic, for models whose card resizes so.
    A plain class, not a lambda, so DataLoader workers can receive it under any start method.
    """

    def __init__(
        self,
        input_px: int | None,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        interpolation: str = "bilinear",
        resize_px: int | None = None,
        stain: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.input_px = int(input_px) if input_px is not None else None
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation
        self.resize_px = resize_px
        self.stain = stain

    def prepare(self, tile: np.ndarray) -> np.ndarray:
        """RGB uint8 (h, w, 3) -> writable RGB uint8 (input_px, input_px, 3), or as is without input_px."""
        if self.stain is not None:
            tile = self.stain(tile)
        side = self.resize_px or self.input_px
        if side is not None and tile.shape[:2] != (side, side):
            tile = np.asarray(self._resize(Image.fromarray(tile), side))
        if self.resize_px is not None and self.input_px is not None and side != self.input_px:
            top = (side - self.input_px) // 2
            tile = tile[top : top + self.input_px, top : top + self.input_px]
        return tile if tile.flags.writeable and tile.flags.c_contiguous else np.array(tile)  # torch may write

    def _resize(self, image: Image.Image, side: int) -> Image.Image:
        if self.interpolation == "bicubic":
            return image.resize((side, side), Image.Resampling.BICUBIC)
        return resize_tile(image, side)

    def normalize(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) on any device -> float32 (B, 3, H, W), channels_last in memory."""
        mean = torch.tensor(self.mean, device=tiles.device).view(1, 3, 1, 1) * 255.0
        inverse_std = 1.0 / (torch.tensor(self.std, device=tiles.device).view(1, 3, 1, 1) * 255.0)
        images = tiles.permute(0, 3, 1, 2).float()  # a permuted NHWC tensor is NCHW channels_last
        return images.sub_(mean).mul_(inverse_std)

    def __call__(self, tile: np.ndarray) -> torch.Tensor:
        """One RGB uint8 tile -> its normalised float32 (3, H, W) tensor."""
        return self.normalize(torch.from_numpy(self.prepare(tile))[None])[0]
