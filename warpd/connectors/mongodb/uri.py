"""Checking a ``mongodb://`` or ``mongodb+srv://`` URI the way pymongo will read it, without connecting."""

from __future__ import annotations

from pymongo import uri_parser
from pymongo.errors import PyMongoError

from warpd.connectors.uri import escape_hint, safe_detail
from warpd.errors import ConfigError


def check_uri(uri: str) -> None:
    """ConfigError naming the problem when pymongo cannot use *uri*; messages never echo a part of it."""
    scheme, _, rest = uri.partition("://")
    srv = scheme.lower() == "mongodb+srv"
    if srv:
        # pymongo resolves SRV records while parsing: check the rest as a plain URI (no DNS lookup here),
        # plus SRV's own rule of exactly one host name without a port
        host_part = rest.partition("/")[0].rpartition("@")[2]
        if not host_part or "," in host_part or ":" in host_part:
            raise ConfigError("a mongodb+srv:// URI names exactly one host, without a port")
        uri = "mongodb://" + rest
    try:
        parsed = uri_parser.parse_uri(uri, warn=False)
    except (PyMongoError, ValueError, TypeError) as exc:
        raise ConfigError(f"pymongo cannot parse it ({safe_detail(exc)}){escape_hint(uri)}") from None
    if not parsed.get("nodelist"):
        raise ConfigError("it names no host (mongodb://USER:PASSWORD@HOST:PORT/DATABASE)")
