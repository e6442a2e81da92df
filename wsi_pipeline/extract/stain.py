"""Stain normalisation of tiles before encoding, with tiatoolbox's normalisers (no stain math here).

The target is fitted once, in the main process, from a reference image (`--stain-target`, default the
bundled `stain_target.png`); the fitted normaliser is plain numpy state, so it travels to the DataLoader
workers with the tile transform and is applied there, per tile, before any resize. Macenko, Vahadane and
Reinhard are deterministic for a given tile and target (no random initialisation), so a re-run gives the
same pixels. A tile the method cannot normalise (no stained pixels: white background, a pen mark) is
passed through unchanged rather than failing the slide; the same tile always takes the same path.

tiatoolbox is slow to import (about 20 s: its `tools` package imports registration and graph code), so
it is imported only when a method other than `none` is chosen.
"""

import hashlib
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from wsi_pipeline.errors import ConfigError

StainMethod = Literal["none", "macenko", "reinhard", "vahadane"]
BUNDLED_TARGET = Path(__file__).with_name("stain_target.png")
# Where the bundled target's pixels come from (also in features/README.md).
BUNDLED_TARGET_PROVENANCE = (
    "512 x 512 px read at level 0 (0.499 µm/px) at (1026, 1026) of tests/data/slides/"
    "CMU-1-Small-Region.svs (OpenSlide test data, CC0-1.0): H&E skin, nuclei, stroma and epithelium"
)


class StainNormalizer:
    """A fitted tiatoolbox normaliser, picklable, applied to RGB uint8 tiles."""

    def __init__(self, method: StainMethod, target: Path | None) -> None:
        self.method = method
        self.target_path = Path(target) if target is not None else BUNDLED_TARGET
        try:
            data = self.target_path.read_bytes()
            with Image.open(self.target_path) as image:
                pixels = np.array(image.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--stain-target {self.target_path}: not a readable image ({exc})") from exc
        self.target_sha256 = hashlib.sha256(data).hexdigest()
        self._normalizer = _fitted(method, pixels, self.target_path)

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        """RGB uint8 (h, w, 3) -> the same tile in the target's stain (unchanged if it cannot be)."""
        try:
            with np.errstate(all="ignore"):
                out = self._normalizer.transform(np.array(tile, dtype=np.uint8))
        except (ValueError, ZeroDivisionError, np.linalg.LinAlgError, IndexError):
            return tile
        out = np.asarray(out)
        return out.astype(np.uint8) if out.dtype != np.uint8 else out

    def attrs(self) -> dict[str, Any]:
        """What a bag records about it (and what makes two bags' pixels the same)."""
        target = "bundled:stain_target.png" if self.target_path == BUNDLED_TARGET else str(self.target_path)
        return {"stain_norm": self.method, "stain_target": target, "stain_target_sha256": self.target_sha256}


def _fitted(method: str, pixels: np.ndarray, path: Path) -> Any:
    from tiatoolbox.tools.stainnorm import get_normalizer  # heavy: tiatoolbox

    # tiatoolbox warns on every Vahadane construction; the README says what it warns about.
    logging.getLogger("tiatoolbox").setLevel(logging.ERROR)
    normalizer = get_normalizer(method)
    try:
        with np.errstate(all="ignore"):
            normalizer.fit(pixels)
    except (ValueError, ZeroDivisionError, np.linalg.LinAlgError, IndexError) as exc:
        raise ConfigError(
            f"--stain-target {path}: cannot fit {method} to it ({type(exc).__name__}); "
            "choose an image with stained tissue"
        ) from exc
    return normalizer


def stain_normalizer(method: StainMethod, target: Path | None) -> StainNormalizer | None:
    """None for `none` (and a target given without a method is a mistake worth one line)."""
    if method == "none":
        if target is not None:
            raise ConfigError("--stain-target needs --stain-norm macenko, reinhard or vahadane")
        return None
    return StainNormalizer(method, target)
