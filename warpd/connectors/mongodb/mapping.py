"""How MongoDB documents become rows: inferred table shapes, their widening, and canonical values.

A collection has no declared schema, so its table's shape is inferred from
the documents: :meth:`DocumentMapper.fit` widens a shape just enough to hold
one more document (new fields become new columns, a field whose values change
type moves up the type lattice), :func:`evolution` says what a destination
must do to follow, and :meth:`DocumentMapper.row` gives a document's
canonical values (see :mod:`warpd.types`) under a shape.

The rules, with a table per BSON type, are in docs/mongodb-mapping.md.  The
one that shapes most of this module is the shared rule for converting into
JSON (:mod:`warpd.types`): when a column widens to JSON, the destination
converts the rows it already holds by that rule, so a scalar written into a
JSON column is rendered exactly as the rule renders that scalar in its own
type; a new row and a converted row then hold the same JSON.

This module is pure: no I/O, no driver beyond the ``bson`` package.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bson import json_util
from bson.binary import Binary, UuidRepresentation
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.son import SON
from bson.timestamp import Timestamp

from warpd.types import Column, ColumnType, Kind, TableSchema

ID_FIELD = "_id"
OVERFLOW_COLUMN = "_warp_extra"  # JSON object of the fields that found no column; path None
EMPTY_NAME = "_empty"  # the column name of the empty field name ""
PATH_SEPARATOR = "__"
# The widest destination (PostgreSQL) allows 1,600 columns; a destination adds up to 4 metadata
# columns, and the overflow column comes on top of max_columns.  The engine refuses a max_columns
# the configured destination cannot hold (Capabilities.max_columns).
MAX_COLUMNS_LIMIT = 1595

_UTC = _dt.UTC
_INT32 = ColumnType(Kind.INT, bits=32)
_INT64 = ColumnType(Kind.INT, bits=64)
_FLOAT64 = ColumnType(Kind.FLOAT, bits=64)
_DECIMAL = ColumnType(Kind.DECIMAL)
_TEXT = ColumnType(Kind.TEXT)
_JSON = ColumnType(Kind.JSON)

_RELAXED = json_util.RELAXED_JSON_OPTIONS.with_options(uuid_representation=UuidRepresentation.STANDARD)

Path = tuple[str, ...]
Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class MappingOptions:
    """How one collection's documents are laid out as columns."""

    flatten_depth: int = 0  # 0: an embedded document is one JSON column; N: N levels become parent__child
    max_columns: int = 200  # columns (``_id`` included) before new fields go to the overflow column

    def __post_init__(self) -> None:
        if self.flatten_depth < 0:
            raise ValueError(f"flatten_depth must be 0 or more, not {self.flatten_depth}")
        if not 1 <= self.max_columns <= MAX_COLUMNS_LIMIT:
            raise ValueError(f"max_columns must be between 1 and {MAX_COLUMNS_LIMIT}, not {self.max_columns}")


# -- natural types -------------------------------------------------------------
# Every decoded BSON value gets a tag; a tag names its natural column type and the BSON type alias
# (the name MongoDB's $type operator uses) recorded in Column.source_type.

_NATURAL: dict[str, tuple[ColumnType, str]] = {
    "objectId": (_TEXT, "objectId"),
    "string": (_TEXT, "string"),
    "bool": (ColumnType(Kind.BOOLEAN), "bool"),
    "int": (_INT32, "int"),
    "long": (_INT64, "long"),
    "double": (_FLOAT64, "double"),
    "decimal": (_DECIMAL, "decimal"),
    "date": (ColumnType(Kind.TIMESTAMPTZ), "date"),
    "uuid": (ColumnType(Kind.UUID), "binData"),
    "bytes": (ColumnType(Kind.BYTES), "binData"),
    # natural kind JSON: rendered as Relaxed Extended JSON
    "dateOutOfRange": (_JSON, "date"),
    "binary": (_JSON, "binData"),
    "object": (_JSON, "object"),
    "array": (_JSON, "array"),
    "timestamp": (_JSON, "timestamp"),
    "regex": (_JSON, "regex"),
    "minKey": (_JSON, "minKey"),
    "maxKey": (_JSON, "maxKey"),
    "javascript": (_JSON, "javascript"),
    "javascriptWithScope": (_JSON, "javascriptWithScope"),
}

_TAG_OF_TYPE: dict[type, str] = {
    str: "string",
    bool: "bool",
    Int64: "long",
    float: "double",
    ObjectId: "objectId",
    Decimal128: "decimal",
    _dt.datetime: "date",
    uuid.UUID: "uuid",
    bytes: "bytes",
    dict: "object",
    SON: "object",
    DBRef: "object",  # pymongo decodes {$ref, $id, $db} sub-documents (and the old DBPointer) as DBRef
    list: "array",
    DatetimeMS: "dateOutOfRange",
    Timestamp: "timestamp",
    Regex: "regex",
    re.Pattern: "regex",
    MinKey: "minKey",
    MaxKey: "maxKey",
}


def _int_tag(value: int) -> str:
    if -(2**31) <= value < 2**31:
        return "int"
    if -(2**63) <= value < 2**63:
        return "long"  # a hand-built document: BSON stores such an int as int64
    raise ValueError(f"integer {value} is outside BSON's 64-bit range")


def _tag(value: Any) -> str:
    """The natural-type tag of one decoded BSON value (not None)."""
    tag = _TAG_OF_TYPE.get(type(value))
    if tag is not None:
        return tag
    # subclasses, in an order that puts each before its base (bool < int, Code < str, Binary < bytes)
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "long"
    if isinstance(value, int):
        return _int_tag(value)
    if isinstance(value, float):
        return "double"
    if isinstance(value, Code):
        return "javascript" if value.scope is None else "javascriptWithScope"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Binary):
        return "bytes" if value.subtype == 0 else "binary"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, _dt.datetime):
        return "date"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    for kind, tag in _TAG_OF_TYPE.items():
        if isinstance(value, kind):
            return tag
    raise TypeError(f"not a decoded BSON value: {type(value).__name__}")


# -- the lattice ---------------------------------------------------------------
_NUMERIC = (Kind.INT, Kind.FLOAT, Kind.DECIMAL)


def join(a: ColumnType, b: ColumnType) -> ColumnType:
    """The least column type holding every value of ``a`` and of ``b`` exactly (docs: "The lattice")."""
    if a == b:
        return a
    if a.kind is Kind.JSON or b.kind is Kind.JSON:
        return _JSON
    if a.kind in _NUMERIC and b.kind in _NUMERIC:
        if a.kind is b.kind is Kind.INT:
            return ColumnType(Kind.INT, bits=max(a.bits or 64, b.bits or 64))
        if a.kind is b.kind is Kind.FLOAT:
            return ColumnType(Kind.FLOAT, bits=max(a.bits or 64, b.bits or 64))
        if Kind.DECIMAL in (a.kind, b.kind):
            return _DECIMAL
        int_type = a if a.kind is Kind.INT else b
        # a double holds every int32 exactly, but not every int64
        return _FLOAT64 if (int_type.bits or 64) <= 32 else _DECIMAL
    if a.kind is b.kind is Kind.TEXT:
        return _TEXT
    return _JSON


# -- canonical values ----------------------------------------------------------
def _utc(value: _dt.datetime) -> _dt.datetime:
    if value.tzinfo is _UTC:
        return value
    return value.astimezone(_UTC) if value.tzinfo is not None else value.replace(tzinfo=_UTC)


_D128_SIGN = 0x8000000000000000
_D128_SPECIAL = 0x6000000000000000  # the "11" combination field: NaN, infinities, the rare long form
_D128_MAX_COEFFICIENT = 10**34 - 1


def _decimal128(value: Decimal128) -> Decimal:
    """The exact Decimal of a Decimal128: its fields read from the IEEE 754-2008 BID encoding.

    About a third of the time of ``Decimal128.to_decimal()`` for ordinary
    values; the special forms go through it.
    """
    raw = value.bid
    high = int.from_bytes(raw[8:], "little")
    if (high & _D128_SPECIAL) == _D128_SPECIAL:
        d = value.to_decimal()
        return Decimal("NaN") if d.is_nan() else d  # sNaN and -NaN: PostgreSQL has one NaN
    coefficient = ((high & 0x0001FFFFFFFFFFFF) << 64) | int.from_bytes(raw[:8], "little")
    if coefficient > _D128_MAX_COEFFICIENT:
        coefficient = 0  # non-canonical: the specification reads it as zero
    exponent = ((high >> 49) & 0x3FFF) - 6176
    return Decimal(f"{'-' if high & _D128_SIGN else ''}{coefficient}E{exponent}")


def _float_decimal(value: float) -> Decimal:
    """``value::text::numeric`` in PostgreSQL: the shortest decimal that reads back as the same double."""
    if math.isnan(value):
        return Decimal("NaN")
    if math.isinf(value):
        return Decimal("Infinity" if value > 0 else "-Infinity")
    return Decimal(repr(value).removesuffix(".0"))  # float8out writes 2.0 as "2", so numeric scale 0


def _int_decimal(value: int) -> Decimal:
    return Decimal(int(value))


def _numeric_text(value: Decimal) -> str:
    """A finite numeric as PostgreSQL prints it (plain notation, scale kept, no negative zero)."""
    text = format(value, "f")
    return text[1:] if value.is_zero() and text.startswith("-") else text


def _non_finite_json(value: Decimal | float) -> str | None:
    if isinstance(value, float):
        if math.isnan(value):
            return '"NaN"'
        if math.isinf(value):
            return '"Infinity"' if value > 0 else '"-Infinity"'
        return None
    if value.is_nan():
        return '"NaN"'
    if value.is_infinite():
        return '"Infinity"' if value > 0 else '"-Infinity"'
    return None


def _json_string(value: Any) -> str:
    return json.dumps(str(value), ensure_ascii=False)


def _float_jsonb(value: float) -> str:
    return _non_finite_json(value) or _numeric_text(_float_decimal(value))


def _decimal_jsonb(value: Decimal128) -> str:
    d = _decimal128(value)
    return _non_finite_json(d) or _numeric_text(d)


def _timestamptz_jsonb(value: _dt.datetime) -> str:
    value = _utc(value)
    base = value.replace(microsecond=0, tzinfo=None).isoformat()
    fraction = f".{value.microsecond:06d}".rstrip("0") if value.microsecond else ""
    return f'"{base}{fraction}+00:00"'


# to_jsonb(<value in its natural PostgreSQL type>) of each scalar tag, session TimeZone UTC
_JSONB_SCALAR: dict[str, Converter] = {
    "objectId": _json_string,
    "string": _json_string,
    "bool": lambda v: "true" if v else "false",
    "int": lambda v: str(int(v)),
    "long": lambda v: str(int(v)),
    "double": _float_jsonb,
    "decimal": _decimal_jsonb,
    "date": _timestamptz_jsonb,
    "uuid": _json_string,
    "bytes": lambda v: _json_string("\\x" + bytes(v).hex()),
}

# (column kind, tag) -> canonical value; a missing pair means the column cannot hold the value
_CONVERT: dict[Kind, dict[str, Converter]] = {
    Kind.TEXT: {"objectId": str, "string": str},
    Kind.INT: {"int": int, "long": int},
    Kind.FLOAT: {"int": float, "double": float},
    Kind.DECIMAL: {
        "int": _int_decimal,
        "long": _int_decimal,
        "double": _float_decimal,
        "decimal": _decimal128,
    },
    Kind.BOOLEAN: {"bool": bool},
    Kind.TIMESTAMPTZ: {"date": _utc},
    Kind.UUID: {"uuid": str},
    Kind.BYTES: {"bytes": bytes},
}


@functools.lru_cache(maxsize=256)
def _converters(column_type: ColumnType) -> dict[str, Converter]:
    """Tag -> converter for every tag whose values a column of ``column_type`` holds."""
    if column_type.kind is Kind.JSON:
        return {tag: _JSONB_SCALAR.get(tag, to_relaxed_json) for tag in _NATURAL}
    table = _CONVERT.get(column_type.kind, {})
    return {
        tag: table[tag]
        for tag, (natural, _alias) in _NATURAL.items()
        if tag in table and join(column_type, natural) == column_type
    }


@functools.lru_cache(maxsize=1024)
def _unchanged_tags(column_type: ColumnType, source_type: str) -> frozenset[str]:
    """Tags that leave a column as it is: it holds them, and their alias is already recorded."""
    aliases = set(source_type.split("|"))
    return frozenset(
        tag
        for tag, (natural, alias) in _NATURAL.items()
        if alias in aliases and join(column_type, natural) == column_type
    )


def _widen(column: Column, tag: str) -> Column:
    natural, alias = _NATURAL[tag]
    joined = join(column.type, natural)
    aliases = {a for a in column.source_type.split("|") if a} | {alias}
    source_type = "|".join(sorted(aliases))
    if joined == column.type and source_type == column.source_type:
        return column
    return dataclasses.replace(column, type=joined, source_type=source_type)


# -- Relaxed Extended JSON -------------------------------------------------------
def to_relaxed_json(value: Any) -> str:
    """MongoDB Relaxed Extended JSON v2 text of a decoded BSON value (documents, arrays, scalars).

    Types JSON lacks are written as ``bson.json_util`` writes them in relaxed
    mode (``{"$oid": …}``, ``{"$date": "…Z"}``, ``{"$binary": …}``, …).  Finite
    doubles are written as plain decimals, the way ``jsonb`` stores them
    (``1e+300`` becomes ``1`` and 300 zeros), so the text equals what
    PostgreSQL reads back; NaN and the infinities are ``{"$numberDouble": …}``.
    """
    if _plain(value):
        return json.dumps(value, ensure_ascii=False)  # the same text as _dump, in half the time
    parts: list[str] = []
    _dump(value, parts)
    return "".join(parts)


def _plain(value: Any) -> bool:
    """Whether ``value`` holds only what :func:`json.dumps` writes exactly as :func:`_dump` does."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or kind is Int64 or value is None:
        return True
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list:
        return all(_plain(v) for v in value)
    return False  # floats (written as PostgreSQL numerics), BSON types, SON, ...


def _dump(value: Any, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(json.dumps(value, ensure_ascii=False))
    elif value is None:
        out.append("null")
    elif kind is bool:
        out.append("true" if value else "false")
    elif kind is int or kind is Int64:
        out.append(str(int(value)))
    elif kind is float:
        if math.isfinite(value):
            out.append(_numeric_text(Decimal(repr(value))))
        else:
            name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            out.append('{"$numberDouble": "' + name + '"}')
    elif kind is list or kind is tuple:
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(", ")
            _dump(item, out)
        out.append("]")
    elif _is_document(value):
        out.append("{")
        for i, (field, item) in enumerate(value.items()):
            if i:
                out.append(", ")
            out.append(json.dumps(str(field), ensure_ascii=False))
            out.append(": ")
            _dump(item, out)
        out.append("}")
    elif isinstance(value, int) and not isinstance(value, bool):
        out.append(str(int(value)))
    elif isinstance(value, float):
        _dump(float(value), out)
    elif isinstance(value, str) and not isinstance(value, Code):
        _dump(str(value), out)
    elif isinstance(value, list):
        _dump(list(value), out)
    else:
        # ObjectId, datetime, Decimal128, binary, Timestamp, Regex, Code, DBRef, MinKey, MaxKey, …:
        # bson.json_util gives their Extended JSON as plain dicts, which are dumped as above
        _dump(json_util.default(value, json_options=_RELAXED), out)


def _is_document(value: Any) -> bool:
    kind = type(value)
    return kind is dict or kind is SON or (isinstance(value, Mapping) and not isinstance(value, DBRef))


# -- shapes ----------------------------------------------------------------------
def _path_of(column: Column) -> Path | None:
    """The document path a column holds; None for the overflow column."""
    if column.path is not None:
        return column.path
    return None if column.name == OVERFLOW_COLUMN else (column.name,)


def _base_name(path: Path) -> str:
    return PATH_SEPARATOR.join(segment or EMPTY_NAME for segment in path)


def _unique_name(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken or name == OVERFLOW_COLUMN:
        name = f"{base}~{n}"
        n += 1
    return name


class _Index:
    """Lookups for one shape, computed once per shape."""

    def __init__(self, shape: TableSchema):
        self.shape = shape
        self.position: dict[Path, int] = {}
        self.overflow = False
        for i, column in enumerate(shape.columns):
            path = _path_of(column)
            if path is None:
                self.overflow = True
            else:
                self.position[path] = i
        self.names = [c.name for c in shape.columns]
        self.converters = [_converters(c.type) for c in shape.columns]
        self.unchanged = [_unchanged_tags(c.type, c.source_type) for c in shape.columns]
        self.data_columns = len(shape.columns) - (1 if self.overflow else 0)
        self.empty_row: dict[str, Any] = dict.fromkeys(self.names)


def _put(target: dict[str, Any], path: Path, value: Any) -> None:
    for segment in path[:-1]:
        target = target.setdefault(segment, {})
    target[path[-1]] = value


class DocumentMapper:
    """Shapes and rows for the documents of one collection.

    Keeps a small cache of per-shape lookups; use one mapper per thread.
    """

    _CACHED_SHAPES = 4

    def __init__(self, collection: str, options: MappingOptions = MappingOptions()):
        self.collection = collection
        self.options = options
        self._indexes: dict[int, _Index] = {}

    def _index(self, shape: TableSchema) -> _Index:
        index = self._indexes.get(id(shape))
        if index is not None and index.shape is shape:
            return index
        index = _Index(shape)
        if len(self._indexes) >= self._CACHED_SHAPES:
            self._indexes.pop(next(iter(self._indexes)))
        self._indexes[id(shape)] = index
        return index

    def _leaves(self, doc: Mapping[str, Any]) -> Iterator[tuple[Path, Any]]:
        """(path, value) of every field that gets a column of its own, in document order; nulls skipped."""
        depth = self.options.flatten_depth
        if depth == 0:
            for field, value in doc.items():
                if value is not None:
                    yield (field,), value
            return
        yield from self._flattened(doc, (), depth)

    def _flattened(self, doc: Mapping[str, Any], prefix: Path, depth: int) -> Iterator[tuple[Path, Any]]:
        for field, value in doc.items():
            if value is None:
                continue
            path = (*prefix, field)
            if len(path) <= depth and path != (ID_FIELD,) and _is_document(value):
                yield from self._flattened(value, path, depth)
            else:
                yield path, value

    def initial_shape(self, id_value: Any = None) -> TableSchema:
        """The shape of a collection before any document: ``_id`` alone, typed by ``id_value``.

        An empty collection (``id_value`` None) starts with an ObjectId ``_id``.
        """
        natural, alias = _NATURAL["objectId" if id_value is None else _tag(id_value)]
        column = Column(ID_FIELD, natural, nullable=False, source_type=alias, path=(ID_FIELD,))
        return TableSchema(name=self.collection, columns=(column,), key=(ID_FIELD,))

    def fit(self, shape: TableSchema, doc: Mapping[str, Any]) -> TableSchema:
        """``shape`` widened to hold ``doc``; ``shape`` itself when it already does.

        New fields become columns appended in document order (or, once the
        shape has ``max_columns`` columns, go to the overflow column); a column
        whose type cannot hold a value is joined with the value's type along
        the lattice.  Existing columns are never renamed, reordered or removed.
        """
        index = self._index(shape)
        old_count = len(shape.columns)
        columns: list[Column] | None = None  # copied on the first change
        added: dict[Path, int] = {}
        taken: set[str] | None = None
        overflow = index.overflow
        for path, value in self._leaves(doc):
            tag = _tag(value)
            position = index.position.get(path)
            if position is None:
                position = added.get(path)
            if position is not None:
                if columns is None:
                    if tag in index.unchanged[position]:
                        continue
                    current = shape.columns[position]
                else:
                    current = columns[position]
                    if position < old_count and current is shape.columns[position]:
                        if tag in index.unchanged[position]:
                            continue
                widened = _widen(current, tag)
                if widened is not current:
                    if columns is None:
                        columns = list(shape.columns)
                    columns[position] = widened
                continue
            if index.data_columns + len(added) < self.options.max_columns:
                if columns is None:
                    columns = list(shape.columns)
                if taken is None:
                    taken = set(index.names)
                name = _unique_name(_base_name(path), taken)
                taken.add(name)
                natural, alias = _NATURAL[tag]
                columns.append(Column(name, natural, source_type=alias, path=path))
                added[path] = len(columns) - 1
            elif not overflow:
                if columns is None:
                    columns = list(shape.columns)
                columns.append(Column(OVERFLOW_COLUMN, _JSON, source_type="object", path=None))
                overflow = True
        if columns is None:
            return shape
        return TableSchema(name=shape.name, columns=tuple(columns), key=shape.key)

    def row(self, shape: TableSchema, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Canonical values of ``doc`` for every column of ``shape`` (None where the field is absent).

        Raises ValueError when ``shape`` does not fit ``doc`` (a field with no
        column and no overflow column, or a value its column cannot hold) or
        when the document's ``_id`` is missing or null.
        """
        index = self._index(shape)
        out = dict(index.empty_row)
        extra: dict[str, Any] | None = None
        for path, value in self._leaves(doc):
            position = index.position.get(path)
            if position is None:
                if not index.overflow:
                    raise ValueError(
                        f"{self.collection}: the shape has no column for field {'.'.join(path)!r}; "
                        "fit() it to the document first"
                    )
                if extra is None:
                    extra = {}
                _put(extra, path, value)
                continue
            tag = _tag(value)
            convert = index.converters[position].get(tag)
            if convert is None:
                column = shape.columns[position]
                raise ValueError(
                    f"{self.collection}: column {column.name!r} ({column.type.describe()}) cannot hold "
                    f"a BSON {_NATURAL[tag][1]}; fit() the shape to the document first"
                )
            out[index.names[position]] = convert(value)
        if extra:
            out[OVERFLOW_COLUMN] = to_relaxed_json(extra)
        # A null _id (MongoDB allows one per collection) stays None: the primary key refuses it, and
        # the engine sends the row to the dead letters with PostgreSQL's reason, losing nothing.
        return out

    def key(self, shape: TableSchema, id_value: Any) -> dict[str, Any]:
        """``{"_id": value}``: the canonical key of the document whose ``_id`` is ``id_value``.

        Raises ValueError when ``id_value`` is None or its BSON type does not fit
        the shape's ``_id`` column: no row of the table can have that key.
        """
        index = self._index(shape)
        position = index.position.get((ID_FIELD,))
        if position is None or id_value is None:
            raise ValueError(f"{self.collection}: no _id column, or a null _id")
        tag = _tag(id_value)
        convert = index.converters[position].get(tag)
        if convert is None:
            raise ValueError(
                f"{self.collection}: an _id of BSON type {_NATURAL[tag][1]} does not fit the _id column "
                f"({shape.columns[position].type.describe()})"
            )
        return {index.names[position]: convert(id_value)}


def evolution(old: TableSchema, new: TableSchema) -> list[tuple[str, Column | None, Column]]:
    """What a destination must do to go from ``old`` to ``new``, in column order.

    ``("add", None, column)`` for a new column, ``("widen", before, after)``
    for a column whose type moved up the lattice.  A change of
    ``source_type`` alone needs nothing.  Raises ValueError if ``new`` is not
    a widening of ``old`` (a column removed, or a type narrowed or moved
    sideways).
    """
    before = {c.name: c for c in old.columns}
    gone = set(before) - {c.name for c in new.columns}
    if gone:
        raise ValueError(f"{new.name}: columns {sorted(gone)} are missing from the new shape")
    steps: list[tuple[str, Column | None, Column]] = []
    for column in new.columns:
        previous = before.get(column.name)
        if previous is None:
            steps.append(("add", None, column))
        elif previous.type != column.type:
            if join(previous.type, column.type) != column.type:
                raise ValueError(
                    f"{new.name}: column {column.name!r} cannot go from {previous.type.describe()} "
                    f"to {column.type.describe()}"
                )
            steps.append(("widen", previous, column))
    return steps
