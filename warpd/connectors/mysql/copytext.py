"""Snapshot rows encoded by the MySQL server itself, as PostgreSQL COPY text or MySQL LOAD DATA text.

Reading rows with PyMySQL and converting every value in Python caps the
snapshot at roughly 30k rows/s on a small machine; most of the time goes to
parsing ten length-coded fields per row and building Python objects that are
immediately turned back into text.  For column kinds whose MySQL text form is
already valid PostgreSQL input (integers, decimals, text, dates, ...), the
server can build the COPY field itself: one string per row, no per-value
Python work.  This is an optimisation of the snapshot only, used when the
destination accepts one of the two formats (:data:`~warpd.connectors.base.PG_COPY_TEXT`,
:data:`~warpd.connectors.base.MYSQL_LOAD_TEXT`; they differ only in how bytes
and time-zoned timestamps are spelt); it must produce the same destination value
as the canonical path (tests/test_type_mapping.py checks every type both
ways).  Kinds without an exact SQL form (32-bit FLOAT, SET, INET) keep
the canonical Python path, column by column.

Two kinds of value must not be encoded by the server (see
:func:`deferral_condition`): a value whose encoding would exceed
``max_allowed_packet`` (MariaDB then returns NULL with a warning, which must
never pass as data), and a long text value containing characters to escape,
because the server's ``REPLACE`` costs time quadratic in the number of
occurrences.  Such a field is sent as :data:`DEFERRED` and the snapshot reads
the raw value separately and encodes it here, in Python (:func:`python_encoder`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from warpd.connectors.base import MYSQL_LOAD_TEXT, PG_COPY_TEXT
from warpd.connectors.mysql.types import NOT_NULL_ZERO_DATE, max_byte_length
from warpd.types import Column, Kind

FORMATS = (PG_COPY_TEXT, MYSQL_LOAD_TEXT)
"""The bulk formats the server can produce (the MySQL source's ``bulk_formats``)."""

_BS = "CHAR(92 USING utf8mb4)"
_NULL = f"CONCAT({_BS}, 'N')"
# COPY text escapes: backslash first, then the three control characters.
_ESCAPES = (
    (_BS, f"CONCAT({_BS}, {_BS})"),
    ("CHAR(9 USING utf8mb4)", f"CONCAT({_BS}, 't')"),
    ("CHAR(10 USING utf8mb4)", f"CONCAT({_BS}, 'n')"),
    ("CHAR(13 USING utf8mb4)", f"CONCAT({_BS}, 'r')"),
)
_PYTHON_ONLY_SOURCE_TYPES = ("inet6", "inet4")

DEFERRED = "\r"
"""The field the server sends for a value read raw instead: a carriage return never
appears unescaped in COPY text, so it cannot be mistaken for an encoded value."""
_DEFERRED_SQL = "CHAR(13 USING utf8mb4)"

ESCAPE_FREE_BYTES = 256
"""Text values up to this many bytes are always escaped by the server: even one made of
nothing but newlines costs it a few tens of microseconds.  Longer ones containing a
character to escape are escaped in Python, in time linear in their length."""

# A regular-expression class of the four characters (the backslash escaped); text, not binary,
# as MySQL 8 refuses a binary pattern against a text column.
_ESCAPED_CHARS = (
    f"CONCAT('[', {_BS}, {_BS}, CHAR(9 USING utf8mb4), CHAR(10 USING utf8mb4), {_DEFERRED_SQL}, ']')"
)


def _escaped(expr: str) -> str:
    # Most values hold nothing to escape: one REGEXP test costs the server less than the four
    # REPLACEs, each of which copies the value.
    escaped = expr
    for needle, replacement in _ESCAPES:
        escaped = f"REPLACE({escaped}, {needle}, {replacement})"
    return f"IF({expr} REGEXP {_ESCAPED_CHARS}, {escaped}, {expr})"


def copy_text_expr(
    col: Column, quoted: str, size_limit: int | None = None, fmt: str = PG_COPY_TEXT
) -> str | None:
    """SQL producing ``col``'s field in format ``fmt`` (``\\N`` for NULL), or None to use the Python path.

    With ``size_limit`` (bytes), the field is :data:`DEFERRED` wherever
    :func:`deferral_condition` holds.
    """
    value = _field_expr(col, quoted, fmt)
    if value is None:
        return None
    field = f"IFNULL({value}, {_NULL})"
    condition = deferral_condition(col, quoted, size_limit) if size_limit is not None else None
    return field if condition is None else f"IF({condition}, {_DEFERRED_SQL}, {field})"


def deferral_condition(col: Column, quoted: str, size_limit: int) -> str | None:
    """SQL true where ``col``'s value must be read raw and encoded in Python, or None if never.

    Bytes longer than ``size_limit``, whose hex form could overflow
    ``max_allowed_packet``; text longer than ``size_limit`` (escaped and
    converted to UTF-8 it may triple), or longer than :data:`ESCAPE_FREE_BYTES`
    and containing a backslash, tab, newline or carriage return.
    """
    kind = col.type.kind
    if kind not in (Kind.TEXT, Kind.JSON, Kind.BYTES) or _field_expr(col, quoted) is None:
        return None
    longest = max_byte_length(col)
    length = f"LENGTH({quoted})"
    if kind is Kind.BYTES:
        return None if longest <= size_limit else f"{length} > {int(size_limit)}"
    if longest <= min(size_limit, ESCAPE_FREE_BYTES):
        return None
    escapes = f"CONVERT({quoted} USING utf8mb4) REGEXP {_ESCAPED_CHARS}"
    if size_limit >= ESCAPE_FREE_BYTES:  # one comparison for the common short value
        return f"({length} > {ESCAPE_FREE_BYTES} AND ({length} > {int(size_limit)} OR {escapes}))"
    return f"({length} > {int(size_limit)} OR ({length} > {ESCAPE_FREE_BYTES} AND {escapes}))"


def python_encoder(col: Column, fmt: str = PG_COPY_TEXT) -> Callable[[Any], str]:
    """Encode a raw value pymysql read for a deferred ``col`` exactly as the server would have."""
    if col.type.kind is Kind.BYTES:
        if fmt == MYSQL_LOAD_TEXT:
            return lambda value: bytes(value).hex().upper()
        return lambda value: "\\\\x" + bytes(value).hex()
    return lambda value: _escape(value if isinstance(value, str) else bytes(value).decode("utf-8"))


def _escape(text: str) -> str:
    # The server's escapes (_ESCAPES), in the same order; str.replace is linear.
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _field_expr(col: Column, quoted: str, fmt: str = PG_COPY_TEXT) -> str | None:
    if fmt not in FORMATS:
        raise ValueError(f"the MySQL server encodes no {fmt!r}")
    kind, ct = col.type.kind, col.type
    if col.source_type.lower().startswith(_PYTHON_ONLY_SOURCE_TYPES):
        return None
    if kind in (Kind.INT, Kind.DECIMAL, Kind.UUID):
        value = f"CAST({quoted} AS CHAR)"
    elif kind is Kind.FLOAT and ct.bits == 64:
        value = f"CAST({quoted} AS CHAR)"  # MariaDB prints the shortest round-trip form (17 digits)
    elif kind in (Kind.TEXT, Kind.JSON):
        value = _escaped(f"CONVERT({quoted} USING utf8mb4)")  # JSON: the stored text, kept verbatim
    elif kind is Kind.BYTES:
        # COPY: bytea's escaped hex form; LOAD DATA: plain hex, which the destination UNHEXes
        value = f"HEX({quoted})" if fmt == MYSQL_LOAD_TEXT else f"CONCAT({_BS}, {_BS}, 'x', HEX({quoted}))"
    elif kind is Kind.BITS:
        value = f"LPAD(BIN({quoted}), {int(ct.length or 1)}, '0')"
    elif kind is Kind.TIME:
        value = f"CAST({quoted} AS CHAR)"
    elif kind in (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        zero = _NULL if col.nullable else f"'{NOT_NULL_ZERO_DATE}'"
        text = f"CAST({quoted} AS CHAR)"
        if kind is Kind.TIMESTAMPTZ and fmt == PG_COPY_TEXT:
            text = f"CONCAT({text}, '+00')"  # the session's time_zone is UTC (MySQL: held as UTC)
        value = (
            f"CASE WHEN YEAR({quoted}) = 0 OR MONTH({quoted}) = 0 OR DAY({quoted}) = 0 "
            f"THEN {zero} ELSE {text} END"
        )
    else:
        return None
    return value


def line_expr(exprs: list[str]) -> str:
    """One COPY line (without newline) from field expressions."""
    return f"CONCAT_WS(CHAR(9 USING utf8mb4), {', '.join(exprs)})"
