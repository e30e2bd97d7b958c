"""Connectors by type name.

Built-in connectors register here on import of :mod:`warpd.connectors.builtin`;
third-party packages add theirs through the ``warpd.connectors`` entry-point
group (the entry point's module registers on import).  Factories import their
database drivers lazily, so listing connectors needs no driver.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from warpd.errors import ConfigError

SourceFactory = Callable[..., Any]
DestinationFactory = Callable[..., Any]

_SOURCES: dict[str, SourceFactory] = {}
_DESTINATIONS: dict[str, DestinationFactory] = {}
_loaded_entry_points = False


def register_source(name: str) -> Callable[[SourceFactory], SourceFactory]:
    def deco(factory: SourceFactory) -> SourceFactory:
        _SOURCES[name] = factory
        return factory

    return deco


def register_destination(name: str) -> Callable[[DestinationFactory], DestinationFactory]:
    def deco(factory: DestinationFactory) -> DestinationFactory:
        _DESTINATIONS[name] = factory
        return factory

    return deco


def _load() -> None:
    global _loaded_entry_points
    import warpd.connectors.builtin  # noqa: F401 - registers the built-in connectors

    if not _loaded_entry_points:
        _loaded_entry_points = True
        for ep in entry_points(group="warpd.connectors"):
            try:
                ep.load()
            except Exception:  # noqa: BLE001, S112 - a broken plugin must not stop the core
                continue


def source_factory(name: str) -> SourceFactory:
    _load()
    if name not in _SOURCES:
        raise ConfigError(
            f"source.type: no source connector {name!r} (available: {', '.join(sorted(_SOURCES))})"
        )
    return _SOURCES[name]


def destination_factory(name: str) -> DestinationFactory:
    _load()
    if name not in _DESTINATIONS:
        raise ConfigError(
            f"destination.type: no destination connector {name!r} "
            f"(available: {', '.join(sorted(_DESTINATIONS))})"
        )
    return _DESTINATIONS[name]
