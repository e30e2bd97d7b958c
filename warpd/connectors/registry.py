"""Connectors by type name.

Built-in connectors register here on import of :mod:`warpd.connectors.builtin`;
third-party packages add theirs through the ``warpd.connectors`` entry-point
group (the entry point's module registers on import).  Factories import their
database drivers lazily, so listing connectors needs no driver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from warpd.errors import ConfigError

SourceFactory = Callable[..., Any]
DestinationFactory = Callable[..., Any]

UriCheck = Callable[[str], None]

log = logging.getLogger(__name__)

_SOURCES: dict[str, SourceFactory] = {}
_DESTINATIONS: dict[str, DestinationFactory] = {}
# (role, type) -> the connector's own URI check, run by configuration validation before any connection
_URI_CHECKS: dict[tuple[str, str], UriCheck] = {}
# source type -> the schema modes it can run ("stream": a change log; "batch": periodic reads)
_SOURCE_MODES: dict[str, tuple[str, ...]] = {}
_loaded_entry_points = False
# entry point "name = module" -> why it failed to load; named whenever a connector is not found
_BROKEN: dict[str, str] = {}


def register_source(
    name: str, check_uri: UriCheck | None = None, modes: tuple[str, ...] = ("stream",)
) -> Callable[[SourceFactory], SourceFactory]:
    """Register a source factory; ``check_uri(uri)`` raises ConfigError for a URI the connector cannot use;
    ``modes`` are the schema modes it can run: ``"stream"`` (it reads a change log: ``Source.stream``)
    and/or ``"batch"`` (it reads rows by a cursor column: ``Source.read_since``; docs/batch-mode.md)."""

    def deco(factory: SourceFactory) -> SourceFactory:
        _SOURCES[name] = factory
        _SOURCE_MODES[name] = tuple(modes)
        if check_uri is not None:
            _URI_CHECKS["source", name] = check_uri
        return factory

    return deco


def register_destination(
    name: str, check_uri: UriCheck | None = None
) -> Callable[[DestinationFactory], DestinationFactory]:
    """Register a destination factory; ``check_uri`` as for :func:`register_source`."""

    def deco(factory: DestinationFactory) -> DestinationFactory:
        _DESTINATIONS[name] = factory
        if check_uri is not None:
            _URI_CHECKS["destination", name] = check_uri
        return factory

    return deco


def check_endpoint(role: str, name: str, uri: str) -> None:
    """ConfigError when no connector serves ``role`` ("source"/"destination") for type *name*, or when its
    URI check refuses *uri*; what start-up would refuse, found without connecting."""
    (source_factory if role == "source" else destination_factory)(name)
    check = _URI_CHECKS.get((role, name))
    if check is not None:
        check(uri)


def source_modes(name: str) -> tuple[str, ...]:
    """The schema modes the source connector of type *name* runs (ConfigError when there is none)."""
    source_factory(name)
    return _SOURCE_MODES.get(name, ("stream",))


def plugin_scheme(scheme: str) -> str | None:
    """The connector type a URI scheme unknown to the built-in connectors stands for: a connector
    registered under that very name (a plugin's type is its scheme, e.g. ``sqlite://``), else None."""
    _load()
    return scheme if scheme in _SOURCES or scheme in _DESTINATIONS else None


def _load() -> None:
    global _loaded_entry_points
    import warpd.connectors.builtin  # noqa: F401 - registers the built-in connectors

    if not _loaded_entry_points:
        _loaded_entry_points = True
        for ep in entry_points(group="warpd.connectors"):
            try:
                ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the others
                # reported, not swallowed: the user who installed it needs to know why its type is missing
                why = f"{type(exc).__name__}: {exc}"
                _BROKEN[f"{ep.name} = {ep.value}"] = why
                log.warning("connector plugin %s = %s failed to load (%s)", ep.name, ep.value, why)


def _broken_plugins() -> str:
    if not _BROKEN:
        return ""
    failures = "; ".join(f"{ep} failed to load ({why})" for ep, why in sorted(_BROKEN.items()))
    return f"; connector plugins that did not load: {failures}"


def source_factory(name: str) -> SourceFactory:
    _load()
    if name not in _SOURCES:
        raise ConfigError(
            f"source.type: no source connector {name!r} (available: {', '.join(sorted(_SOURCES))})"
            f"{_broken_plugins()}"
        )
    return _SOURCES[name]


def destination_factory(name: str) -> DestinationFactory:
    _load()
    if name not in _DESTINATIONS:
        raise ConfigError(
            f"destination.type: no destination connector {name!r} "
            f"(available: {', '.join(sorted(_DESTINATIONS))}){_broken_plugins()}"
        )
    return _DESTINATIONS[name]
