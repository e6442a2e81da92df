"""The tile store format (docs/ARCHITECTURE.md, "Tile store"): round trip, N = 0, atomic publication,
damaged and partial stores."""

from pathlib import Path

import numpy as np
import pytest

from tests.stores.helpers import make_meta
from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.atomic import TMP_MARKER
from wsi_pipeline.stores.tile_store import (
    TileStore,
    list_tile_stores,
    read_tile_store,
    read_tile_store_meta,
    store_path,
    write_tile_store,
)


def make_store(n: int, **meta_changes: object) -> TileStore:
    rng = np.random.default_rng(n)
    return TileStore(
        coords=np.arange(2 * n, dtype=np.int64).reshape(n, 2) * 513,
        tissue_fraction=rng.random(n).astype(np.float32),
        blur_score=rng.random(n).astype(np.float32) * 1000,
        thumbnail=rng.integers(0, 256, (40, 30, 3), dtype=np.uint8),
        tissue_mask=rng.random((40, 30)) > 0.5,
        meta=make_meta(n_kept=n, **meta_changes),
    )


@pytest.mark.parametrize("n", [0, 1, 5])
def test_round_trip(tmp_path: Path, n: int) -> None:
    store = make_store(n, config={"tile_um": 256.0}, n_grid=10)
    path = store_path(tmp_path, "s1")
    write_tile_store(path, store)
    back = read_tile_store(path)
    assert back.n_tiles == n
    for name in ("coords", "tissue_fraction", "blur_score", "thumbnail", "tissue_mask"):
        original, loaded = getattr(store, name), getattr(back, name)
        assert loaded.dtype == original.dtype and loaded.shape == original.shape
        np.testing.assert_array_equal(loaded, original)
    assert back.meta == store.meta and back.meta.model_extra == {"config": {"tile_um": 256.0}, "n_grid": 10}
    assert read_tile_store_meta(path).slide_mtime == 1700000000.25  # floats survive exactly (resume compares)


def test_arrays_must_agree_on_n(tmp_path: Path) -> None:
    store = make_store(3)
    bad = TileStore(
        store.coords,
        store.tissue_fraction[:2],
        store.blur_score,
        store.thumbnail,
        store.tissue_mask,
        store.meta,
    )
    with pytest.raises(ValueError, match="number of tiles"):
        write_tile_store(tmp_path / "s1.zarr", bad)
    assert list(tmp_path.iterdir()) == []


def test_replacing_a_store_is_atomic(tmp_path: Path) -> None:
    path = store_path(tmp_path, "s1")
    write_tile_store(path, make_store(2))
    write_tile_store(path, make_store(4))
    assert read_tile_store(path).n_tiles == 4
    assert [p.name for p in tmp_path.iterdir()] == ["s1.zarr"]


def test_failed_write_leaves_the_old_store_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = store_path(tmp_path, "s1")
    write_tile_store(path, make_store(2))
    broken = make_store(3)
    object.__setattr__(broken, "thumbnail", object())  # fails inside the write, after arrays were created
    with pytest.raises(TypeError):
        write_tile_store(path, broken)
    assert read_tile_store(path).n_tiles == 2
    assert [p.name for p in tmp_path.iterdir()] == ["s1.zarr"]


def test_list_ignores_temporaries_and_other_files(tmp_path: Path) -> None:
    for slide_id in ("b", "a"):
        write_tile_store(store_path(tmp_path, slide_id), make_store(1, slide_id=slide_id))
    (tmp_path / f".c.zarr{TMP_MARKER}1234abcd").mkdir()
    (tmp_path / "a.qc.png").write_bytes(b"")
    assert [p.name for p in list_tile_stores(tmp_path)] == ["a.zarr", "b.zarr"]
    with pytest.raises(WsiError, match="no such folder"):
        list_tile_stores(tmp_path / "missing")


def test_damaged_or_foreign_stores_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(WsiError, match=r"junk\.zarr: not a readable tile store"):
        read_tile_store_meta(tmp_path / "junk.zarr")
    path = store_path(tmp_path, "s1")
    write_tile_store(path, make_store(2))
    for chunk in (path / "coords" / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"garbage")
    with pytest.raises(WsiError, match=r"s1\.zarr: tile store is damaged"):
        read_tile_store(path)
