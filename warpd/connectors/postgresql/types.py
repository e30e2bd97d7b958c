"""PostgreSQL column types for the shared type set, and COPY text encoding of canonical values.

:func:`pg_type_sql` is the DDL type for a :class:`~warpd.types.ColumnType`;
:func:`copy_encoder` returns, once per column, the function that renders one
canonical value as a field of ``COPY ... FROM STDIN`` in text format.  The
encoders run per value on the hot path, so each kind gets its own small
function and none of them inspects the kind again.

PostgreSQL text cannot hold NUL (U+0000), and jsonb rejects the ``\\u0000``
escape.  Such a value raises :class:`TextNulError`: the engine dead-letters the
row rather than silently altering data (stripping could also make two
distinct keys collide).  See docs/type-mapping.md.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from warpd.types import ColumnType, Kind

Encoder = Callable[[Any], str]

COPY_NULL = "\\N"
_NUMERIC_MAX_PRECISION = 1000

_JSON_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_UTC = _dt.UTC


class TextNulError(ValueError):
    """A text or JSON value holds NUL, which PostgreSQL cannot store."""


def pg_type_sql(ct: ColumnType) -> str:
    """The PostgreSQL type (as used in DDL) for a shared type."""
    kind = ct.kind
    if kind is Kind.INT:
        return {16: "smallint", 32: "integer"}.get(ct.bits or 64, "bigint")
    if kind is Kind.DECIMAL:
        if ct.precision is None or ct.precision > _NUMERIC_MAX_PRECISION:
            return "numeric"
        return f"numeric({ct.precision},{ct.scale or 0})"
    if kind is Kind.FLOAT:
        return "real" if ct.bits == 32 else "double precision"
    if kind is Kind.BITS:
        return f"bit({ct.length})" if ct.length else "bit varying"
    if kind is Kind.TIME:
        return "interval"  # MySQL TIME runs from -838:59:59 to 838:59:59
    if kind is Kind.TIMESTAMP:
        return (
            "timestamp without time zone"
            if ct.precision is None
            else f"timestamp({ct.precision}) without time zone"
        )
    if kind is Kind.TIMESTAMPTZ:
        return (
            "timestamp with time zone"
            if ct.precision is None
            else f"timestamp({ct.precision}) with time zone"
        )
    return _SIMPLE_TYPES[kind]


_SIMPLE_TYPES = {
    Kind.BOOLEAN: "boolean",
    Kind.TEXT: "text",
    Kind.BYTES: "bytea",
    Kind.DATE: "date",
    Kind.JSON: "jsonb",
    Kind.UUID: "uuid",
    Kind.TEXT_ARRAY: "text[]",
}


def _text(value: str) -> str:
    if "\x00" in value:
        raise TextNulError("text contains NUL (\\x00), which PostgreSQL cannot store")
    # COPY text format: backslash starts an escape; tab, newline and carriage return end fields
    # and rows.  A replace() chain beats str.translate() here, most values needing no escape at all.
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _json(value: str) -> str:
    if "\\u0000" in value and _JSON_NUL_ESCAPE.search(value):
        raise TextNulError("JSON contains \\u0000, which jsonb cannot store")
    return _text(value)


def _float(value: float) -> str:
    if math.isfinite(value):
        return repr(float(value))
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _decimal(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")  # never exponent form; keeps the scale ('0E-30' -> 30 zeros)
    return str(value)


def _bytes(value: bytes) -> str:
    return "\\\\x" + value.hex()  # bytea hex input; the backslash itself is COPY-escaped


def _bool(value: bool) -> str:
    return "t" if value else "f"


def _date(value: Any) -> str:
    return value if isinstance(value, str) else value.isoformat()  # 'infinity' / '-infinity' as given


def _timestamp(value: Any) -> str:
    return value if isinstance(value, str) else value.isoformat(" ")


def _timestamptz(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is not _UTC:
        value = value.astimezone(_UTC) if value.tzinfo is not None else value.replace(tzinfo=_UTC)
    return value.isoformat(" ")


def _interval(value: _dt.timedelta) -> str:
    # [-]H:MM:SS.ffffff: PostgreSQL applies a leading sign to the whole time field, hours unbounded.
    micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    seconds, micro = divmod(abs(micros), 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"{sign}{hours}:{minute:02d}:{second:02d}.{micro:06d}"


def _array_element(value: str | None) -> str:
    if value is None:
        return "NULL"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text_array(value: list[str | None]) -> str:
    return _text("{" + ",".join(_array_element(v) for v in value) + "}")


_ENCODERS: dict[Kind, Encoder] = {
    Kind.BOOLEAN: _bool,
    Kind.INT: str,
    Kind.DECIMAL: _decimal,
    Kind.FLOAT: _float,
    Kind.TEXT: _text,
    Kind.BYTES: _bytes,
    Kind.BITS: str,
    Kind.DATE: _date,
    Kind.TIME: _interval,
    Kind.TIMESTAMP: _timestamp,
    Kind.TIMESTAMPTZ: _timestamptz,
    Kind.JSON: _json,
    Kind.UUID: str,
    Kind.TEXT_ARRAY: _text_array,
}


def copy_encoder(ct: ColumnType) -> Encoder:
    """The function that renders one canonical value of ``ct`` as a COPY text-format field.

    ``None`` becomes ``\\N``.  Raises :class:`TextNulError` for text, JSON or
    text-array values containing NUL.
    """
    encode = _ENCODERS[ct.kind]

    def encode_field(value: Any) -> str:
        return COPY_NULL if value is None else encode(value)

    return encode_field
