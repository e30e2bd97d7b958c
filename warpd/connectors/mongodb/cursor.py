"""``cursor_field`` of a ``mode: batch`` MongoDB collection: which BSON types can order changes, the
filters an incremental read runs, and how its high-water mark is stored (docs/batch-mode.md, "MongoDB").

MongoDB compares values of different BSON types by type first (numbers < strings < objects < ... <
ObjectId < bool < date < timestamp), and a range query such as ``{updated_at: {$gte: <date>}}`` only
matches values of the bound's own type.  So a cursor field must hold one kind of value in every document:
a document where it is missing, null or of another type would never be read by an incremental run.  The
field's kinds are the *families* below; each run counts the documents outside the family and refuses to
run while there are any.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import json
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from bson import Decimal128, ObjectId, json_util
from bson.binary import UuidRepresentation
from bson.codec_options import DatetimeConversion
from bson.decimal128 import create_decimal128_context
from bson.timestamp import Timestamp

from warpd.errors import FatalError
from warpd.types import Column, ColumnType, Kind, TableSchema


@dataclasses.dataclass(frozen=True)
class Family:
    """BSON types that compare with one another, usable together as a cursor."""

    name: str  # for messages
    aliases: tuple[str, ...]  # the $type names of Column.source_type
    query_type: str  # the $type alias that matches them all
    lag_kind: Kind | None  # what safety_lag counts in: TIMESTAMPTZ a duration; None the column's own number


FAMILIES = (
    Family("date", ("date",), "date", Kind.TIMESTAMPTZ),
    Family("number", ("int", "long", "double", "decimal"), "number", None),
    # a BSON timestamp is (seconds, increment): a duration counts back its seconds
    Family("timestamp", ("timestamp",), "timestamp", Kind.TIMESTAMPTZ),
    # an ObjectId starts with its creation second: a duration counts back that second; inserts only
    Family("ObjectId", ("objectId",), "objectId", Kind.TIMESTAMPTZ),
)

# the mark's cursor: Relaxed Extended JSON (a date reads as its ISO text in warpctl status), exact for
# every type a family holds (a date outside 1970-9999 falls back to the canonical form by itself)
_MARK_JSON = json_util.JSONOptions(
    json_mode=json_util.JSONMode.RELAXED,
    uuid_representation=UuidRepresentation.STANDARD,
    tz_aware=True,
    tzinfo=_dt.UTC,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)


def family_of(table: str, column: Column) -> Family:
    """The family of the cursor field ``column``, or a FatalError naming the fix."""
    aliases = {a for a in (column.source_type or "").split("|") if a}
    for family in FAMILIES:
        if aliases and aliases <= set(family.aliases):
            if family.name == "date" and column.type.kind is not Kind.TIMESTAMPTZ:
                break  # dates outside years 1-9999 (held as JSON): not comparable here
            return family
    if len(aliases) > 1:
        raise FatalError(
            f"collection {table!r}: cursor_field {column.name!r} holds values of several BSON types "
            f"({', '.join(sorted(aliases))}); MongoDB orders values by type before value, so an incremental "
            "run would read only those of one type. Give the field one type in every document (e.g. dates "
            "only: db.<collection>.updateMany({field: {$type: 'string'}}, [{$set: {field: {$toDate: "
            "'$field'}}}])), or use sync: full_refresh"
        )
    raise FatalError(
        f"collection {table!r}: cursor_field {column.name!r} is a BSON {column.source_type or 'value'}, which "
        "cannot order changes; use a date (updatedAt), a number, a timestamp or an ObjectId field, or "
        "sync: full_refresh"
    )


def cursor_column(schema: TableSchema, name: str) -> Column:
    """The cursor field of ``schema`` as the engine computes ``safety_lag`` from (a duration for dates,
    timestamps and ObjectIds, a number for numbers); a FatalError when it cannot be a cursor."""
    column = schema.column(name)
    if column is None or column.path is None:
        raise FatalError(
            f"collection {schema.name!r}: no document read so far has a field {name!r} (its cursor_field); "
            f"its fields: {', '.join(c.name for c in schema.columns)}"
        )
    if name == "_id" and column.source_type != "objectId":
        raise FatalError(
            f"collection {schema.name!r}: cursor_field _id is a BSON {column.source_type}; only an ObjectId "
            "_id grows as documents are inserted. Use a date or number field, or sync: full_refresh"
        )
    family = family_of(schema.name, column)
    if family.lag_kind is None:
        return column
    return dataclasses.replace(column, type=ColumnType(family.lag_kind))


def path(column: Column) -> str:
    """The dotted field path of ``column`` in a query."""
    assert column.path is not None
    return ".".join(column.path)


def outside(column: Column, family: Family) -> dict[str, Any]:
    """The documents an incremental read of ``column`` would never see: the field missing, null, of another
    type, or an array (which sorts and compares by its elements); for numbers also NaN and Infinity."""
    field = path(column)
    unseen: list[dict[str, Any]] = [
        {field: {"$not": {"$type": family.query_type}}},
        {field: {"$type": "array"}},
    ]
    if family.name == "number":
        # NaN matches no range at all; an Infinity mark would leave every later finite value below the floor
        unseen.append({field: {"$in": [math.nan, math.inf]}})
    return {"$or": unseen}


def floor(mark: Mapping[str, Any] | None, family: Family, lag: Any) -> Any:
    """The lowest cursor value a run reads: the mark's cursor minus ``lag``, rounded down to a value of the
    cursor's type (never above the exact difference, so a run never reads less far back than ``lag``);
    None without a mark."""
    if mark is None or mark.get("cursor") is None:
        return None
    value = decode(mark["cursor"])
    if not lag:
        return value
    if isinstance(value, _dt.datetime):
        return value - lag  # a query rounds it down to BSON's milliseconds
    if isinstance(value, Timestamp):
        return Timestamp(_seconds_back(value.time, lag), 0)
    if isinstance(value, ObjectId):
        second = _seconds_back(int.from_bytes(value.binary[:4], "big"), lag)
        return ObjectId(second.to_bytes(4, "big") + bytes(8))  # the lowest ObjectId of that second
    return _number_floor(value, lag)


def _seconds_back(second: int, lag: _dt.timedelta) -> int:
    """The first second a run reads of a cursor counted in whole seconds (a BSON timestamp, an ObjectId's
    creation time): a value of second ``s`` was taken at some time within [s, s+1), so the lag is rounded
    up to whole seconds (1.5s reads 2 seconds back: one second more, never less than the lag)."""
    return max(0, second + (-lag // _dt.timedelta(seconds=1)))


def _number_floor(value: Any, lag: Any) -> Any:
    """``value - lag`` rounded down to a number MongoDB compares exactly: a Decimal128 for a decimal cursor
    or lag, a double when either side is a double, an integer otherwise."""
    if isinstance(value, Decimal128) or isinstance(lag, decimal.Decimal):
        base = value.to_decimal() if isinstance(value, Decimal128) else decimal.Decimal(value)  # exact
        context = create_decimal128_context()
        context.rounding = decimal.ROUND_FLOOR  # 34 digits: a longer difference rounds down, not to nearest
        return Decimal128(context.subtract(base, decimal.Decimal(lag)))
    if isinstance(value, int) and isinstance(lag, int):
        return value - lag
    exact = Fraction(value) - Fraction(lag)
    try:
        low = float(exact)
    except OverflowError:
        return -math.inf
    return math.nextafter(low, -math.inf) if Fraction(low) > exact else low


def encode(value: Any) -> Any:
    """A cursor value as the mark stores it (JSON)."""
    return json.loads(json_util.dumps(value, json_options=_MARK_JSON))


def decode(stored: Any) -> Any:
    return json_util.loads(json.dumps(stored), json_options=_MARK_JSON)
