"""Key-range checksums for ``verify`` over a BigQuery destination table, hashed in Python.

BigQuery selects a range's live rows (its key and compared columns only: not
the metadata columns, not ``_warp_order``, not a soft-deleted row), the
client reads them back as canonical values (:func:`types.canonical`, as the
test suite's exact comparison does) and :mod:`warpd.connectors.rowhash`
renders and hashes them exactly as MariaDB and PostgreSQL do in SQL
(docs/verify.md).  Text and UUID keys (STRING columns) compare by Unicode
code points, which is the order of their UTF-8 bytes: the verify order.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

from warpd.connectors import rowhash
from warpd.connectors.base import DELETED_AT_COLUMN, RangeBound, RangeRows, TablePlan, verify_key_kind
from warpd.connectors.bigquery.types import bq_type, canonical
from warpd.errors import ConfigError
from warpd.types import Column, Kind

# the query parameter type of a key bound, by the key column's BigQuery type
_PARAM_TYPES = {
    "INT64": "INT64",
    "NUMERIC": "NUMERIC",
    "BIGNUMERIC": "BIGNUMERIC",
    "STRING": "STRING",
    "BYTES": "BYTES",
    "DATE": "DATE",
    "DATETIME": "DATETIME",
    "TIMESTAMP": "TIMESTAMP",
}


def _q(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _param_value(kind: Kind, bound: Any) -> Any:
    if kind in (Kind.TEXT, Kind.UUID) and isinstance(bound, (bytes, bytearray, memoryview)):
        return bytes(bound).decode()  # the verify order's UTF-8 bytes: STRING compares in that order
    if kind is Kind.DECIMAL:
        return str(bound)
    if kind is Kind.TIMESTAMPTZ and isinstance(bound, _dt.datetime) and bound.tzinfo is None:
        return bound.replace(tzinfo=_dt.UTC)  # the sources' bounds are UTC date-times
    return bound


class TableRanges:
    """The verify reads of one destination table; ``table`` is its quoted, qualified name."""

    def __init__(self, plan: TablePlan, table: str, columns: Sequence[str]):
        by_name = {c.name: c for c in plan.source.columns}
        self.keys: list[Column] = [by_name[k] for k in plan.source.key]
        self.key_types: list[str] = []
        for k in self.keys:
            verify_key_kind(plan, k)
            bq = bq_type(k.type)
            if bq not in _PARAM_TYPES or (k.type.kind is Kind.DECIMAL and bq == "STRING"):
                raise ConfigError(
                    f"verify: table {plan.source.name!r}: key column {k.name!r} ({k.type.describe()}) is held "
                    f"as BigQuery {bq}, which does not order like the source's values; verify cannot cut "
                    "it into key ranges at a BigQuery destination"
                )
            self.key_types.append(_PARAM_TYPES[bq])
        self.table = table
        self.columns = list(columns)
        self.selected = [*self.keys, *(by_name[n] for n in self.columns)]
        self.names = [_q(plan.columns[c.name]) for c in self.selected]
        self.kinds = rowhash.kinds_of(plan.source.columns, self.columns)
        self.live = f"{_q(DELETED_AT_COLUMN)} IS NULL" if plan.soft_delete else ""

    def _bound(self, bound: Sequence[Any], op: str, tag: str) -> tuple[str, list[tuple[str, str, Any]]]:
        """``(k1, k2, …) op bound`` in the key order (BigQuery has no row comparison), and its parameters."""
        params = [
            (f"{tag}{i}", t, _param_value(k.type.kind, v))
            for i, (k, t, v) in enumerate(zip(self.keys, self.key_types, bound, strict=True))
        ]
        names = self.names[: len(self.keys)]
        strict, last = op.rstrip("="), op
        alternatives = []
        for i in range(len(names)):
            equal = [f"{names[j]} = @{params[j][0]}" for j in range(i)]
            cmp = last if i == len(names) - 1 else strict
            alternatives.append(" AND ".join([*equal, f"{names[i]} {cmp} @{params[i][0]}"]))
        return "(" + " OR ".join(f"({a})" for a in alternatives) + ")", params

    def query(self, lower: RangeBound, upper: RangeBound) -> tuple[str, list[tuple[str, str, Any]]]:
        conds, params = [self.live] if self.live else [], []
        for tag, op, bound in (("lo", ">", lower), ("hi", "<=", upper)):
            if bound is not None:
                cond, more = self._bound(bound, op, tag)
                conds.append(cond)
                params += more
        where = " WHERE " + " AND ".join(conds) if conds else ""
        return f"SELECT {', '.join(self.names)} FROM {self.table}{where}", params  # noqa: S608 - quoted

    def hashed(self, records: Any) -> RangeRows:
        nkey = len(self.keys)
        out: RangeRows = []
        for record in records:
            values = [canonical(c.type, v) for c, v in zip(self.selected, record, strict=True)]
            key = rowhash.key_text([k.type.kind for k in self.keys], values[:nkey])
            out.append((key, rowhash.row_hash(self.kinds, values[nkey:])))
        return out
