"""Checking a ``postgresql://`` URI the way libpq will read it, without connecting."""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

from warpd.connectors.uri import check_port, escape_hint, safe_detail
from warpd.errors import ConfigError

# Options libpq checks against a fixed list before it connects (case-sensitive, as libpq 17 does): a
# bad value is a configuration error, never an outage to retry.  Empty protocol versions mean "any".
_CHOICES: dict[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
    "sslnegotiation": ("postgres", "direct"),
    "ssl_min_protocol_version": ("", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
}


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
    for option, allowed in _CHOICES.items():
        value = params.get(option)
        if value is not None and value not in allowed:
            shown = ", ".join(a for a in allowed if a)
            raise ConfigError(f"{option}: {value[:40]!r} is not one of {shown} (libpq refuses it)")
