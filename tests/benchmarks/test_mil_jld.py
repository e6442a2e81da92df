"""benchmarks/mil_jld_to_npz.py reads MIDatasets.jl's layout: (D, n) matrices by reference, a packed BitArray."""

import sys
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import mil_jld_to_npz


def _write_jld(path: Path, bags: list[np.ndarray], labels: list[int]) -> None:
    """What JLD writes for `X::Vector{Matrix{Float32}}` (instances as columns) and `y::BitVector`."""
    with h5py.File(path, "w") as f:
        refs = f.create_group("_refs")
        bag_refs = [refs.create_dataset(f"{i:08d}", data=bag.T).ref for i, bag in enumerate(bags)]
        f.create_dataset("X", data=np.array(bag_refs, dtype=h5py.ref_dtype))
        packed = np.packbits(np.array(labels, dtype=np.uint8), bitorder="little")
        chunks = np.zeros(-(-len(labels) // 64) * 8, dtype=np.uint8)
        chunks[: len(packed)] = packed
        chunk_ref = refs.create_dataset("chunks", data=chunks.view("<u8")).ref
        kind = np.dtype([("chunks_", h5py.ref_dtype), ("len_", "<i8"), ("dims_", h5py.ref_dtype)])
        f.create_dataset("y", data=np.array((chunk_ref, len(labels), chunk_ref), dtype=kind))


def test_bags_come_back_one_row_per_instance_with_their_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    bags = [rng.normal(size=(n, 5)).astype(np.float32) for n in (3, 1, 7)] * 30  # 90 bags: two 64-bit chunks
    labels = [int(v) for v in rng.integers(0, 2, size=len(bags))]
    _write_jld(tmp_path / "Toy.jld", bags, labels)
    got_bags, got_labels = mil_jld_to_npz.read_jld(tmp_path / "Toy.jld")
    assert got_labels.tolist() == labels
    assert all(np.array_equal(a, b) for a, b in zip(got_bags, bags, strict=True))
