"""TileConfig: the documented defaults; files and options are validated with one-line errors."""

from pathlib import Path

import pytest

from wsi_pipeline.config import load_config
from wsi_pipeline.errors import ConfigError
from wsi_pipeline.tiling.config import TileConfig


def test_defaults_are_the_documented_values() -> None:
    """STAMP's geometry and brightness cut-off; the thresholds chosen in README.md (`wsi tile`)."""
    cfg = TileConfig()
    assert (cfg.tile_um, cfg.tile_px, cfg.mpp, cfg.mpp_override, cfg.tissue_method) == (
        256.0,
        224,
        None,
        False,
        "otsu",
    )
    assert (cfg.min_tissue, cfg.max_ink_fraction, cfg.white_gray, cfg.max_white_fraction) == (
        0.2,
        0.02,
        224,
        0.8,
    )
    assert (cfg.min_edge_fraction, cfg.min_focus) == (0.02, 4.0)


def test_mpp_override_without_mpp_is_one_line() -> None:
    with pytest.raises(ConfigError, match="mpp_override needs mpp") as error:
        load_config(TileConfig, None, {"mpp_override": True})
    assert "\n" not in str(error.value)
    assert load_config(TileConfig, None, {"mpp_override": True, "mpp": 0.5}).mpp_override


def test_options_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tile.yaml"
    path.write_text("tile_um: 512\nmin_tissue: 0.25\n")
    cfg = load_config(TileConfig, path, {"tile_um": 128.0, "min_tissue": None})
    assert cfg.tile_um == 128.0 and cfg.min_tissue == 0.25 and cfg.tile_px == 224


def test_key_typo_is_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "tile.yaml"
    path.write_text("tile_mu: 256\n")
    with pytest.raises(ConfigError) as error:
        load_config(TileConfig, path)
    assert "unknown key 'tile_mu'" in str(error.value) and str(path) in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("min_tissue", 1.5), ("white_gray", 300), ("tile_um", 0), ("mpp", -0.5), ("tissue_method", "magic")],
)
def test_out_of_range_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(TileConfig, None, {key: value})


def test_thresholds_cover_every_filter_setting() -> None:
    assert set(TileConfig().thresholds()) == {
        "min_tissue",
        "max_ink_fraction",
        "white_gray",
        "max_white_fraction",
        "min_edge_fraction",
        "min_focus",
    }
