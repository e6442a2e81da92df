"""The resource locator finds configs and demo slides in a source checkout and in an installed wheel, and the
wheel's force-include table ships exactly what the locator looks for."""

import shutil
import tomllib
from pathlib import Path

import pytest

from wsi_pipeline import resources
from wsi_pipeline.errors import WsiError

REPO = Path(__file__).resolve().parents[1]


def test_source_checkout_finds_the_repository_folders() -> None:
    assert resources.configs_dir() == REPO / "configs"
    assert resources.demo_slides_dir() == REPO / "tests" / "data" / "slides"


def test_installed_copy_wins_over_the_source_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unpacked wheel: `_resources/` beside the package, laid out as pyproject's force-include says."""
    installed = tmp_path / "_resources"
    for source, target in _force_include().items():
        destination = tmp_path / Path(target).relative_to("wsi_pipeline")
        destination.parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (REPO / source).is_dir() else shutil.copy2
        copy(REPO / source, destination)
    monkeypatch.setattr(resources, "INSTALLED_DIR", installed)
    monkeypatch.setattr(resources, "SOURCE_ROOT", tmp_path / "no-checkout")

    assert resources.configs_dir() == installed / "configs"
    assert (resources.configs_dir() / "tcga_nsclc.yaml").is_file()
    assert resources.demo_slides_dir() == installed / "demo_slides"
    assert (installed / "demo_slides" / "SOURCES.md").is_file()


def test_missing_demo_slides_are_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "INSTALLED_DIR", tmp_path / "_resources")
    monkeypatch.setattr(resources, "SOURCE_ROOT", tmp_path)
    with pytest.raises(WsiError, match="demo slides") as caught:
        resources.demo_slides_dir()
    assert "\n" not in str(caught.value)
    assert resources.configs_dir() == tmp_path / "_resources" / "configs"  # absent: code defaults apply


def test_wheel_ships_every_file_the_locator_looks_for() -> None:
    shipped = _force_include()
    assert shipped["configs"] == "wsi_pipeline/_resources/configs"
    for name in resources.DEMO_SLIDES:
        assert shipped[f"tests/data/slides/{name}"] == f"wsi_pipeline/_resources/demo_slides/{name}"
    assert shipped["tests/data/SOURCES.md"] == "wsi_pipeline/_resources/demo_slides/SOURCES.md"
    assert all((REPO / source).exists() for source in shipped)


def _force_include() -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)
    return project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
