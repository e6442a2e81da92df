"""Feature bags: our streaming atomic writer, and `load_bag` on small files in every layout it reads."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.feature_bag import Bag, bag_feature_dim, load_bag, read_bag_attrs, write_bag

RNG = np.random.default_rng(0)
COORDS = np.array([[0, 0], [513, 0], [1026, 513], [513, 1026]], dtype=np.int64)
ATTRS = {
    "slide_id": "slide-a",
    "extractor": "retccl",
    "weights_sha256": "ab" * 32,
    "feature_dim": 8,
    "tile_px": 224,
    "tile_um": 256.0,
    "mpp_level0": 0.499,
    "tile_px_level0": 513,
    "slide_path": Path("/slides/slide-a.svs"),
    "wsi_version": "0.1.0",
    "extract_config": {"batch_size": 2},
}


def _features(n: int = 4, dim: int = 8) -> np.ndarray:
    return RNG.standard_normal((n, dim)).astype(np.float32)


def _write_ours(path: Path, features: np.ndarray, dtype: str = "float16", batch: int = 3) -> None:
    coords = COORDS if len(features) == len(COORDS) else np.zeros((len(features), 2), dtype=np.int64)
    with write_bag(path, coords=coords, feature_dim=features.shape[1], dtype=dtype, attrs=ATTRS) as writer:
        for start in range(0, len(features), batch):
            writer.write(features[start : start + batch])


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_our_layout_round_trips(tmp_path: Path, dtype: str) -> None:
    features = _features()
    path = tmp_path / "slide-a.h5"
    _write_ours(path, features, dtype)
    bag = load_bag(path)
    assert isinstance(bag, Bag) and bag.features.dtype == np.dtype(dtype)
    np.testing.assert_allclose(bag.features, features, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(bag.coords, COORDS)
    assert bag.coords.dtype == np.int64
    assert bag.meta["layout"] == "wsi" and bag.meta["slide_id"] == "slide-a"
    assert bag.meta["feature_dim"] == 8 and bag.meta["extractor"] == "retccl"
    assert bag.meta["mpp_level0"] == 0.499 and bag.meta["tile_px_level0"] == 513
    assert bag.meta["slide_path"] == "/slides/slide-a.svs"
    assert bag_feature_dim(path) == 8
    assert read_bag_attrs(path)["extract_config"] == '{"batch_size": 2}'
    with h5py.File(path) as h5:  # the CLAM/TRIDENT names and dtypes, so other tools read our bags
        assert h5["features"].dtype == np.dtype(dtype) and h5["coords"].dtype == np.int64


def test_empty_bag(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    with write_bag(path, coords=np.zeros((0, 2)), feature_dim=2048, dtype="float16", attrs=ATTRS):
        pass
    bag = load_bag(path)
    assert bag.features.shape == (0, 2048) and bag.coords.shape == (0, 2) and bag_feature_dim(path) == 2048


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "slide-a.h5"
    with (
        pytest.raises(KeyboardInterrupt),
        write_bag(path, coords=COORDS, feature_dim=8, dtype="float16", attrs=ATTRS) as writer,
    ):
        writer.write(_features(2))
        raise KeyboardInterrupt
    with (
        pytest.raises(RuntimeError, match="2 of 4 feature rows"),
        write_bag(path, coords=COORDS, feature_dim=8, dtype="float16", attrs=ATTRS) as writer,
    ):
        writer.write(_features(2))
    assert list(tmp_path.iterdir()) == []


def test_float16_overflow_is_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(WsiError, match=r"non-finite features.*--dtype float32"),
        write_bag(
            tmp_path / "x.h5", coords=COORDS[:1], feature_dim=8, dtype="float16", attrs=ATTRS
        ) as writer,
    ):
        writer.write(np.full((1, 8), 1e6, dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def _stamp_v2(path: Path, features: np.ndarray, coords_um: np.ndarray) -> None:
    """What STAMP 2.x writes: `feats` float16, `coords` in µm, tile geometry in root attributes, no slide mpp."""
    with h5py.File(path, "w") as h5:
        h5["feats"] = features.astype(np.float16)
        h5["coords"] = coords_um
        h5.attrs.update(
            {
                "stamp_version": "2.3.0",
                "extractor": "ctranspath",
                "unit": "um",
                "tile_size_um": 256.0,
                "tile_size_px": 224,
                "code_hash": "0123abcd",
                "feat_type": "tile",
            }
        )


def test_stamp_layout_converts_microns_with_the_slide_mpp(tmp_path: Path) -> None:
    features, path = _features(), tmp_path / "TCGA-XX.h5"
    _stamp_v2(path, features, COORDS * 0.499)
    bag = load_bag(path, mpp_level0=0.499)
    np.testing.assert_array_equal(bag.coords, COORDS)
    np.testing.assert_allclose(bag.features, features, rtol=1e-3, atol=1e-3)
    assert bag.meta["layout"] == "stamp" and bag.meta["slide_id"] == "TCGA-XX"
    assert (bag.meta["extractor"], bag.meta["tile_um"], bag.meta["tile_px"]) == ("ctranspath", 256.0, 224)
    assert bag.meta["tile_px_level0"] == 513 and bag_feature_dim(path) == 8


def test_stamp_layout_without_mpp_keeps_features_and_explains_coords(tmp_path: Path) -> None:
    path = tmp_path / "TCGA-XX.h5"
    _stamp_v2(path, _features(), COORDS * 0.499)
    bag = load_bag(path)
    assert bag.features.shape == (4, 8) and not bag.has_coords
    with pytest.raises(WsiError, match=r"TCGA-XX\.h5: STAMP bag stores tile coordinates in µm.*mpp_level0"):
        _ = bag.coords


def test_stamp_v1_grid_units(tmp_path: Path) -> None:
    """STAMP v1 had no unit attributes: coordinates count 224 px tiles of 256 µm (STAMP's own reading)."""
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as h5:
        h5["feats"] = _features(3).astype(np.float16)
        h5["coords"] = np.array([[0, 0], [224, 0], [448, 224]])
    bag = load_bag(path, mpp_level0=0.5)
    np.testing.assert_array_equal(bag.coords, [[0, 0], [512, 0], [1024, 512]])


def test_clam_layouts(tmp_path: Path) -> None:
    features = _features()
    plain, batched, trident = tmp_path / "plain.h5", tmp_path / "batched.h5", tmp_path / "trident.h5"
    with h5py.File(plain, "w") as h5:  # CLAM extract_features_fp.py
        h5["features"] = features
        h5["coords"] = COORDS
    with h5py.File(batched, "w") as h5:  # CLAM variants that keep the batch axis
        h5["features"] = features[None]
        h5["coords"] = COORDS[None]
    with h5py.File(trident, "w") as h5:  # TRIDENT: attributes on the datasets
        h5["features"] = features
        h5["features"].attrs.update({"name": "trident", "encoder": "uni_v1"})
        h5["coords"] = COORDS.astype(np.int32)
        h5["coords"].attrs.update({"patch_size": 256, "patch_size_level0": 512, "target_magnification": 20})
    for path in (plain, batched, trident):
        bag = load_bag(path)
        np.testing.assert_array_equal(bag.features, features)
        np.testing.assert_array_equal(bag.coords, COORDS)
        assert bag.coords.dtype == np.int64 and bag.meta["layout"] == "clam" and bag_feature_dim(path) == 8
    assert load_bag(trident).meta["extractor"] == "uni_v1" and load_bag(trident).meta["tile_px_level0"] == 512


def test_clam_pt_features(tmp_path: Path) -> None:
    features = _features()
    path = tmp_path / "slide.pt"
    torch.save(torch.from_numpy(features), path)
    bag = load_bag(path)
    np.testing.assert_array_equal(bag.features, features)
    assert bag.meta["layout"] == "clam" and bag_feature_dim(path) == 8
    with pytest.raises(WsiError, match="carry no coordinates"):
        _ = bag.coords


def test_truncated_file_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "slide-a.h5"
    _write_ours(path, _features(64, 256), "float32")
    path.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(WsiError) as error:
        load_bag(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    (tmp_path / "not-h5.h5").write_text("hello")
    with pytest.raises(WsiError, match="not a readable HDF5 feature bag"):
        load_bag(tmp_path / "not-h5.h5")
    with pytest.raises(WsiError, match="no such feature bag"):
        load_bag(tmp_path / "missing.h5")


def test_missing_dataset_and_mismatched_rows(tmp_path: Path) -> None:
    no_features, no_coords, mismatch = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    with h5py.File(no_features, "w") as h5:
        h5["embeddings"] = _features()
    with h5py.File(no_coords, "w") as h5:
        h5["features"] = _features()
    with h5py.File(mismatch, "w") as h5:
        h5["features"] = _features(4)
        h5["coords"] = COORDS[:3]
    with pytest.raises(WsiError, match=r"no 'features' .* or 'feats' .* dataset \(found: embeddings\)"):
        load_bag(no_features)
    with pytest.raises(WsiError, match=r"no 'features' .* or 'feats' .* dataset"):
        bag_feature_dim(no_features)
    with pytest.raises(WsiError, match="no 'coords' dataset"):
        load_bag(no_coords)
    with pytest.raises(WsiError, match=r"'features' has 4 rows but 'coords' has shape \(3, 2\)"):
        load_bag(mismatch)
