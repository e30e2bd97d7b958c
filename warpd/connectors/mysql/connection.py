"""Connecting to MySQL/MariaDB: URI parsing, identifier quoting, error mapping."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pymysql

from warpd.connectors.uri import check_port, escape_hint
from warpd.errors import ConfigError, FatalError, TransientError
from warpd.redact import redact

# Client error codes that mean the connection or the server went away.
_CONNECTION_LOST = {2003, 2006, 2013, 2055, 1053, 1927}
# Server error codes worth retrying: lock wait timeout, deadlock, too many
# connections, server shutting down, query interrupted by a restart.
_RETRYABLE = {1205, 1213, 1040, 1053, 1927, 2002}
_ACCESS_DENIED = {1044, 1045, 1142, 1227, 1698, 1370}


@dataclass(frozen=True)
class MySQLParams:
    host: str
    port: int
    user: str
    password: str
    database: str | None
    uri: str

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password_bytes,
            "charset": "utf8mb4",
            "connect_timeout": 10,
            "autocommit": True,
        }

    @property
    def password_bytes(self) -> bytes:
        # PyMySQL encodes a str password as latin-1: "€" raises, "é" becomes a byte the server never
        # hashed. MariaDB/MySQL hash the password's bytes as a utf8mb4 client sent them: UTF-8.
        return self.password.encode("utf-8")

    @property
    def redacted(self) -> str:
        return redact(self.uri)


def parse_uri(uri: str, where: str = "source.connection_string") -> MySQLParams:
    """The connection parameters of a ``mysql://`` or ``mariadb://`` URI; ConfigError naming what is wrong.

    Validation (``--validate-config``) and start-up both call this, so a URI
    passes one exactly when it passes the other.  Messages never echo the URI
    nor a part of it: with an unescaped ``@`` or ``/`` in the password, or no
    ``@HOST`` at all (``mysql://warp:secret``), the "host" or "port" a parser
    sees is the password or a piece of it, which no redaction can recognise.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
        port_text = parts.netloc.rpartition("@")[2]
        hostname = parts.hostname
        password = parts.password
    except ValueError:
        raise ConfigError(f"{where}: cannot be parsed as a URI{escape_hint(uri)}") from None
    if parts.scheme.lower() not in ("mysql", "mariadb"):
        raise ConfigError(f"{where}: not a mysql:// or mariadb:// URI")
    if not hostname:
        raise ConfigError(f"{where}: names no host (mysql://USER:PASSWORD@HOST:PORT/DATABASE)")
    if port_text.startswith("["):
        port_text = port_text.partition("]")[2]
    try:
        check_port(port_text.partition(":")[2] if ":" in port_text else None, uri)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    database = urllib.parse.unquote(parts.path.lstrip("/")) or None
    return MySQLParams(
        host=hostname,
        port=parts.port or 3306,
        user=urllib.parse.unquote(parts.username or "root"),
        password=urllib.parse.unquote(password or ""),
        database=database,
        uri=uri,
    )


def quote_ident(name: str) -> str:
    """Quote one MySQL identifier (the only place identifiers are quoted for MySQL).

    PyMySQL has no identifier helper; MySQL's rule is a backtick-delimited
    name with embedded backticks doubled.  NUL cannot appear in a MySQL name.
    """
    if "\x00" in name:
        raise ValueError("MySQL identifiers cannot contain NUL")
    return "`" + name.replace("`", "``") + "`"


BIND = "\x00"
"""Marks where a bound value goes in a statement built with quoted names; see :func:`execute_bound`."""


def execute_bound(cur: Any, statement: str, args: Sequence[Any]) -> None:
    """Run ``statement`` with ``args`` bound at its :data:`BIND` marks.

    PyMySQL binds values by ``%`` formatting, so a ``%`` inside a quoted name
    (``pct%s``) would be read as a placeholder.  Every ``%`` of the statement
    is therefore made literal and only the marks (NUL, which no MySQL name can
    hold) become placeholders.
    """
    cur.execute(statement.replace("%", "%%").replace(BIND, "%s"), tuple(args))


def qualified(database: str, table: str) -> str:
    return f"{quote_ident(database)}.{quote_ident(table)}"


def error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def is_transient(exc: BaseException) -> bool:
    code = error_code(exc)
    if isinstance(exc, (pymysql.err.InterfaceError, ConnectionError, OSError)):
        return True
    if isinstance(exc, pymysql.err.OperationalError):
        return code in _CONNECTION_LOST or code in _RETRYABLE
    return code in _RETRYABLE


def classify(exc: BaseException, params: MySQLParams, doing: str) -> Exception:
    """Turn a driver exception into a FatalError or TransientError with an actionable message."""
    code = error_code(exc)
    detail = redact(exc.args[1] if len(getattr(exc, "args", ())) > 1 else exc)
    where = params.redacted
    if code in _ACCESS_DENIED:
        return FatalError(
            f"MySQL source {where}: access denied while {doing} ({detail}). Check the user and "
            "password, and grant SELECT, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT "
            "(BINLOG MONITOR on MariaDB) to it; scripts/setup-databases.sh shows the grants."
        )
    if code == 1049:
        return FatalError(
            f"MySQL source {where}: {detail}; check the database name in the URI or "
            "the schema's source_database"
        )
    if is_transient(exc):
        return TransientError(f"MySQL source {where}: {detail} while {doing}")
    return FatalError(f"MySQL source {where}: {detail} while {doing}")


def connect(params: MySQLParams, doing: str = "connecting", **extra: Any) -> pymysql.connections.Connection:
    try:
        return pymysql.connect(**params.connect_kwargs(), **extra)
    except pymysql.err.MySQLError as exc:
        raise classify(exc, params, doing) from exc
