"""Convert classic multiple-instance sets from MIDatasets.jl's `.jld` files into bench_real.py's `.npz` layout.

The project ships none of these sets; this lets `benchmarks/bench_real.py --mil-dir` run on more of them than
the two in `../shared/data/mil` (Musk1, Tiger and Elephant were used to choose the `l2` default, see
`benchmarks/RESULTS.md`). Source: github.com/komartom/MIDatasets.jl, `data/<Name>.jld` (MIT). A `.jld` file is
HDF5: `X` holds one object reference per bag to its (n_instances, D) matrix, `y` is a Julia BitArray (a
struct of packed 64-bit chunks and a length).

    uv run python benchmarks/mil_jld_to_npz.py Musk1.jld Tiger.jld Elephant.jld --out /tmp/mil

Writes <out>/<name in lower case>.npz with `features` float32, `bag_ptr` int64, `bag_labels` int8 (1 positive).
"""

import argparse
from pathlib import Path

import h5py
import numpy as np


def bit_array(group: h5py.File, value: np.void) -> np.ndarray:
    """A Julia BitArray stored by JLD (packed little-endian uint64 chunks + length) as an int8 array."""
    chunks = np.asarray(group[value["chunks_"]][()], dtype="<u8")
    bits = np.unpackbits(chunks.view(np.uint8), bitorder="little")
    return bits[: int(value["len_"])].astype(np.int8)


def read_jld(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """(bags, labels) of one MIDatasets.jl file; each bag (n_instances, D) float32."""
    with h5py.File(path, "r") as f:
        # MIDatasets.jl stores each bag as a (D, n_instances) Julia matrix (instances are columns), which
        # h5py reads with the same (D, n) shape: transpose to one row per instance.
        matrices = [np.asarray(f[ref][()], dtype=np.float32).T for ref in f["X"][()]]
        labels = bit_array(f, f["y"][()])
    widths = {m.shape[1] for m in matrices}
    if len(widths) != 1 or len(matrices) != len(labels):
        raise ValueError(f"{path}: {len(matrices)} bags of widths {sorted(widths)}, {len(labels)} labels")
    return matrices, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.files:
        bags, labels = read_jld(path)
        sizes = [len(b) for b in bags]
        target = args.out / f"{path.stem.lower()}.npz"
        np.savez(
            target,
            features=np.concatenate(bags),
            bag_ptr=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            bag_labels=labels,
        )
        print(f"{target}: {len(bags)} bags ({int(labels.sum())} positive), {sum(sizes)} x {bags[0].shape[1]}")


if __name__ == "__main__":
    main()
