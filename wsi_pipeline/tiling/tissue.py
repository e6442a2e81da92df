"""Tissue masks on a slide thumbnail: which parts of the glass carry tissue.

`otsu` thresholds the saturation channel (stained tissue is coloured, glass and background are grey or
white), as CLAM does, after smoothing it over a few µm so that loose stroma counts as tissue rather than
as a lace of fibres and gaps (which would put most tissue tiles under `min_tissue`). `tiatoolbox` runs tiatoolbox's MorphologicalMasker
(Otsu on grey, small regions removed, dilation scaled to the thumbnail's µm/px); its package takes tens of
seconds to import, so it is imported only when asked for.
"""

from collections.abc import Callable

import numpy as np
from PIL import Image

from wsi_pipeline.tiling.config import TissueMethod

# Otsu always splits an image in two, even a blank one: on an empty slide it would call half the glass
# tissue. Glass and white background stay below this saturation (0-1 scale), while even pale H&E is above
# about 0.1, so the threshold is never allowed below it.
MIN_TISSUE_SATURATION = 0.05
# Gaussian smoothing of the saturation before thresholding, in µm on the glass (about a cell's width).
SMOOTHING_UM = 8.0


def otsu_saturation_mask(thumbnail: np.ndarray, thumbnail_mpp: float) -> np.ndarray:
    """Tissue where the smoothed HSV saturation exceeds Otsu's threshold (and `MIN_TISSUE_SATURATION`)."""
    from skimage.filters import gaussian, threshold_otsu

    # PIL's HSV is the same saturation as skimage's rgb2hsv to 1/255, in a tenth of the time.
    saturation = np.asarray(Image.fromarray(thumbnail).convert("HSV"))[..., 1] / 255.0
    saturation = gaussian(saturation, sigma=SMOOTHING_UM / thumbnail_mpp, preserve_range=True)
    if np.ptp(saturation) == 0:
        return np.zeros(saturation.shape, dtype=bool)
    threshold = max(float(threshold_otsu(saturation)), MIN_TISSUE_SATURATION)
    return saturation > threshold


def tiatoolbox_mask(thumbnail: np.ndarray, thumbnail_mpp: float) -> np.ndarray:
    from tiatoolbox.tools.tissuemask import MorphologicalMasker

    masker = MorphologicalMasker(mpp=thumbnail_mpp)
    return np.asarray(masker.fit_transform(thumbnail[np.newaxis])[0], dtype=bool)


TISSUE_MASKERS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "otsu": otsu_saturation_mask,
    "tiatoolbox": tiatoolbox_mask,
}


def tissue_mask(thumbnail: np.ndarray, method: TissueMethod, thumbnail_mpp: float) -> np.ndarray:
    """Boolean (h, w) mask over `thumbnail`, whose pixels are `thumbnail_mpp` µm wide."""
    return TISSUE_MASKERS[method](thumbnail, thumbnail_mpp)
