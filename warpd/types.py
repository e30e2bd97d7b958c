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
TIMESTAMP      naive ``datetime.datetime`` (wall-clock, no zone)
TIMESTAMPTZ    aware ``datetime.datetime`` in UTC
JSON           ``str`` holding JSON text
UUID           ``str`` in canonical 8-4-4-4-12 form
TEXT_ARRAY     ``list[str]``
=============  ==========================================================

``None`` is SQL NULL in every kind.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Kind(str, enum.Enum):
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
        extras = [f"{k}={v}" for k, v in (("bits", self.bits), ("precision", self.precision),
                                          ("scale", self.scale), ("length", self.length)) if v is not None]
        return self.kind.value + (f"({', '.join(extras)})" if extras else "")


@dataclass(frozen=True)
class Column:
    """One column as the source sees it."""

    name: str
    type: ColumnType
    nullable: bool = True
    source_type: str = ""  # the source's own spelling, e.g. "bigint(20) unsigned"
    generated: bool = False  # computed by the source (a generated column)


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
    comment: str = field(default="", compare=False)

    def column(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def keyless(self) -> bool:
        return not self.key
