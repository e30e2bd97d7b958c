"""Key-range checksums for ``verify`` over a BigQuery table (a destination's copy, a source table),
hashed in Python.

BigQuery selects a range's live rows (its key and compared columns only: at a
destination not the metadata columns, not ``_warp_order``, not a soft-deleted
row), the client reads them back as canonical values (the destination's
:func:`types.canonical`, the source's converters) and :mod:`warpd.connectors.rowhash`
renders and hashes them exactly as MariaDB and PostgreSQL do in SQL
(docs/verify.md).  Text and UUID keys (STRING columns) compare by Unicode
code points, which is the order of their UTF-8 bytes: the verify order.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from warpd.connectors import rowhash
from warpd.connectors.base import RangeBound, RangeRows, RangeValues, TablePlan, verify_key_kind
from warpd.connectors.bigquery.naming import quote_ident as _q
from warpd.connectors.bigquery.source_types import time_param
from warpd.errors import ConfigError
from warpd.types import Column, Kind

# the query parameter type of a key bound, by the key column's BigQuery type
PARAM_TYPES = frozenset(
    {"INT64", "NUMERIC", "BIGNUMERIC", "STRING", "BYTES", "DATE", "DATETIME", "TIMESTAMP", "TIME"}
)


def _param_value(kind: Kind, bound: Any) -> Any:
    if kind in (Kind.TEXT, Kind.UUID) and isinstance(bound, (bytes, bytearray, memoryview)):
        return bytes(bound).decode()  # the verify order's UTF-8 bytes: STRING compares in that order
    if kind is Kind.DECIMAL:
        return str(bound)
    if kind is Kind.TIMESTAMPTZ and isinstance(bound, _dt.datetime) and bound.tzinfo is None:
        return bound.replace(tzinfo=_dt.UTC)  # the sources' bounds are UTC date-times
    if kind is Kind.TIME and isinstance(bound, _dt.timedelta):
        return time_param(bound)
    return bound


@dataclass(frozen=True)
class Selected:
    """How one source column is read from the BigQuery table: its column there (``name``, unquoted),
    its BigQuery type, the SQL selecting it and the converter to its canonical value."""

    column: Column
    name: str
    bq_type: str
    select: str
    convert: Callable[[Any], Any]


class TableRanges:
    """The verify reads of one BigQuery table (a destination's copy or a source table); ``table`` is its
    quoted, qualified name, ``read`` says how each source column is read there, ``live`` is an extra
    condition on its rows (soft deletes)."""

    def __init__(
        self,
        plan: TablePlan,
        table: str,
        columns: Sequence[str],
        read: Callable[[Column], Selected],
        live: str = "",
    ):
        by_name = {c.name: c for c in plan.source.columns}
        self.keys = [read(by_name[k]) for k in plan.source.key]
        for k in self.keys:
            verify_key_kind(plan, k.column)
            if k.bq_type not in PARAM_TYPES or (k.column.type.kind is Kind.DECIMAL and k.bq_type == "STRING"):
                raise ConfigError(
                    f"verify: table {plan.source.name!r}: key column {k.column.name!r} "
                    f"({k.column.type.describe()}) is held as BigQuery {k.bq_type}, which does not order "
                    "like the other side's values; verify cannot cut it into key ranges there"
                )
        self.table = table
        self.live = live
        self.selected = [*self.keys, *(read(by_name[n]) for n in columns)]
        self.kinds = rowhash.kinds_of(plan.source.columns, columns)

    def _bound(self, bound: Sequence[Any], op: str, tag: str) -> tuple[str, list[tuple[str, str, Any]]]:
        """``(k1, k2, …) op bound`` in the key order (BigQuery has no row comparison), and its parameters."""
        params = [
            (f"{tag}{i}", k.bq_type, _param_value(k.column.type.kind, v))
            for i, (k, v) in enumerate(zip(self.keys, bound, strict=True))
        ]
        names = [_q(k.name) for k in self.keys]
        strict = op.rstrip("=")
        alternatives = []
        for i in range(len(names)):
            equal = [f"{names[j]} = @{params[j][0]}" for j in range(i)]
            cmp = op if i == len(names) - 1 else strict
            alternatives.append(" AND ".join([*equal, f"{names[i]} {cmp} @{params[i][0]}"]))
        return "(" + " OR ".join(f"({a})" for a in alternatives) + ")", params

    def _where(self, lower: RangeBound, upper: RangeBound) -> tuple[str, list[tuple[str, str, Any]]]:
        conds, params = [self.live] if self.live else [], []
        for tag, op, bound in (("lo", ">", lower), ("hi", "<=", upper)):
            if bound is not None:
                cond, more = self._bound(bound, op, tag)
                conds.append(cond)
                params += more
        return (" WHERE " + " AND ".join(conds) if conds else ""), params

    def query(self, lower: RangeBound, upper: RangeBound) -> tuple[str, list[tuple[str, str, Any]]]:
        """The range's rows: their keys and compared columns."""
        where, params = self._where(lower, upper)
        selects = ", ".join(c.select for c in self.selected)
        return f"SELECT {selects} FROM {self.table}{where}", params  # noqa: S608 - quoted

    def keys_query(self, lower: RangeBound, upper: RangeBound) -> tuple[str, list[tuple[str, str, Any]]]:
        """The range's keys, in the verify order."""
        where, params = self._where(lower, upper)
        names = ", ".join(_q(k.name) for k in self.keys)
        return f"SELECT {names} FROM {self.table}{where} ORDER BY {names}", params  # noqa: S608 - quoted

    def bound_of(self, record: Sequence[Any]) -> tuple[Any, ...]:
        """A key read by :meth:`keys_query` as a bound in the verify order (text as its UTF-8 bytes)."""
        return tuple(
            rowhash.order_value(k.column.type.kind, k.convert(v))
            for k, v in zip(self.keys, record, strict=True)
        )

    def _converted(self, records: Any) -> Iterator[tuple[tuple[str | None, ...], list[Any]]]:
        """Each record's key (rendered) and its compared columns' canonical values."""
        nkey = len(self.keys)
        key_kinds = [k.column.type.kind for k in self.keys]
        for record in records:
            values = [None if v is None else c.convert(v) for c, v in zip(self.selected, record, strict=True)]
            yield rowhash.key_text(key_kinds, values[:nkey]), values[nkey:]

    def hashed(self, records: Any) -> RangeRows:
        return [(key, rowhash.row_hash(self.kinds, values)) for key, values in self._converted(records)]

    def values(self, records: Any) -> RangeValues:
        """Each record's key and the values of its FLOAT, JSON and text-array columns (base.RangeValues),
        for verify to render: no hashing here."""
        return [(key, tuple(values)) for key, values in self._converted(records)]
