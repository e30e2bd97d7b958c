"""Key-range checksums for ``verify`` over a MongoDB collection, hashed in Python.

MongoDB's query language has no MD5, so the source reads a range's documents
(by ``_id`` range, projected on the compared fields), maps each one through
the table's recorded shape exactly as replication does
(:meth:`DocumentMapper.row`, docs/mongodb-mapping.md) and hashes the
canonical values with :mod:`warpd.connectors.rowhash`: the same rendering the
destination computes in SQL.  Nothing is written anywhere.

The verify order of the ``_id`` column must be MongoDB's own ``_id`` order
for the range queries to select the same documents the destination's ranges
hold; it is for ``_id`` columns whose BSON types are all ObjectIds (their hex
text orders as their bytes), all strings (compared as UTF-8 bytes), all
numbers (compared by value), all UUIDs or all dates.  Other collections are
refused (bad usage).  Documents whose ``_id`` has a type outside the column
(a null ``_id``, sent to the dead letters) are outside every range.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.objectid import ObjectId

from warpd.connectors import rowhash
from warpd.connectors.base import RangeBound, RangeRows, RangeValues, TablePlan
from warpd.connectors.mongodb.mapping import ID_FIELD, OVERFLOW_COLUMN, DocumentMapper
from warpd.errors import ConfigError
from warpd.types import Column, Kind

_NUMBERS = frozenset({"int", "long", "decimal"})


def _id_column(plan: TablePlan) -> Column:
    (column,) = (c for c in plan.source.columns if c.name == ID_FIELD)
    return column


def _id_types(plan: TablePlan) -> list[str]:
    """The BSON type aliases of the ``_id`` column, refused where MongoDB's order is not the verify order."""
    column = _id_column(plan)
    aliases = sorted(a for a in column.source_type.split("|") if a)
    kind = column.type.kind
    if (
        (kind is Kind.TEXT and aliases in (["objectId"], ["string"]))
        or (kind in (Kind.INT, Kind.DECIMAL) and aliases and set(aliases) <= _NUMBERS)
        or (kind is Kind.UUID and aliases == ["binData"])
        or (kind is Kind.TIMESTAMPTZ and aliases == ["date"])
    ):
        return aliases
    raise ConfigError(
        f"verify: collection {plan.source.name!r}: its _id values are of BSON type(s) {'|'.join(aliases)} "
        f"(column {column.type.describe()}), which MongoDB orders differently from the destination, so "
        "key ranges cannot select the same rows on both sides; verify compares collections whose _id "
        "values are all ObjectIds, all strings, all numbers, all UUIDs or all dates"
    )


def _bson_bound(aliases: list[str], kind: Kind, bound: Any) -> Any:
    """A verify-order bound (what :func:`bounds` returned) as the BSON value MongoDB compares ``_id`` with."""
    if kind is Kind.TEXT:
        text = bytes(bound).decode()
        return ObjectId(text) if aliases == ["objectId"] else text
    if kind is Kind.UUID:
        return uuid.UUID(bytes(bound).decode())
    if kind is Kind.DECIMAL:
        d = Decimal(bound)
        # an integral bound as an int64 (MongoDB compares numbers by value across types)
        return int(d) if d == d.to_integral_value() and -(2**63) <= d < 2**63 else Decimal128(d)
    return bound  # int; datetime (naive UTC)


class CollectionRanges:
    """The verify reads of one collection under its recorded shape (``plan.source``)."""

    def __init__(self, db: Any, plan: TablePlan, mapper: DocumentMapper, columns: list[str]):
        self.coll = db[plan.source.name]
        self.shape = plan.source
        self.mapper = mapper
        self.aliases = _id_types(plan)
        self.id_kind = _id_column(plan).type.kind
        by_name = {c.name: c for c in plan.source.columns}
        self.columns = columns
        self.kinds = rowhash.kinds_of(plan.source.columns, columns)
        tops = {(by_name[n].path or (n,))[0] for n in columns}
        # a projection names fields by dotted paths: a top-level name holding a dot (or starting with $,
        # or empty) cannot be projected on its own, so such a collection is read whole; so is one whose
        # overflow column is compared (it holds the fields no column names)
        plain = OVERFLOW_COLUMN not in columns and all(
            t and "." not in t and not t.startswith("$") for t in tops
        )
        self.projection: dict[str, int] | None = (
            {ID_FIELD: 1, **dict.fromkeys(sorted(tops - {ID_FIELD}), 1)} if plain else None
        )

    def _filter(self, lower: RangeBound, upper: RangeBound) -> dict[str, Any]:
        cond: dict[str, Any] = {"$type": list(self.aliases)}
        if lower is not None:
            cond["$gt"] = _bson_bound(self.aliases, self.id_kind, lower[0])
        if upper is not None:
            cond["$lte"] = _bson_bound(self.aliases, self.id_kind, upper[0])
        return {ID_FIELD: cond}

    def _documents(self, lower: RangeBound, upper: RangeBound) -> Iterator[Mapping[str, Any]]:
        yield from self.coll.find(self._filter(lower, upper), self.projection, batch_size=1000)

    def _hashed(self, doc: Mapping[str, Any]) -> tuple[tuple[str | None, ...], str]:
        key = self.mapper.key(self.shape, doc[ID_FIELD])[ID_FIELD]
        key_text = rowhash.key_text([self.id_kind], [key])
        try:
            row = self.mapper.row(self.shape, doc)
        except ValueError:
            # the document does not fit the recorded shape (a value its column cannot hold, a field with
            # no column): the destination cannot hold it as it is, so it differs from every row there
            return key_text, hashlib.md5(f"unfit {key_text}".encode(), usedforsecurity=False).hexdigest()
        return key_text, rowhash.row_hash(self.kinds, [row[n] for n in self.columns])

    def checksum(self, lower: RangeBound, upper: RangeBound) -> tuple[int, int]:
        return rowhash.checksum(self._hashed(d)[1] for d in self._documents(lower, upper))

    def rows(self, lower: RangeBound, upper: RangeBound) -> RangeRows:
        return [self._hashed(d) for d in self._documents(lower, upper)]

    def values(self, lower: RangeBound, upper: RangeBound) -> RangeValues:
        """Each document's key and the canonical values of ``columns`` (FLOAT, JSON: base.RangeValues) as
        replication writes them: a double as a float, an embedded document or an array as its Relaxed
        Extended JSON text (an array's order kept, so a reordered array differs).  A document that no
        longer fits the shape is left out: its row hash (:meth:`rows`) already differs."""
        found = []
        for doc in self._documents(lower, upper):
            key = self.mapper.key(self.shape, doc[ID_FIELD])[ID_FIELD]
            try:
                row = self.mapper.row(self.shape, doc)
            except ValueError:
                continue
            found.append((rowhash.key_text([self.id_kind], [key]), tuple(row[n] for n in self.columns)))
        return found

    def bounds(self, lower: RangeBound, upper: RangeBound, every: int) -> list[tuple[Any, ...]]:
        """The ``_id`` (verify order) of every ``every``-th document of the range: one pass over its ``_id``s."""
        found: list[tuple[Any, ...]] = []
        cursor = self.coll.find(self._filter(lower, upper), {ID_FIELD: 1}, batch_size=10_000).sort(
            ID_FIELD, 1
        )
        for n, doc in enumerate(cursor, 1):
            if n % every == 0:
                key = self.mapper.key(self.shape, doc[ID_FIELD])[ID_FIELD]
                found.append((rowhash.order_value(self.id_kind, key),))
        return found
