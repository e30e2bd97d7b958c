"""Compare a source table with its destination copy, row by row.

Used by the demo, the tests and the benchmark to prove convergence: both
sides are read into canonical values (see :mod:`warpd.types`) and compared
by key.  A table without a key is compared as a set of whole rows (identical
duplicate rows collapse at the destination: docs/how-it-works.md, section 6).

JSON values are compared in one canonical rendering on both sides
(:func:`canonical_json`), whether they are a key, part of a keyless row's
identity or a plain column: the source's verbatim text and the destination's
parsed value of the same JSON value render alike.
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


def source_row(plan: TablePlan, raw: Mapping[str, Any]) -> dict[str, Any]:
    """A row as a source's snapshot reads it, in the canonical values :func:`row_identity` takes."""
    return {c.name: _canonical_src(c.type.kind, raw.get(c.name)) for c in plan.source.columns}


def as_source_row(plan: TablePlan, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row read back from the destination (canonical values: JSON parsed) in the values a source's rows
    hold, which the applier encodes: a JSON value as JSON text again.  What a key scan deletes by."""
    kinds = {c.name: c.type.kind for c in plan.source.columns}
    return {
        name: json.dumps(value, ensure_ascii=False)
        if kinds.get(name) is Kind.JSON and value is not None
        else value
        for name, value in row.items()
    }


def _canonical_src(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind is Kind.JSON and isinstance(value, (str, bytes, bytearray)):
        return json.loads(value)
    return value


def canonical_json(value: Any) -> str:
    """One text for a parsed JSON value, the same whichever side (and driver) parsed it.

    Object keys are sorted (``jsonb`` reorders them; a duplicate key keeps its
    last value, as ``jsonb``, MySQL and :func:`json.loads` do), whitespace is
    dropped, and a number is written by its value alone: ``1E2``, ``100``,
    ``100.0`` and ``1.00E+2`` are the one number 100 (``jsonb`` and MySQL
    compare JSON numbers by value; the shared rule of :mod:`warpd.types`
    writes an integral double as ``2``), ``-0`` is ``0``.  Kinds stay
    apart: the string ``"1"``, the number ``1`` and ``true`` differ.
    Non-integral numbers are compared as the doubles the drivers parse them
    into; integers exactly.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float, Decimal)):
        return _canonical_number(value)
    if isinstance(value, Mapping):
        items = sorted((str(k), v) for k, v in value.items())
        return (
            "{"
            + ",".join(json.dumps(k, ensure_ascii=False) + ":" + canonical_json(v) for k, v in items)
            + "}"
        )
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    raise TypeError(f"not a parsed JSON value: {type(value).__name__}")


def _canonical_number(value: int | float | Decimal) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        number = Decimal(repr(value))  # the shortest decimal that reads back as this double
    else:
        number = Decimal(value)
        if number.is_nan():
            return "NaN"
        if number.is_infinite():
            return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    # trailing zeros dropped by hand: Decimal.normalize() would round to the context's 28 digits
    sign, digits, exponent = number.as_tuple()
    kept = tuple(digits)
    while kept[-1] == 0:
        kept = kept[:-1]
    exponent = int(exponent) + len(digits) - len(kept)
    if -30 <= exponent <= 30:  # plain notation (2.5, 100), exact: one spelling per value
        return format(Decimal((sign, kept, exponent)), "f")
    return ("-" if sign else "") + "".join(map(str, kept)) + f"E{exponent}"


def _comparable(kind: Kind, value: Any) -> Any:
    """``value`` as compared: JSON in its canonical text, anything else as it is."""
    if kind is Kind.JSON and value is not None:
        return canonical_json(value)
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
    return {row_identity(plan, row): row for row in rows}


def row_identity(plan: TablePlan, row: Mapping[str, Any]) -> Any:
    """What identifies ``row`` (canonical values, JSON parsed): its key, or all its values when keyless."""
    kinds = {c.name: c.type.kind for c in plan.source.columns}
    names = plan.source.key or tuple(c.name for c in plan.source.columns)
    return tuple(_hashable(kinds[n], row.get(n)) for n in names)


def _hashable(kind: Kind, value: Any) -> Any:
    """A value as part of a dict key: JSON in its canonical text, arrays as JSON text, NaN as ``"NaN"``."""
    if value is None:
        return None
    if kind is Kind.JSON:
        return canonical_json(value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"  # NaN equals nothing, not even itself: as a key it would never be found
    if isinstance(value, Decimal) and value.is_nan():
        return "NaN"
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
        row = source_row(plan, raw)
        key = row_identity(plan, row)
        seen.add(key)
        other = dest.get(key)
        if other is None:
            diff.missing.append(key)
            continue
        for c in plan.source.columns:
            if c.name in skip:
                continue
            kind = c.type.kind
            if not _same(_comparable(kind, row[c.name]), _comparable(kind, other.get(c.name))):
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
