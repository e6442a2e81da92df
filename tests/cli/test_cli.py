"""The `wsi` entry point: help and version work and start without the heavy libraries."""

import subprocess
import sys
from pathlib import Path

import pytest

from wsi_pipeline import __version__

REPO = Path(__file__).parents[2]
HEAVY = (
    "torch",
    "torchvision",
    "timm",
    "openslide",
    "tiatoolbox",
    "zarr",
    "h5py",
    "skimage",
    "cv2",
    "matplotlib",
)

PROBE = """
import sys
from cli.main import app
try:
    app(sys.argv[1:], prog_name="wsi")
except SystemExit as exit:
    code = exit.code
print("HEAVY:" + ",".join(sorted(m for m in {heavy!r} if m in sys.modules)))
print("EXIT:" + str(code))
"""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("tile", "--help")])
def test_start_imports_no_heavy_library(args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert "EXIT:0" in result.stdout, result.stderr
    assert "HEAVY:\n" in result.stdout, result.stdout


def test_version_from_the_installed_script() -> None:
    script = Path(sys.executable).parent / "wsi"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"wsi {__version__}"


def test_help_lists_the_tile_command() -> None:
    result = run_cli("--help")
    assert "tile" in result.stdout and "Whole-slide" in result.stdout


def test_tile_help_lists_every_option_with_its_default() -> None:
    text = run_cli("tile", "--help").stdout
    for option in (
        "--out",
        "--config",
        "--tile-um",
        "--tile-px",
        "--mpp",
        "--tissue-method",
        "--min-tissue",
        "--white-gray",
        "--max-white-fraction",
        "--min-edge-fraction",
        "--workers",
        "--overwrite",
        "--debug",
    ):
        assert option in text, option
    assert "default: 256.0" in text and "default: 224" in text
