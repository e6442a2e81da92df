"""Stage configuration: code defaults < `--config FILE` (YAML) < command-line options.

Each stage has a pydantic model with `extra="forbid"` that states every default once; `wsi <stage>
--print-config` shows the resolved settings in the format `--config` reads. Errors become one line that
names the offending key, because a typo in a config file is the most common mistake and a pydantic dump is
not a message.
"""

from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from wsi_pipeline.errors import ConfigError
from wsi_pipeline.stores.atomic import write_text_atomic
from wsi_pipeline.stores.yaml_file import read_yaml_mapping

M = TypeVar("M", bound=BaseModel)
__all__ = [
    "describe_validation_error",
    "dump_config",
    "load_config",
    "read_yaml_mapping",
    "write_resolved_config",
]


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line: `source: key: problem; other.key: problem`."""
    parts = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            parts.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
    return f"{source}: " + "; ".join(parts)


def load_config(
    model: type[M], config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> M:
    """Validate defaults + the YAML file + options that were given (None means 'not given')."""
    values: dict[str, Any] = {}
    source = "options"
    if config_file is not None:
        values.update(read_yaml_mapping(config_file))
        source = f"{config_file}"
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(given)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from exc


def dump_config(config: BaseModel) -> str:
    """YAML that `load_config` reads back into an equal config (JSON mode would turn an infinite or NaN
    value of a free-form field, e.g. in `model_overrides`, into null)."""
    return yaml.safe_dump(_yaml_values(config.model_dump(mode="python")), sort_keys=False, allow_unicode=True)


def _yaml_values(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _yaml_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_yaml_values(v) for v in value]
    if value is None or type(value) in (str, int, float, bool):
        return value
    for kind in (bool, int, float, str):  # subclasses (enums) as their plain value
        if isinstance(value, kind):
            return kind(value.value if isinstance(value, Enum) else value)
    return to_jsonable_python(value)  # paths and anything else, as JSON would write them


def write_resolved_config(path: Path, config: BaseModel) -> None:
    """The exact settings an output was made with, next to it, so it can be reproduced."""
    write_text_atomic(path, dump_config(config))
