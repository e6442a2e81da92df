"""Slide arguments: files and folders, with argument mistakes caught before any work starts."""

from pathlib import Path

import pytest

from wsi_pipeline.errors import WsiError
from wsi_pipeline.slides.discover import find_slides


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_folders_are_searched_recursively_for_slide_extensions(tmp_path: Path) -> None:
    a = _touch(tmp_path / "cohort" / "a.svs")
    b = _touch(tmp_path / "cohort" / "sub" / "b.ome.tiff")
    _touch(tmp_path / "cohort" / "notes.txt")
    _touch(tmp_path / "cohort" / ".cache" / "hidden.svs")
    _touch(tmp_path / "cohort" / ".tmp.svs")
    assert find_slides([tmp_path / "cohort"]) == [a, b]


def test_explicit_files_are_kept_whatever_their_extension(tmp_path: Path) -> None:
    odd = _touch(tmp_path / "slide.data")
    assert find_slides([odd]) == [odd]


def test_repeats_are_dropped(tmp_path: Path) -> None:
    a = _touch(tmp_path / "d" / "a.svs")
    assert find_slides([a, tmp_path / "d", a]) == [a]


def test_folder_without_slides_is_an_error(tmp_path: Path) -> None:
    _touch(tmp_path / "empty" / "readme.md")
    with pytest.raises(WsiError, match=r"empty: no slide files in this folder or below \(looked for .*\.svs"):
        find_slides([tmp_path / "empty"])


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WsiError, match=r"nope\.svs: no such file or folder"):
        find_slides([tmp_path / "nope.svs"])


def test_two_slides_with_one_id_are_an_error(tmp_path: Path) -> None:
    a = _touch(tmp_path / "site1" / "case.svs")
    b = _touch(tmp_path / "site2" / "case.tiff")
    with pytest.raises(WsiError, match="same slide id 'case'"):
        find_slides([a, b])


def test_no_arguments_is_an_error() -> None:
    with pytest.raises(WsiError, match="no slides given"):
        find_slides([])


def test_folders_yield_plain_images_as_their_files_would(tmp_path: Path) -> None:
    """PNG and JPEG files are slides when named one by one, so a folder of them is one too; the QC images
    `wsi tile` writes are not."""
    png = _touch(tmp_path / "tma" / "core-1.png")
    jpg = _touch(tmp_path / "tma" / "core-2.JPEG")
    _touch(tmp_path / "tma" / "core-1.qc.png")
    assert find_slides([tmp_path / "tma"]) == [png, jpg]
    assert find_slides([png]) == [png]
