"""One registry shape for everything chosen by name: aggregators, tissue maskers (and extractors, score methods).

An entry is a name -> (config model, builder) pair. The config model holds the entry's settings and their
defaults (pydantic, so a mistyped setting is a one-line error); the builder makes the thing from them.
Registering a name twice is refused at import time, and asking for an unknown name is a one-line
`ConfigError` that lists the known ones. This module imports nothing heavy, so a CLI can list names cheaply.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from wsi_pipeline.errors import ConfigError

B = TypeVar("B", bound=Callable[..., Any])


class NoSettings(BaseModel):
    """The config model of an entry that takes no settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Entry(Generic[B]):
    """One registered name: its settings model, its builder and a one-line description."""

    name: str
    config: type[BaseModel]
    build: B
    description: str


class Registry(Generic[B]):
    """Name -> `Entry`; `kind` names what it holds in errors ("model", "tissue method", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[B]] = {}

    def register(
        self, name: str, config: type[BaseModel] = NoSettings, description: str = ""
    ) -> Callable[[B], B]:
        """Decorator: register the decorated builder under `name`; a second registration is refused."""

        def decorate(build: B) -> B:
            self.add(name, build, config, description)
            return build

        return decorate

    def add(self, name: str, build: B, config: type[BaseModel] = NoSettings, description: str = "") -> None:
        """Register `build` under `name` (the non-decorator form)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        config_doc = config.__doc__ if config is not NoSettings else None
        summary = description or _first_line(build.__doc__) or _first_line(config_doc)
        self._entries[name] = Entry(name=name, config=config, build=build, description=summary)

    def get(self, name: str) -> Entry[B]:
        """The entry of `name`, or a one-line `ConfigError` listing the known names."""
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[B]]:
        return iter(self._entries[name] for name in self.names())


def _first_line(doc: str | None) -> str:
    """The docstring's first paragraph on one line."""
    return " ".join((doc or "").strip().split("\n\n", 1)[0].split())
