"""The shared type set every connector maps to and from.

A source describes each column with a :class:`ColumnType`; a destination maps
a :class:`ColumnType` to its own DDL.  Sources and destinations never know
about each other, only about this module (the dlt rule: types travel
source -> shared set -> destination).

Values travel as plain Python objects, one canonical form per kind, so a row
read by a snapshot query and the same row decoded from a change log compare
equal:

=============  ==========================================================
kind           canonical Python value
=============  ==========================================================
BOOLEAN        ``bool``
INT            ``int`` (``bits`` says 16/32/64; unsigned 64-bit is DECIMAL)
DECIMAL        ``decimal.Decimal`` (``precision``/``scale`` when known)
FLOAT          ``float`` (``bits`` 32 or 64); NaN and infinities allowed
TEXT           ``str``
BYTES          ``bytes``
BITS           ``str`` of ``'0'``/``'1'``, exactly ``length`` characters
DATE           ``datetime.date``, or the strings ``'infinity'``/``'-infinity'``
TIME           ``datetime.timedelta`` (may be negative or over 24 h)
TIMESTAMP      naive ``datetime.datetime`` (wall-clock, no zone), or ``'-infinity'``/``'infinity'``
TIMESTAMPTZ    aware ``datetime.datetime`` in UTC, or ``'-infinity'``/``'infinity'``
JSON           ``str`` holding JSON text
UUID           ``str`` in canonical 8-4-4-4-12 form
TEXT_ARRAY     ``list[str]``
=============  ==========================================================

``None`` is SQL NULL in every kind.

Converting into JSON (the shared rule).  When a column widens into JSON
(:attr:`~warpd.connectors.base.SchemaOpKind.EVOLVE`, sources that infer shapes),
the destination converts the values it already holds, and a source writing a
scalar into a JSON column renders it the same way, so an old row and a new
row with equal values hold equal JSON:

=============  ==========================================================
kind           JSON value
=============  ==========================================================
BOOLEAN        ``true`` / ``false``
INT            the number
DECIMAL        the number in plain notation, scale kept (``1.50``), no negative zero;
               NaN and the infinities as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
FLOAT          the shortest decimal that reads back as the same double (``0.1``, ``2``),
               non-finite values as for DECIMAL
TEXT, UUID     the string
BYTES          the string ``"\\x"`` followed by lower-case hex
TIMESTAMPTZ    the string ``"YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00"`` (UTC, trailing zeros of
               the fraction dropped)
=============  ==========================================================

(This is what PostgreSQL's ``to_jsonb`` gives in a UTC session, the first
destination's conversion; a destination that cannot reproduce it declares
``Capabilities.json_widening = False`` and the engine stops with the remedy
instead of converting.)
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from warpd.errors import FatalError


class Kind(enum.StrEnum):
    BOOLEAN = "boolean"
    INT = "int"
    DECIMAL = "decimal"
    FLOAT = "float"
    TEXT = "text"
    BYTES = "bytes"
    BITS = "bits"
    DATE = "date"
    TIME = "time"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    JSON = "json"
    UUID = "uuid"
    TEXT_ARRAY = "text_array"


@dataclass(frozen=True)
class ColumnType:
    """A column's type in the shared set; unused attributes stay ``None``."""

    kind: Kind
    bits: int | None = None  # INT: 16/32/64; FLOAT: 32/64
    precision: int | None = None  # DECIMAL digits; TIMESTAMP/TIME fractional digits
    scale: int | None = None  # DECIMAL
    length: int | None = None  # BITS length; TEXT/BYTES max length when bounded

    def describe(self) -> str:
        extras = [
            f"{k}={v}"
            for k, v in (
                ("bits", self.bits),
                ("precision", self.precision),
                ("scale", self.scale),
                ("length", self.length),
            )
            if v is not None
        ]
        return self.kind.value + (f"({', '.join(extras)})" if extras else "")


@dataclass(frozen=True)
class Column:
    """One column as the source sees it."""

    name: str
    type: ColumnType
    nullable: bool = True
    source_type: str = ""  # the source's own spelling, e.g. "bigint(20) unsigned"
    generated: bool = False  # computed by the source (a generated column)
    charset: str | None = None  # the source's character set for text columns, when it has one
    path: tuple[str, ...] | None = None  # the document path the column holds (MongoDB); None: (name,)


@dataclass(frozen=True)
class TableSchema:
    """A table's shape: its columns in source order and the key that identifies a row.

    ``key`` names the columns that identify a row.  When the source table has
    no primary key and the operator configured no ``key_columns``, ``key`` is
    empty and rows are identified by a hash of the whole row (see
    docs/type-mapping.md, "Tables without a primary key").
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()

    def column(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None

    @property
    def keyless(self) -> bool:
        return not self.key


_INT_DIGITS = {16: 5, 32: 10, 64: 19}


def is_widening(old: ColumnType, new: ColumnType) -> bool:
    """True when every value of ``old`` keeps its exact value as ``new``.

    A source that changes a column's type converts existing rows itself,
    without change events; the destination can follow with a cast only when
    the cast cannot differ from the source's conversion, i.e. it widens.
    """
    if old == new:
        return True
    if old.kind is Kind.INT and new.kind is Kind.INT:
        return (new.bits or 64) >= (old.bits or 64)
    if old.kind is Kind.INT and new.kind is Kind.DECIMAL:
        digits = _INT_DIGITS.get(old.bits or 64, 19) + (1 if (old.bits or 64) == 64 else 0)
        return new.precision is None or (new.precision - (new.scale or 0)) >= digits
    if old.kind is Kind.DECIMAL and new.kind is Kind.DECIMAL:
        if new.precision is None:
            return True
        if old.precision is None:
            return False
        return (new.scale or 0) >= (old.scale or 0) and (new.precision - (new.scale or 0)) >= (
            old.precision - (old.scale or 0)
        )
    if old.kind is Kind.FLOAT and new.kind is Kind.FLOAT:
        return (new.bits or 64) >= (old.bits or 64)
    if old.kind is new.kind and old.kind in (Kind.TEXT, Kind.BYTES):
        return new.length is None or (old.length is not None and new.length >= old.length)
    if old.kind is new.kind and old.kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ, Kind.TIME):
        return (new.precision or 0) >= (old.precision or 0)
    return False


def _numeric_json(value: Decimal) -> str:
    if value.is_nan():
        return '"NaN"'
    if value.is_infinite():
        return '"Infinity"' if value > 0 else '"-Infinity"'
    text = format(value, "f")
    return text[1:] if value.is_zero() and text.startswith("-") else text  # numeric has no -0


def json_of(ct: ColumnType, value: Any) -> str | None:
    """A canonical value of ``ct`` as JSON text, by the shared rule of :mod:`warpd.types`.

    ("Converting into JSON": what PostgreSQL's ``to_jsonb`` gives in a UTC
    session, and what a source writes for a fresh scalar in a JSON column.)
    """
    if value is None:
        return None
    kind = ct.kind
    if kind in (Kind.TEXT, Kind.UUID):
        return json.dumps(str(value), ensure_ascii=False)
    if kind is Kind.BOOLEAN:
        return "true" if value else "false"
    if kind is Kind.INT:
        return str(int(value))
    if kind is Kind.FLOAT:
        if math.isfinite(value):
            return _numeric_json(Decimal(repr(float(value)).removesuffix(".0")))
        return _numeric_json(Decimal(repr(float(value)).replace("inf", "Infinity").replace("nan", "NaN")))
    if kind is Kind.DECIMAL:
        return _numeric_json(Decimal(value))
    if kind is Kind.TIMESTAMPTZ:
        value = value.astimezone(_dt.UTC) if value.tzinfo else value
        base = value.replace(microsecond=0, tzinfo=None).isoformat()
        fraction = f".{value.microsecond:06d}".rstrip("0") if value.microsecond else ""
        return json.dumps(f"{base}{fraction}+00:00")
    if kind is Kind.BYTES:
        return json.dumps("\\x" + bytes(value).hex())
    if kind in (Kind.JSON, Kind.TEXT_ARRAY):
        return json.dumps(value, ensure_ascii=False) if kind is Kind.TEXT_ARRAY else str(value)
    raise FatalError(f"no rule turns a {ct.describe()} value into JSON in place; copy the table again")


def skip_counts(skip: int, stored: str | None) -> dict[str, int]:
    """Per-table counts of row changes after a position, from their stored JSON (``stored``), or
    from a total stored before counts were kept per table (``{"": skip}``: that many of any table)."""
    if stored:
        return {str(t): int(n) for t, n in json.loads(stored).items() if int(n)}
    return {"": skip} if skip else {}
