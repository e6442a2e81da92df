import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tests.extract.cli_app import app
from wsi_pipeline.config import load_config
from wsi_pipeline.extract.config import ExtractConfig

REPO = Path(__file__).resolve().parents[2]


def test_options_override_the_file(tmp_path: Path) -> None:
    config_file = tmp_path / "extract.yaml"
    config_file.write_text("batch_size: 8\ndtype: float32\n")
    config = load_config(ExtractConfig, config_file, {"batch_size": 16, "dtype": None})
    assert (config.batch_size, config.dtype) == (16, "float32")


def test_unknown_config_key_is_one_line_error(tmp_path: Path) -> None:
    config_file = tmp_path / "extract.yaml"
    config_file.write_text("batch_sise: 8\n")
    result = CliRunner().invoke(app, [str(tmp_path), "--config", str(config_file)])
    assert result.exit_code == 1
    assert "unknown key 'batch_sise'" in result.output
    assert "Traceback" not in result.output


def test_bad_option_value_names_the_choices(tmp_path: Path) -> None:
    """The option's choices are the config field's Literal (cli/common.literal_choices): a usage error."""
    result = CliRunner().invoke(app, [str(tmp_path), "--dtype", "float64"])
    assert result.exit_code == 2
    assert "--dtype" in result.output and "float64" in result.output and "float16" in result.output
    result = CliRunner().invoke(app, [str(tmp_path), "--stain-norm", "macenk"])
    assert result.exit_code == 2 and "vahadane" in result.output


def test_registered_in_wsi_and_help_stays_light() -> None:
    from cli.main import app as wsi

    result = CliRunner().invoke(wsi, ["extract", "--help"])
    assert result.exit_code == 0 and "--slides-root" in result.output and "--random-init" in result.output
    heavy = ("torch", "h5py", "openslide", "zarr", "timm", "tiatoolbox")
    probe = f"import sys, cli.extract; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert loaded.stdout.strip() == "[]"
