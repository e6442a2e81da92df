"""Reading a YAML mapping (a `--config` file, a run's `config.yaml`) with one-line errors.

It sits in `stores/` because run folders are read through it, and `stores/` imports nothing above itself;
`wsi_pipeline.config` validates what it returns.
"""

from pathlib import Path
from typing import Any

import yaml

from wsi_pipeline.errors import ConfigError


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The mapping in the YAML file `path` ({} for an empty file); anything else is a one-line error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values, got {type(data).__name__}")
    return data
