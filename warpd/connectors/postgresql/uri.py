"""Checking a ``postgresql://`` URI the way libpq will read it, without connecting."""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

from warpd.connectors.uri import check_port, escape_hint, safe_detail
from warpd.errors import ConfigError


def check_uri(uri: str) -> None:
    """ConfigError naming the problem when libpq cannot use *uri*; messages never echo a part of it."""
    try:
        params = psycopg2.extensions.parse_dsn(uri)
    except psycopg2.ProgrammingError as exc:
        detail = safe_detail(str(exc).removeprefix("invalid dsn: "))
        raise ConfigError(f"libpq cannot parse it ({detail}){escape_hint(uri)}") from None
    # libpq ends the user info at the FIRST "@": the rest of a password with a raw "@" becomes the host
    hosts = [h for h in (params.get("host") or "").split(",")]
    if any("@" in h for h in hosts):
        raise ConfigError(f"its host part holds an '@'{escape_hint(uri)}")
    for port in (params.get("port") or "").split(","):
        check_port(port or None, uri)
