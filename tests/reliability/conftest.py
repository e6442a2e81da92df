"""Inputs shared by the reliability tests, made once per session: slides to tile, tile stores to extract,
feature bags to train on, and a random-init RetCCL checkpoint. Each reference run (one uninterrupted run
per stage) is also the "prior good output" that the bad-input tests check is left untouched.
"""

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.bags import make_cohort, write_labels
from tests.reliability.outputs import Exclusions, tree_content
from tests.reliability.process import Result, run_wsi

DATA = Path(__file__).resolve().parents[1] / "data" / "slides"
CMU = DATA / "CMU-1-Small-Region.svs"
CMU_PYRAMID = DATA / "CMU-1-Small-Region_pyramid4.svs"
TCGA = DATA / "tcga-cr-7395-01a-01-ts1.svs"

# Exclusions, each a field that differs between two runs of one command with one seed:
# - history.csv `seconds` and `peak_memory_mb`: wall-clock time and the process's peak RSS;
# - result.json / summary.json `seconds`: the fold's wall-clock training time;
# - last.pt: the resume state, deleted by design once a fold has finished.
TRAIN_EXCLUSIONS = Exclusions(
    csv_columns={"history.csv": frozenset({"seconds", "peak_memory_mb"})},
    json_keys={"result.json": frozenset({"seconds"}), "summary.json": frozenset({"seconds"})},
    files=frozenset({"last.pt"}),
)
# A narrow softmax-free ViT with dropout: resuming must restore every RNG to give the same weights.
TRAIN_CONFIG: dict[str, Any] = {
    "model": "vit_sf",
    "model_overrides": {"dim": 32, "heads": 2, "dim_head": 16, "mlp_dim": 32, "dropout": 0.1},
    "epochs": 12,
    "lr": 1e-3,
    "warmup_epochs": 0.5,
    "patience": 100,
    "seed": 0,
    "device": "cpu",
}


@dataclass(frozen=True)
class Reference:
    """One uninterrupted run: its command (with `{out}` for the output), output folder, content, duration."""

    args: list[str]
    out: Path
    content: dict[str, Any]
    seconds: float
    result: Result

    def command(self, out: Path) -> list[str]:
        return [str(out) if a == "{out}" else a for a in self.args]


def reference_run(args: list[str], out: Path, exclusions: Exclusions) -> Reference:
    result = run_wsi([str(out) if a == "{out}" else a for a in args])
    assert result.returncode == 0, str(result)
    return Reference(args, out, tree_content(out, exclusions), result.seconds, result)


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="session")
def tile_slides(inputs: Path) -> Path:
    """Three real slides: one level with mpp, a 4-level pyramid, and a JPEG 2000 slide without mpp."""
    folder = inputs / "slides"
    folder.mkdir()
    for slide in (CMU, CMU_PYRAMID, TCGA):
        shutil.copy2(slide, folder / slide.name)
    return folder


@pytest.fixture(scope="session")
def tile_reference(tile_slides: Path, inputs: Path) -> Reference:
    args = ["tile", str(tile_slides), "--out", "{out}", "--mpp", "0.5", "--workers", "2"]
    return reference_run(args, inputs / "reference" / "tiles", Exclusions())


@pytest.fixture(scope="session")
def retccl_weights(inputs: Path) -> Path:
    """Random-init ResNet-50 weights in the RetCCL checkpoint's layout (torchvision keys, no fc)."""
    import torch

    from tests.extract.helpers import torchvision_resnet50_state

    path = inputs / "retccl_random.pth"
    torch.save(torchvision_resnet50_state(), path)
    return path


@pytest.fixture(scope="session")
def extract_stores(inputs: Path) -> Path:
    """Three tile stores of 4 tissue tiles each, over real slides (made with the store contract)."""
    from tests.extract.helpers import TISSUE_COORDS, make_store

    slides, tiles = inputs / "extract-slides", inputs / "extract-tiles"
    slides.mkdir()
    for name, source in (("cmu-a.svs", CMU), ("cmu-b.svs", CMU), ("cmu-pyramid.svs", CMU_PYRAMID)):
        shutil.copy2(source, slides / name)
        make_store(tiles, slides / name, TISSUE_COORDS[:4])
    return tiles


@pytest.fixture(scope="session")
def extract_reference(extract_stores: Path, retccl_weights: Path, inputs: Path) -> Reference:
    args = [
        "extract",
        str(extract_stores),
        "--out",
        "{out}",
        "--weights",
        str(retccl_weights),
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--workers",
        "1",
    ]
    return reference_run(args, inputs / "reference" / "features", Exclusions())


@pytest.fixture(scope="session")
def train_inputs(inputs: Path) -> Path:
    """16 synthetic 64-d bags with a planted signal, a labels CSV and a small training config."""
    root = inputs / "train"
    slides = make_cohort(root / "features", 16, planted_fraction=0.3, tiles=(20, 60), dim=64, seed=0)
    write_labels(root / "labels.csv", slides)
    (root / "train.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG))
    return root


def train_args(root: Path) -> list[str]:
    return [
        "train",
        "--config",
        str(root / "train.yaml"),
        "--features",
        str(root / "features"),
        "--labels",
        str(root / "labels.csv"),
        "--out",
        "{out}",
        "--resume",
    ]


@pytest.fixture(scope="session")
def train_reference(train_inputs: Path, inputs: Path) -> Reference:
    return reference_run(train_args(train_inputs), inputs / "reference" / "run", TRAIN_EXCLUSIONS)


@pytest.fixture
def small_filesystem() -> Iterator[Callable[[Path, int], Path]]:
    """`mount(folder, size_kib)`: a tmpfs of that size at `folder` (root may mount here), unmounted after.

    Skips where mounting is not allowed; the bad-input test of a full disk then relies on
    tests/reliability/test_atomic.py, which injects the OSError into our own write path in-process.
    """
    mounted: list[Path] = []

    def mount(folder: Path, size_kib: int) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a small file system needs root")
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)
