"""Compare a source table with its destination copy, row by row.

Used by the demo, the tests and the benchmark to prove convergence: both
sides are read into canonical values (see :mod:`warpd.types`) and compared
by key.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from warpd.connectors.base import Destination, TablePlan
from warpd.types import Kind


def _canonical_src(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind is Kind.JSON:
        return json.loads(value)
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, Decimal) and isinstance(b, Decimal) and a.is_nan() and b.is_nan():
        return True
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime) and (a.tzinfo is None) != (b.tzinfo is None):
        return False
    return bool(a == b)


@dataclass
class TableDiff:
    table: str
    source_rows: int = 0
    destination_rows: int = 0
    missing: list[Any] = field(default_factory=list)  # keys at the source only
    extra: list[Any] = field(default_factory=list)  # keys at the destination only
    different: list[tuple[Any, str, Any, Any]] = field(default_factory=list)  # key, column, source, dest

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def summary(self, limit: int = 5) -> str:
        if self.equal:
            return f"{self.table}: {self.source_rows} rows, identical"
        parts = [f"{self.table}: source {self.source_rows} rows, destination {self.destination_rows}"]
        if self.missing:
            parts.append(f"missing at destination: {self.missing[:limit]}")
        if self.extra:
            parts.append(f"extra at destination: {self.extra[:limit]}")
        for key, col, a, b in self.different[:limit]:
            parts.append(f"key {key} column {col}: source {a!r} != destination {b!r}")
        return "; ".join(parts)


def destination_rows(dest: Destination, plan: TablePlan) -> dict[Any, dict[str, Any]] | None:
    """Live rows of ``plan``'s table keyed like :func:`compare` expects; None when it does not exist."""
    rows = dest.read_rows(plan)
    if rows is None:
        return None
    return {_key(plan, row): row for row in rows}


def _key(plan: TablePlan, row: Mapping[str, Any]) -> Any:
    if plan.source.key:
        return tuple(_hashable(row[k]) for k in plan.source.key)
    return json.dumps([str(row[c.name]) for c in plan.source.columns])


def _hashable(value: Any) -> Any:
    """A key value as a dict key: parsed JSON objects and arrays (a jsonb key) as sorted JSON text."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def compare(
    plan: TablePlan,
    source_rows: Iterable[Mapping[str, Any]],
    dest: Mapping[Any, Mapping[str, Any]],
    skip_columns: Iterable[str] = (),
) -> TableDiff:
    skip = set(skip_columns)
    diff = TableDiff(plan.source.name, destination_rows=len(dest))
    seen = set()
    for raw in source_rows:
        diff.source_rows += 1
        row = {c.name: _canonical_src(c.type.kind, raw.get(c.name)) for c in plan.source.columns}
        key = _key(plan, row) if plan.source.key else _key(plan, raw)
        seen.add(key)
        other = dest.get(key)
        if other is None:
            diff.missing.append(key)
            continue
        for c in plan.source.columns:
            if c.name in skip:
                continue
            if not _same(row[c.name], other.get(c.name)):
                diff.different.append((key, c.name, row[c.name], other.get(c.name)))
    diff.extra = [k for k in dest if k not in seen]
    return diff


def verify_table(source: Any, dest: Destination, plan: TablePlan) -> TableDiff:
    """Read the whole source table (via the snapshot path) and compare it with the destination."""
    rows = (r for chunk in source.snapshot(plan.source, None, 50_000) for r in chunk.rows)
    return compare(plan, rows, destination_rows(dest, plan) or {})


def table_difference(source: Any, dest: Destination, plan: TablePlan) -> str | None:
    """None when ``plan``'s destination table equals the source table, else one line saying how not."""
    held = destination_rows(dest, plan)
    if held is None:
        return f"{plan.source.name}: missing at destination"
    rows = (r for chunk in source.snapshot(plan.source, None, 50_000) for r in chunk.rows)
    diff = compare(plan, rows, held)
    return None if diff.equal else diff.summary()
