"""Tissue and marker-ink masks on a slide thumbnail: which parts of the glass carry tissue.

`otsu` thresholds the saturation channel (stained tissue is coloured, glass and background are grey or
white), as CLAM does, after smoothing it over a few µm so that loose stroma counts as tissue rather than
as a lace of fibres and gaps. Otsu always splits the image in two; on a field that is tissue edge to edge
the two classes are pale stroma and dense epithelium, and the pale half would be lost. So when the class
below Otsu's threshold is itself coloured (median saturation above `GLASS_MAX_SATURATION`: glass is not),
the threshold falls back to the fixed `ALL_TISSUE_SATURATION`, which separates glass from even pale H&E,
as STAMP's fixed brightness cut-off does. `tiatoolbox` runs tiatoolbox's MorphologicalMasker (Otsu on grey,
small regions removed, dilation scaled to the thumbnail's µm/px); its package takes tens of seconds to
import, so it is imported only when asked for.

Marker ink (`ink_mask`) is found by colour, whatever tissue method is used, and removed from the tissue
mask before tiles are chosen. The rule follows the published pen-mark filters (deephistopath and
histolab's `filter_green_pen`/`filter_blue_pen`/`filter_red_pen`), restated in HSV on the smoothed
thumbnail; H&E never takes these colours (hematoxylin is blue-purple at hue 240-300°, eosin pink at
300-345°, both below about 0.55 saturation):
- green ink: hue 70-190° with saturation >= 0.25;
- blue ink: hue 190-250° with saturation >= 0.55;
- red ink: hue >= 345° or <= 15° with saturation >= 0.6;
- black ink: value (brightness) <= 0.25, darker than any stained tissue once smoothed over a cell's width.
Specks smaller than `INK_MIN_UM` across are ignored, and the rest is widened by `INK_MARGIN_UM`, because
a stroke's faint edge is still ink.
"""

from collections.abc import Callable

import numpy as np
from PIL import Image

from wsi_pipeline.registry import Registry
from wsi_pipeline.slides.reader import import_tiatoolbox
from wsi_pipeline.tiling.config import TissueMethod

# Otsu always splits an image in two, even a blank one: on an empty slide it would call half the glass
# tissue. Glass and white background stay below this saturation (0-1 scale), while even pale H&E is above
# about 0.1, so the threshold is never allowed below it.
MIN_TISSUE_SATURATION = 0.05
# Glass measured on the bundled slides has a median smoothed saturation of 0.002-0.01; a lower Otsu class
# with a median above this is tissue, not glass.
GLASS_MAX_SATURATION = 0.04
# The threshold used when Otsu split tissue from tissue: above glass, below pale stroma (0.15-0.3).
ALL_TISSUE_SATURATION = 0.08
# Gaussian smoothing of the saturation before thresholding, in µm on the glass (about a cell's width).
SMOOTHING_UM = 8.0

# Ink colour rule, HSV with hue in degrees and saturation/value in 0-1 (see the module docstring).
INK_HUES: dict[str, tuple[float, float, float]] = {  # colour: (hue from, hue to, min saturation)
    "green": (70.0, 190.0, 0.25),
    "blue": (190.0, 250.0, 0.55),
    "red-high": (345.0, 360.0, 0.6),
    "red-low": (0.0, 15.0, 0.6),
}
BLACK_INK_MAX_VALUE = 0.25
INK_MIN_UM = 30.0
INK_MARGIN_UM = 30.0


def smoothed_saturation(thumbnail: np.ndarray, thumbnail_mpp: float) -> np.ndarray:
    """HSV saturation (0-1) smoothed over `SMOOTHING_UM`; PIL's HSV is skimage's rgb2hsv to 1/255, in a
    tenth of the time."""
    import cv2  # heavy: OpenCV

    saturation = np.asarray(Image.fromarray(thumbnail).convert("HSV"))[..., 1].astype(np.float32) / 255
    return cv2.GaussianBlur(saturation, (0, 0), SMOOTHING_UM / thumbnail_mpp)


def otsu_saturation_mask(thumbnail: np.ndarray, thumbnail_mpp: float) -> np.ndarray:
    """Tissue where the smoothed saturation exceeds Otsu's threshold, or the all-tissue threshold when
    Otsu's lower class is coloured (see the module docstring); never below `MIN_TISSUE_SATURATION`."""
    from skimage.filters import threshold_otsu  # heavy: scikit-image

    saturation = smoothed_saturation(thumbnail, thumbnail_mpp)
    if np.ptp(saturation) == 0:
        return np.zeros(saturation.shape, dtype=bool)
    threshold = float(threshold_otsu(saturation))
    if float(np.median(saturation[saturation <= threshold])) > GLASS_MAX_SATURATION:
        threshold = ALL_TISSUE_SATURATION
    return saturation > max(threshold, MIN_TISSUE_SATURATION)


def tiatoolbox_mask(thumbnail: np.ndarray, thumbnail_mpp: float) -> np.ndarray:
    masker = import_tiatoolbox("tiatoolbox.tools.tissuemask").MorphologicalMasker(mpp=thumbnail_mpp)
    return np.asarray(masker.fit_transform(thumbnail[np.newaxis])[0], dtype=bool)


Masker = Callable[[np.ndarray, float], np.ndarray]  # (thumbnail, its µm/px) -> boolean tissue mask
# `--tissue-method` names: the keys of `TissueMethod` (tiling/config.py), which a test keeps equal to these.
TISSUE_MASKERS: Registry[Masker] = Registry("tissue method")
TISSUE_MASKERS.add(
    "otsu", otsu_saturation_mask, description="Otsu on the smoothed saturation (CLAM), glass-aware"
)
TISSUE_MASKERS.add(
    "tiatoolbox", tiatoolbox_mask, description="tiatoolbox's MorphologicalMasker (slow to import)"
)


def tissue_mask(thumbnail: np.ndarray, method: TissueMethod, thumbnail_mpp: float) -> np.ndarray:
    """Boolean (h, w) mask over `thumbnail`, whose pixels are `thumbnail_mpp` µm wide (ink not removed)."""
    return TISSUE_MASKERS.get(method).build(thumbnail, thumbnail_mpp)


def ink_mask(thumbnail: np.ndarray, thumbnail_mpp: float) -> np.ndarray:
    """Boolean (h, w) mask of marker ink by the colour rule of the module docstring."""
    import cv2  # heavy: OpenCV

    # The colour is averaged before it is judged: single pixels of a fine thumbnail (nuclei, fibres,
    # JPEG noise) take any hue, while a stroke of ink is one colour over tens of µm.
    smoothed = cv2.GaussianBlur(thumbnail, (0, 0), SMOOTHING_UM / thumbnail_mpp)
    hsv = np.asarray(Image.fromarray(smoothed).convert("HSV")).astype(np.float32)
    hue, saturation, value = hsv[..., 0] * 360 / 255, hsv[..., 1] / 255, hsv[..., 2] / 255
    ink = value <= BLACK_INK_MAX_VALUE
    for low, high, min_saturation in INK_HUES.values():
        ink |= (hue >= low) & (hue <= high) & (saturation >= min_saturation)
    ink = cv2.morphologyEx(ink.astype(np.uint8), cv2.MORPH_OPEN, _disk(INK_MIN_UM / thumbnail_mpp))
    return cv2.dilate(ink, _disk(2 * INK_MARGIN_UM / thumbnail_mpp)).astype(bool)


def _disk(diameter_px: float) -> np.ndarray:
    """A round structuring element about `diameter_px` wide (at least 3 px, so it always does something)."""
    side = max(3, round(diameter_px) | 1)
    import cv2  # heavy: OpenCV

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
