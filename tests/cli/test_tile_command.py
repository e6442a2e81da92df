"""`wsi tile` as a user runs it: outputs, one-line errors, exit codes, resume."""

import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from tests.synthetic import blank_glass
from wsi_pipeline.errors import ConfigError
from wsi_pipeline.stores.tile_store import read_tile_store, store_path

runner = CliRunner()


def wsi(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_cmu_slide_gives_a_store_and_a_qc_image(cmu_slide: Path, tmp_path: Path) -> None:
    result = wsi("tile", cmu_slide, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    store = read_tile_store(store_path(tmp_path / "out", "CMU-1-Small-Region"))
    assert (store.meta.tile_px, store.meta.tile_um, store.meta.tile_px_level0) == (224, 256.0, 513)
    assert store.n_tiles > 0
    assert result.stdout.splitlines() == [str(tmp_path / "out" / "CMU-1-Small-Region.qc.png")]
    assert (tmp_path / "out" / "CMU-1-Small-Region.qc.png").is_file()
    assert "1 done, 0 skipped, 0 failed" in result.stderr


def test_tcga_without_mpp_is_one_line_naming_mpp_then_works_with_it(tcga_slide: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = wsi("tile", tcga_slide, "--out", out)
    assert result.exit_code == 1
    [line] = error_lines(result.stderr)
    assert "tcga-cr-7395-01a-01-ts1.svs" in line and "--mpp" in line
    assert "Traceback" not in result.stderr and not store_path(out, "tcga-cr-7395-01a-01-ts1").exists()

    result = wsi("tile", tcga_slide, "--out", out, "--mpp", 0.5)
    assert result.exit_code == 0, result.stderr
    meta = read_tile_store(store_path(out, "tcga-cr-7395-01a-01-ts1")).meta
    assert (meta.mpp_level0, meta.mpp_source, meta.tile_px_level0) == (0.5, "fallback", 512)


def test_bad_files_among_good_ones(cmu_slide: Path, cmu_pyramid_slide: Path, tmp_path: Path) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy2(cmu_slide, folder)
    shutil.copy2(cmu_pyramid_slide, folder)
    (folder / "x.svs").write_text("a text file renamed to .svs\n")
    (folder / "zero.svs").touch()
    out = tmp_path / "out"
    result = wsi("tile", folder, "--out", out)
    assert result.exit_code == 1
    assert (
        store_path(out, "CMU-1-Small-Region").exists()
        and store_path(out, "CMU-1-Small-Region_pyramid4").exists()
    )
    assert not store_path(out, "x").exists() and not store_path(out, "zero").exists()
    lines = error_lines(result.stderr)
    assert (
        len(lines) == 2 and "x.svs: not a readable slide" in lines[0] and "zero.svs: empty file" in lines[1]
    )
    assert "2 done, 0 skipped, 2 failed" in result.stderr and "Traceback" not in result.stderr


def test_blank_slide_is_a_loud_warning_not_a_failure(slide_factory, tmp_path: Path) -> None:
    path = slide_factory("blank.tif", blank_glass(2600, 2100), mpp=0.5)
    result = wsi("tile", path, "--out", tmp_path / "out")
    assert result.exit_code == 0
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("WARNING:")]
    assert str(path) in warning and "0 tiles kept" in warning and "tissue filter" in warning
    assert read_tile_store(store_path(tmp_path / "out", "blank")).n_tiles == 0


def test_rerun_skips_and_overwrite_redoes(cmu_slide: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert wsi("tile", cmu_slide, "--out", out).exit_code == 0
    again = wsi("tile", cmu_slide, "--out", out)
    assert again.exit_code == 0 and "0 done, 1 skipped, 0 failed" in again.stderr
    assert again.stdout.strip().endswith("CMU-1-Small-Region.qc.png")
    forced = wsi("tile", cmu_slide, "--out", out, "--overwrite")
    assert forced.exit_code == 0 and "1 done, 0 skipped, 0 failed" in forced.stderr


def test_config_file_and_options(cmu_slide: Path, tmp_path: Path) -> None:
    config = tmp_path / "tile.yaml"
    config.write_text("tile_um: 128\nmin_tissue: 0.9\n")
    result = wsi("tile", cmu_slide, "--out", tmp_path / "out", "--config", config, "--min-tissue", 0.3)
    assert result.exit_code == 0, result.stderr
    meta = read_tile_store(store_path(tmp_path / "out", "CMU-1-Small-Region")).meta
    assert meta.tile_um == 128.0 and meta.thresholds["min_tissue"] == 0.3
    assert "min_tissue: 0.3" in (tmp_path / "out" / "tile_config.yaml").read_text()


def test_config_key_typo_is_one_line(cmu_slide: Path, tmp_path: Path) -> None:
    config = tmp_path / "tile.yaml"
    config.write_text("tile_um: 256\nmin_tisue: 0.5\n")
    result = wsi("tile", cmu_slide, "--out", tmp_path / "out", "--config", config)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"error: {config}: unknown key 'min_tisue'"]
    assert not (tmp_path / "out").exists()


def test_debug_lets_the_exception_through(cmu_slide: Path, tmp_path: Path) -> None:
    config = tmp_path / "tile.yaml"
    config.write_text("min_tisue: 0.5\n")
    result = wsi("tile", cmu_slide, "--out", tmp_path / "out", "--config", config, "--debug")
    assert isinstance(result.exception, ConfigError)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "empty").mkdir() or d / "empty", "no slide files in this folder or below"),
        (lambda d: d / "missing.svs", "missing.svs: no such file or folder"),
    ],
)
def test_argument_mistakes_are_one_line(tmp_path: Path, make, message: str) -> None:
    result = wsi("tile", make(tmp_path), "--out", tmp_path / "out")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line


def test_bad_option_value_is_one_line(cmu_slide: Path, tmp_path: Path) -> None:
    result = wsi("tile", cmu_slide, "--out", tmp_path / "out", "--min-tissue", 2)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: options: min_tissue:")


@pytest.mark.slow
def test_demo_command_tiles_every_bundled_slide(slides_dir: Path, tmp_path: Path) -> None:
    """What `make demo` runs."""
    out = tmp_path / "demo"
    result = wsi("tile", slides_dir, "--out", out, "--mpp", 0.5)
    assert result.exit_code == 0, result.stderr
    qc_images = [Path(line) for line in result.stdout.splitlines()]
    assert len(qc_images) == 3 and all(p.is_file() and p.name.endswith(".qc.png") for p in qc_images)


@pytest.mark.slow
def test_tcga_through_tiatoolbox_masker(tcga_slide: Path, tmp_path: Path) -> None:
    """tiatoolbox.tools imports for ~30 s or more, hence slow."""
    result = wsi("tile", tcga_slide, "--out", tmp_path / "out", "--mpp", 0.5, "--tissue-method", "tiatoolbox")
    assert result.exit_code == 0, result.stderr
    store = read_tile_store(store_path(tmp_path / "out", "tcga-cr-7395-01a-01-ts1"))
    assert store.meta.tissue_method == "tiatoolbox" and store.n_tiles > 10
    assert 0.3 < store.tissue_mask.mean() < 0.9


def test_objective_power_typed_as_mpp_is_one_line_about_um_per_px(tcga_slide: Path, tmp_path: Path) -> None:
    """It once read 247,916 tiles of 6 px for 6 minutes, kept none and exited 0."""
    result = wsi("tile", tcga_slide, "--out", tmp_path / "out", "--mpp", 40)
    assert result.exit_code == 1
    [line] = error_lines(result.stderr)
    assert "40 µm/px (from --mpp) is not a plausible resolution" in line and "objective power" in line
    assert "tiles read" not in result.stderr


def test_a_folder_of_plain_images_is_tiled_like_its_files(cmu_slide: Path, tmp_path: Path) -> None:
    """PNG/JPEG images need --mpp; tiatoolbox's log lines ("Raw data is None", "Unknown scale") stay out
    of the terminal and stdout lists only the QC images."""
    from tests.synthetic import read_level0

    pixels = read_level0(cmu_slide)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(pixels[1000:1800, 600:1400]).save(folder / "crop-a.png")
    Image.fromarray(pixels[1800:2600, 600:1400]).save(folder / "crop-b.jpg", quality=90)
    without = wsi("tile", folder, "--out", tmp_path / "none")
    assert without.exit_code == 1 and len(error_lines(without.stderr)) == 2 and "--mpp" in without.stderr

    result = wsi("tile", folder, "--out", tmp_path / "out", "--mpp", 0.5, "--tile-um", 128)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [str(tmp_path / "out" / f"crop-{x}.qc.png") for x in "ab"]
    assert "Raw data is None" not in result.output and "Unknown scale" not in result.output
    for slide_id in ("crop-a", "crop-b"):
        meta = read_tile_store(store_path(tmp_path / "out", slide_id)).meta
        assert meta.mpp_source == "fallback" and meta.n_kept > 0
