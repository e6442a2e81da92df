"""Each default is stated once, in the stage's pydantic model: the CLI's help and choices come from it, and
`--print-config` shows the settings a command would run with."""

import re
from enum import Enum
from pathlib import Path

import click
import pytest
import typer
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from cli.common import field_help
from cli.main import app
from wsi_pipeline.config import load_config
from wsi_pipeline.evaluate.config import EvalConfig
from wsi_pipeline.extract.config import ExtractConfig
from wsi_pipeline.tiling.config import TileConfig
from wsi_pipeline.train.config import TrainConfig

STAGES: dict[str, type[BaseModel]] = {
    "tile": TileConfig,
    "extract": ExtractConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


def _options(stage: str) -> dict[str, click.Parameter]:
    command = typer.main.get_command(app).commands[stage]  # type: ignore[attr-defined]
    return {p.name: p for p in command.params if p.name}


DERIVED_AT_LEAST = {"tile": 8, "extract": 3, "train": 15, "eval": 10}


@pytest.mark.parametrize("stage", list(STAGES))
def test_option_help_comes_from_the_config_fields(stage: str) -> None:
    """Options named after a setting show the model's own default (so help cannot drift from it), and
    most say what the model's field says."""
    model, defaults = STAGES[stage], STAGES[stage]()
    derived = 0
    for name, param in _options(stage).items():
        field = model.model_fields.get(name)
        if field is None or not isinstance(param, click.Option):
            continue
        help_text = " ".join((param.help or "").split())
        shown = re.search(r"\\?\[default: ([^\]]*)\]", help_text)
        if shown and "per model" not in shown.group(1):
            value = getattr(defaults, name)
            assert shown.group(1).lower() in (str(value).lower(), _listed(value)), (name, help_text, value)
        if field.description and " ".join(field.description.split()[:4]) in help_text:
            derived += 1
    assert derived >= DERIVED_AT_LEAST[stage], f"wsi {stage}: {derived} options derive their help"


def _listed(value: object) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, tuple | list) else str(value).lower()


@pytest.mark.parametrize("stage", list(STAGES))
def test_option_choices_are_the_config_fields_choices(stage: str) -> None:
    """A `--x` with fixed choices offers exactly what the model's `Literal` accepts."""
    model = STAGES[stage]
    for name, param in _options(stage).items():
        field = model.model_fields.get(name)
        if field is None or not isinstance(param.type, click.Choice):
            continue
        accepted = {c.value if isinstance(c, Enum) else c for c in param.type.choices}
        for choice in accepted:
            model.model_validate({name: choice})  # raises if the CLI offers what the model refuses


def test_field_help_states_the_default_once_from_the_model() -> None:
    assert field_help(TrainConfig, "lr").endswith(f"\\[default: {TrainConfig().lr}]")
    assert "default" not in field_help(TrainConfig, "max_tiles")  # None: nothing to state
    assert field_help(TrainConfig, "patience", default="per model").endswith("\\[default: per model]")


@pytest.mark.parametrize(
    ("args", "model", "first"),
    [
        (["train", "--out", "{tmp}/run", "--model", "abmil", "--lr", "0.5"], TrainConfig, "epochs"),
        (["eval", "--run", "{tmp}/run", "--top-k", "3"], EvalConfig, "n_bootstrap"),
        (["tile", "{tmp}/slides", "--out", "{tmp}/tiles", "--tile-px", "256"], TileConfig, "tile_um"),
        (
            ["extract", "{tmp}/tiles", "--out", "{tmp}/features", "--dtype", "float32"],
            ExtractConfig,
            "batch_size",
        ),
    ],
)
def test_print_config_shows_the_resolved_settings_and_runs_nothing(
    args: list[str], model: type[BaseModel], first: str, tmp_path: Path
) -> None:
    """`first` is set by the --config file, the last option on the command line overrides its setting."""
    option, key = args[-1], args[-2].lstrip("-").replace("-", "_")  # the last option given
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"{first}: 7\n")
    argv = [a.format(tmp=tmp_path) for a in args] + ["--config", str(preset), "--print-config"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    printed = tmp_path / "printed.yaml"
    printed.write_text(result.stdout)
    shown = load_config(model, printed)  # what --config reads back
    assert getattr(shown, first) == 7  # the file's value
    value = getattr(shown, key)  # the option won over the file and the default
    assert float(value) == float(option) if isinstance(value, int | float) else str(value) == option
    assert set(yaml.safe_load(result.stdout)) == set(model.model_fields)  # every setting, defaults too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preset.yaml", "printed.yaml"]  # nothing ran
