"""The canonical row rendering and hashes of ``verify``, computed in Python from canonical values.

For connectors whose database cannot compute them itself (MongoDB has no MD5
in its query language; the BigQuery emulator lacks it): they read a range's
rows (only its key and compared columns) and hash them here, producing exactly
what warpd/connectors/mysql/rowhash.py and warpd/connectors/postgresql/rowhash.py
compute in SQL (the rendering is specified in docs/verify.md).  Values are the
canonical values of :mod:`warpd.types` (int, Decimal, str, bytes, bool,
date, datetime, time/timedelta, UUID or its text); None is NULL.

Database-free: no driver is imported here.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from warpd.types import Column, Kind

HASH_PREFIX_HEX = 15  # the first 60 bits of a row's MD5 enter a range's checksum


def render(kind: Kind, value: Any) -> str:
    """The canonical text of one non-NULL value of a column of ``kind`` (text without its length prefix)."""
    if kind is Kind.INT:
        return str(int(value))
    if kind is Kind.DECIMAL:
        return _decimal(value)
    if kind in (Kind.TEXT, Kind.UUID):
        return str(value)
    if kind is Kind.BYTES:
        return bytes(value).hex().upper()
    if kind is Kind.BOOLEAN:
        return "1" if value else "0"
    if kind is Kind.BITS and isinstance(value, str):  # held as its 0/1 digits (BigQuery)
        return value
    if kind is Kind.DATE:
        return _date(value)
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        if isinstance(value, _dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(_dt.UTC)
        return (
            f"{_date(value)} {value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
        )
    if kind is Kind.TIME:
        if isinstance(value, _dt.timedelta):
            return str((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds)
        return str(((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond)
    raise ValueError(f"verify: no rendering of {kind.value} values")


def _date(value: _dt.date) -> str:
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def _decimal(value: Any) -> str:
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    if not d.is_finite():
        return "NaN" if d.is_nan() else ("Infinity" if d > 0 else "-Infinity")
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def part(kind: Kind, value: Any) -> str:
    """One value as it enters a row's rendering: ``N`` for NULL, text as ``<UTF-8 bytes>:<text>``."""
    if value is None:
        return "N"
    text = render(kind, value)
    return f"{len(text.encode())}:{text}" if kind is Kind.TEXT else text


def row_hash(kinds: Sequence[Kind], values: Sequence[Any]) -> str:
    """The MD5 (lower-case hex) of a row's rendering: its values' parts joined by commas."""
    joined = ",".join(part(k, v) for k, v in zip(kinds, values, strict=True))
    return hashlib.md5(joined.encode(), usedforsecurity=False).hexdigest()


def checksum(hashes: Iterable[str]) -> tuple[int, int]:
    """A range's ``(rows, checksum)`` from its rows' hashes: the count and the sum of their first 60 bits."""
    count = total = 0
    for h in hashes:
        count += 1
        total += int(h[:HASH_PREFIX_HEX], 16)
    return count, total


def key_text(kinds: Sequence[Kind], values: Sequence[Any]) -> tuple[str | None, ...]:
    """A key as ``range_rows`` reports it: each value's canonical text."""
    return tuple(None if v is None else render(k, v) for k, v in zip(kinds, values, strict=True))


def order_value(kind: Kind, canonical: Any) -> Any:
    """A canonical key value as a bound in the verify order, as the destinations bind it: text and UUIDs
    as their UTF-8 bytes, date-times with a time zone as naive UTC, others as they are."""
    if kind in (Kind.TEXT, Kind.UUID):
        return str(canonical).encode()
    if isinstance(canonical, _dt.datetime) and canonical.tzinfo is not None:
        return canonical.astimezone(_dt.UTC).replace(tzinfo=None)
    return canonical


def kinds_of(columns: Sequence[Column], names: Sequence[str]) -> list[Kind]:
    by_name = {c.name: c for c in columns}
    return [by_name[n].type.kind for n in names]


RECORD_END, FIELD_END = "\x1e", "\x1f"
"""The separators of a range's values packed into one string (:func:`unpack_values`): ASCII record
and unit separators, which JSON text never holds raw (control characters are escaped in it)."""


class PackedValues:
    """``range_values`` rows unpacked by column (:func:`unpack_values`): ``keys`` holds each key
    part's rendered texts, ``values`` each value column's texts (None for NULL), row by row.
    Iterating gives the ``(key, values)`` pairs of ``base.RangeValues``; verify's hash of a range
    reads the columns themselves (warpd/verify_ranges.py ``values_total``), sparing a tuple a row."""

    __slots__ = ("keys", "values")

    def __init__(self, keys: list[list[str]], values: list[list[str | None]]):
        self.keys, self.values = keys, values

    def __iter__(self) -> Iterator[tuple[tuple[str, ...], tuple[str | None, ...]]]:
        return zip(zip(*self.keys, strict=True), zip(*self.values, strict=True), strict=True)

    def __len__(self) -> int:
        return len(self.keys[0]) if self.keys else 0


def unpack_values(packed: str | bytes | None, rows: int, nkey: int, nvalues: int) -> PackedValues | None:
    """``range_values`` rows from one string the database packed: each row's rendered key parts and
    values, each field ended by :data:`FIELD_END` but the row's last, the row by :data:`RECORD_END`;
    a value is ``=<text>``, or empty for NULL.  None when the string cannot be the ``rows`` rows
    packed so (a field holding a separator, a string cut short, NULL): the caller reads the rows one
    by one instead.  Reading one string spares the driver's work per row; it is split in a few passes
    of C code (the hot path of a table with JSON columns)."""
    if packed is None:
        return PackedValues([[] for _ in range(nkey)], [[] for _ in range(nvalues)]) if rows == 0 else None
    text = packed.decode() if isinstance(packed, bytes) else packed
    fields = nkey + nvalues
    # the database writes exactly these separators: a field holding one makes a count too high, a
    # string cut short lacks the last (a cut at a row's end is told by the caller: its length)
    if (
        not text.endswith(RECORD_END)
        or text.count(RECORD_END) != rows
        or text.count(FIELD_END) != rows * (fields - 1)
    ):
        if rows == 0 and not text:
            return PackedValues([[] for _ in range(nkey)], [[] for _ in range(nvalues)])
        return None
    flat = text.replace(RECORD_END, FIELD_END).split(FIELD_END)  # rows * fields fields, then ''
    return PackedValues(
        [flat[i:-1:fields] for i in range(nkey)],
        [[v[1:] if v else None for v in flat[nkey + j : -1 : fields]] for j in range(nvalues)],
    )
