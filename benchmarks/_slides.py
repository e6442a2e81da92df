"""Large slides for the benchmarks, built from real pixels (the test slides are small).

`mosaic_slide` tiles the level-0 image of a real slide (mirrored copies, so neighbours differ) into a big
Aperio-like pyramidal TIFF with the same mpp, using the tests' synthetic-slide writer. Built once per
parameter set and cached under benchmarks/out/ (git-ignored).
"""

from pathlib import Path

import numpy as np

from tests.synthetic import read_level0, write_slide
from wsi_pipeline.stores.atomic import atomic_path

REPO = Path(__file__).resolve().parents[1]
SOURCE_SLIDE = REPO / "tests" / "data" / "slides" / "CMU-1-Small-Region.svs"
SOURCE_MPP = 0.499  # CMU-1-Small-Region's openslide.mpp-x
CACHE_DIR = REPO / "benchmarks" / "out" / "slides"


def mosaic_slide(
    columns: int,
    rows: int,
    *,
    source: Path = SOURCE_SLIDE,
    mpp: float = SOURCE_MPP,
    cache_dir: Path = CACHE_DIR,
) -> Path:
    """A `columns` x `rows` mosaic of `source` as a 4-level JPEG pyramid (.svs); cached by its parameters."""
    path = cache_dir / f"mosaic-{source.stem}-{columns}x{rows}.svs"
    if path.is_file():
        return path
    image = read_level0(source)
    variants = [image, image[:, ::-1], image[::-1], image[::-1, ::-1]]
    mosaic = np.concatenate(
        [np.concatenate([variants[(r + c) % 4] for c in range(columns)], axis=1) for r in range(rows)], axis=0
    )
    with atomic_path(path) as tmp:
        write_slide(tmp, np.ascontiguousarray(mosaic), mpp=mpp, layout="aperio", downsamples=(1, 2, 4, 8))
    return path
