"""Feature compatibility: a new bag must come from the extractor the run was trained on.

Features of another extractor (or the same one with other weights, tile size or stain normalisation) have
the run's width often enough and then give confident nonsense, so each bag's identity is compared with the
run's `extractor.json` (`wsi_pipeline.stores.run_folder`). A width the models cannot take is always refused;
any other difference is refused unless the user allows it, and then recorded next to the prediction.
"""

import math
from pathlib import Path
from typing import Any

from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.run_folder import (
    EXTRACTOR_FILE,
    IDENTITY_FIELDS,
    SPLITS_FILE,
    ExtractorIdentity,
    RunInfo,
    bag_identity,
    identity_of_bags,
    read_extractor_identity,
    read_splits,
)

CHECK_OK = "ok"
CHECK_UNRECORDED = "dim only (run records no extractor identity)"


def run_identity(info: RunInfo) -> tuple[ExtractorIdentity | None, str]:
    """The run's recorded identity, else that of its training bags when they are still there; and a note."""
    recorded = read_extractor_identity(info.run_dir)
    if recorded is not None:
        return recorded, ""
    try:
        ids = sorted({row.slide_id for row in read_splits(info.run_dir / SPLITS_FILE)})
        paths = [info.features / f"{slide_id}.h5" for slide_id in ids]
        if paths and all(p.is_file() for p in paths):
            return identity_of_bags(paths), f"identity read from the run's training bags in {info.features}"
    except WsiError:
        pass
    return (
        None,
        f"{info.run_dir} has no {EXTRACTOR_FILE} and its training bags are gone: only the dim is checked",
    )


def _same(name: str, mine: Any, theirs: Any) -> bool:
    if name == "tile_um" and mine is not None and theirs is not None:
        return math.isclose(float(mine), float(theirs), rel_tol=1e-6)
    return mine == theirs


def identity_differences(meta: dict[str, Any], feature_dim: int, run: ExtractorIdentity) -> list[str]:
    """'field bag-value (the run's: value)' for each identity field where a bag differs from the run."""
    bag = bag_identity(meta, feature_dim)
    differences = []
    for name in IDENTITY_FIELDS:
        if name == "feature_dim" or name in run.mixed:
            continue
        theirs, mine = getattr(run, name), bag[name]
        if theirs is None and name != "stain_norm":
            continue  # the run did not record it: nothing to check against
        if not _same(name, mine, theirs):
            shown = "not recorded" if mine is None else repr(mine)
            differences.append(f"{name} {shown} (the run's: {theirs!r})")
    return differences


def check_bag(
    path: Path,
    slide_id: str,
    meta: dict[str, Any],
    feature_dim: int,
    in_dim: int,
    run: ExtractorIdentity | None,
    allow_mismatch: bool,
) -> str:
    """What the `extractor_check` column says for this bag; raises the one-line refusal."""
    if feature_dim != in_dim:
        raise WsiError(
            f"{slide_id}: feature_dim {feature_dim} differs from the run's {in_dim} ({path}); "
            "these features come from another extractor"
        )
    if run is None:
        return CHECK_UNRECORDED
    differences = identity_differences(meta, feature_dim, run)
    if not differences:
        return CHECK_OK
    if not allow_mismatch:
        raise WsiError(
            f"{slide_id}: {'; '.join(differences)} ({path}); features of another extractor give confident "
            "nonsense; pass --allow-extractor-mismatch to predict anyway"
        )
    return "mismatch allowed: " + "; ".join(differences)
