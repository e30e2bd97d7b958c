"""Snapshot rows encoded by the MySQL server itself, as PostgreSQL COPY text.

Reading rows with PyMySQL and converting every value in Python caps the
snapshot at roughly 30k rows/s on a small machine; most of the time goes to
parsing ten length-coded fields per row and building Python objects that are
immediately turned back into text.  For column kinds whose MySQL text form is
already valid PostgreSQL input (integers, decimals, text, dates, ...), the
server can build the COPY field itself: one string per row, no per-value
Python work.  This is an optimisation of the snapshot only, used when the
destination accepts COPY text; it must produce the same destination value
as the canonical path (tests/test_type_mapping.py checks every type both
ways).  Kinds without an exact SQL form (32-bit FLOAT, SET, INET) keep
the canonical Python path, column by column.
"""

from __future__ import annotations

from warpd.connectors.mysql.types import NOT_NULL_ZERO_DATE
from warpd.types import Column, Kind

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


def _escaped(expr: str) -> str:
    for needle, replacement in _ESCAPES:
        expr = f"REPLACE({expr}, {needle}, {replacement})"
    return expr


def copy_text_expr(col: Column, quoted: str) -> str | None:
    """SQL producing ``col``'s COPY text field (``\\N`` for NULL), or None to use the Python path."""
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
        value = f"CONCAT({_BS}, {_BS}, 'x', HEX({quoted}))"
    elif kind is Kind.BITS:
        value = f"LPAD(BIN({quoted}), {int(ct.length or 1)}, '0')"
    elif kind is Kind.TIME:
        value = f"CAST({quoted} AS CHAR)"
    elif kind in (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        zero = _NULL if col.nullable else f"'{NOT_NULL_ZERO_DATE}'"
        text = f"CAST({quoted} AS CHAR)"
        if kind is Kind.TIMESTAMPTZ:
            text = f"CONCAT({text}, '+00')"  # the session's time_zone is UTC
        value = (
            f"CASE WHEN YEAR({quoted}) = 0 OR MONTH({quoted}) = 0 OR DAY({quoted}) = 0 "
            f"THEN {zero} ELSE {text} END"
        )
    else:
        return None
    return f"IFNULL({value}, {_NULL})"


def line_expr(exprs: list[str]) -> str:
    """One COPY line (without newline) from field expressions."""
    return f"CONCAT_WS(CHAR(9 USING utf8mb4), {', '.join(exprs)})"
