"""What every command shares: one-line errors, `--debug`, the consoles, and options derived from the
stages' config models (help text, choices, `--print-config`), so each default is stated once, there."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypeVar, get_args

import typer
from pydantic import BaseModel
from rich.console import Console

from wsi_pipeline.config import dump_config, load_config
from wsi_pipeline.errors import WsiError

M = TypeVar("M", bound=BaseModel)

# Progress and tables go to stderr so stdout stays clean for paths and figures a script may read.
console = Console(stderr=True)

DebugOption = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors.")


def fail(message: str, code: int = 1) -> typer.Exit:
    # Plain write, not rich: rich wraps long lines, and an error must stay on one line.
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn exceptions into one line and an exit code; `--debug` lets them through with tracebacks."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise fail("interrupted; complete outputs are kept, re-run the same command to resume", 130) from None
    except WsiError as exc:
        if debug:
            raise
        raise fail(" ".join(str(exc).split())) from None
    except Exception as exc:
        if debug:
            raise
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise fail(f"unexpected {message} (re-run with --debug for the traceback)") from None


def field_help(model: type[BaseModel], key: str, extra: str = "", default: str | None = None) -> str:
    """`--help` text of the option for `model.key`: the field's description and default, stated once there.

    Read from the pydantic class alone (no torch import), so `--help` stays instant. `default` replaces the
    field's default where another rule sets it (e.g. per model).
    """
    field = model.model_fields[key]
    value = field.get_default(call_default_factory=True)
    shown_value = default if default is not None else _shown(value)
    hidden = default is None and (value is None or value is False or value in ([], {}, ""))
    shown = "" if hidden else f" \\[default: {shown_value}]"
    text = (field.description or "").strip()
    sentence = text if not text or text.endswith(".") else f"{text}."  # a leading value name keeps its case
    return " ".join(p for p in (sentence, extra) if p) + shown


def setting_option(model: type[BaseModel], key: str, *flags: str, extra: str = "", **options: Any) -> Any:
    """The option for the setting `model.key`: `--key-with-dashes` unless `flags` name it, None by default
    ("not given", so a --config file or the code default applies), help from the field (`field_help`)."""
    names = flags or (f"--{key.replace('_', '-')}",)
    return typer.Option(None, *names, help=field_help(model, key, extra), show_default=False, **options)


ConfigOption = typer.Option(
    None, "--config", help="YAML file of settings (as --print-config prints them); options override it."
)


def _shown(value: Any) -> str:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value)
    return str(value)


def literal_choices(name: str, literal: Any) -> type[StrEnum]:
    """A `StrEnum` of a `Literal[...]`'s values, for a Typer option: the config model's type is the one
    list of allowed values, and the CLI's choices follow it."""
    return StrEnum(name, {str(v): str(v) for v in get_args(literal)})  # type: ignore[return-value]


def field_choices(model: type[BaseModel], key: str) -> type[StrEnum]:
    """The choices of the option for the setting `model.key`: the values of the field's `Literal` type, so
    the CLI offers exactly what the config model accepts."""
    return literal_choices(f"{key}_choices", model.model_fields[key].annotation)


def config_overrides(model: type[BaseModel], options: dict[str, Any]) -> dict[str, Any]:
    """The command's options that are settings of `model` (same name), enum choices as their values; None
    means "not given", so the config file or the code default applies (`wsi_pipeline.config.load_config`)."""
    return {
        key: value.value if isinstance(value, Enum) else value
        for key, value in options.items()
        if key in model.model_fields
    }


PrintConfigOption = typer.Option(
    False,
    "--print-config",
    help="Print the resolved settings (defaults < --config < options) as YAML and exit.",
)


def resolved_settings(model: type[M], config_file: Path | None, options: dict[str, Any], show: bool) -> M:
    """The settings a command runs with: `model`'s defaults < `config_file` < the command's options named
    after a setting (`config_overrides`); with `show` (`--print-config`) they are printed and the command
    exits."""
    settings = load_config(model, config_file, config_overrides(model, options))
    if show:
        print_config(settings)
    return settings


def print_config(config: BaseModel) -> None:
    """`--print-config`: the settings the command would run with, on stdout, in `--config` format."""
    sys.stdout.write(dump_config(config))
    raise typer.Exit(0)
