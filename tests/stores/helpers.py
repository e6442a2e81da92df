"""A valid `TileStoreMeta` for tests that need a tile store but not a real tiling run."""

from wsi_pipeline.stores.tile_store import TileStoreMeta


def make_meta(**changes: object) -> TileStoreMeta:
    """The attributes of a small store of `s1`; `changes` replace any of them."""
    values: dict[str, object] = {
        "slide_id": "s1",
        "slide_path": "/data/s1.svs",
        "slide_bytes": 123,
        "slide_mtime": 1700000000.25,
        "mpp_level0": 0.499,
        "mpp_source": "metadata",
        "tile_px": 224,
        "tile_um": 256.0,
        "tile_px_level0": 513,
        "read_level": 0,
        "read_downsample": 1.0,
        "thumbnail_downsample": 2.9,
        "tissue_method": "otsu",
        "thresholds": {
            "min_tissue": 0.5,
            "white_gray": 240.0,
            "max_white_fraction": 0.5,
            "min_edge_fraction": 0.02,
        },
        "n_candidates": 3,
        "n_kept": 2,
        "rejected": {"tissue": 7, "white": 1, "blur": 0},
        "wsi_version": "0.1.0",
    }
    values.update(changes)
    return TileStoreMeta(**values)
