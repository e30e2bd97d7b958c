"""MySQL/MariaDB column types and values, mapped to the shared type set.

Three jobs, one per public function group:

* :func:`column_type` reads a column's type spelling (``COLUMN_TYPE`` from
  information_schema, or a DDL spelling such as ``BIGINT UNSIGNED``) and
  returns the shared :class:`~warpd.types.ColumnType`;
* :func:`snapshot_converter` (with :func:`snapshot_select_expr` and
  :data:`SNAPSHOT_SESSION_SQL`) turns what pymysql returns into the canonical
  value;
* :func:`binlog_converter` (with :func:`binlog_image`) turns what
  pymysqlreplication decodes from a row event into the *same* canonical value.

docs/type-mapping.md is the reference for every decision made here (zero
dates, SET, spatial types, generated columns, charsets, JSON).  Converters are
built once per column and then run per value, so each is a small closure
chosen by kind; none of them does type dispatch per call.
"""

from __future__ import annotations

import codecs
import datetime as _dt
import functools
import ipaddress
import json
import logging
import math
import re
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from warpd.types import Column, ColumnType, Kind

log = logging.getLogger(__name__)

Converter = Callable[[Any], Any]

SNAPSHOT_SESSION_SQL: tuple[str, ...] = (
    # TIMESTAMP values come back as UTC wall-clock, whatever the server's zone.
    "SET SESSION time_zone = '+00:00'",
    # No PAD_CHAR_TO_FULL_LENGTH (CHAR must read as the binlog carries it, without
    # trailing spaces), no NO_BACKSLASH_ESCAPES (pymysql escapes with backslashes),
    # no ANSI_QUOTES / ORACLE modes that change how our queries parse.
    "SET SESSION sql_mode = ''",
)
"""Statements the source runs on every snapshot connection, in order.

The connection itself is opened with ``charset='utf8mb4'``, so the server
converts every text column (latin1, ucs2, ...) to UTF-8 on the way out.
"""

NOT_NULL_ZERO_DATE = "-infinity"
"""What a zero or partial date (``0000-00-00``, ``2020-00-15``) becomes in a NOT NULL column."""

_UTC = _dt.UTC
_EPOCH = _dt.datetime(1970, 1, 1)
_TIMESTAMP_WRAP = _dt.timedelta(seconds=2**32)
_F32 = struct.Struct("<f")

# pymysqlreplication's markers for a None it produced itself (row_event NONE_SOURCE).
_NONE_ABSENT = "cols bitmap"
_NONE_EMPTY_SET = "empty set"


@dataclass(frozen=True)
class MySQLColumnInfo:
    """Source-specific facts about a column that the shared :class:`Column` does not carry.

    ``charset`` is information_schema's CHARACTER_SET_NAME (``None`` for
    non-text columns); the binlog converter needs it because pymysqlreplication
    decodes some charsets wrongly or not at all.  ``generated`` is
    ``"VIRTUAL"``, ``"STORED"`` or ``None``.
    """

    name: str
    charset: str | None = None
    generated: str | None = None


# --------------------------------------------------------------------------
# Type spellings
# --------------------------------------------------------------------------

_SYNONYMS = [
    (re.compile(p), r)
    for p, r in (
        (r"^double\s+precision\b", "double"),
        (r"^(?:national\s+)?(?:char|character)\s+varying\b", "varchar"),
        (r"^(?:national\s+varchar|nchar\s+varchar|nchar\s+varying|nvarchar)\b", "varchar"),
        (r"^(?:national\s+(?:char|character)|nchar|character)\b", "char"),
        (r"^char\s+byte\b", "binary"),
        (r"^long\s+varbinary\b", "mediumblob"),
        (r"^long(?:\s+varchar)?\b", "mediumtext"),
    )
]

_INT_BYTES = {
    "tinyint": 1,
    "int1": 1,
    "smallint": 2,
    "int2": 2,
    "mediumint": 3,
    "int3": 3,
    "middleint": 3,
    "int": 4,
    "integer": 4,
    "int4": 4,
    "bigint": 8,
    "int8": 8,
}
_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext"}
_BYTES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "vector"}
_SPATIAL = {
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
    "geomcollection",
}
_LABEL = re.compile(r"'((?:[^'\\]|''|\\.)*)'|\"((?:[^\"\\]|\"\"|\\.)*)\"", re.S)


@dataclass(frozen=True)
class _Spelling:
    base: str  # lower-case canonical name, synonyms resolved
    args: tuple[str, ...]  # numeric arguments ("20", "65", "30")
    labels: tuple[str, ...]  # ENUM/SET members, unescaped
    unsigned: bool
    binary_charset: bool  # CHARACTER SET binary: a text spelling that stores bytes


@functools.lru_cache(maxsize=4096)
def _parse(spelling: str) -> _Spelling:
    text = spelling.strip()
    lower = text.lower()
    for pattern, replacement in _SYNONYMS:
        m = pattern.match(lower)
        if m:
            text = replacement + text[m.end() :]
            lower = replacement + lower[m.end() :]
            break
    m = re.match(r"[a-z_][a-z0-9_]*", lower)
    base = m.group(0) if m else lower
    rest, rest_lower = text[len(base) :].lstrip(), lower[len(base) :].lstrip()
    inner = ""
    if rest.startswith("("):
        depth, quote, escaped, end = 0, "", False, len(rest)
        for index, ch in enumerate(rest):
            if escaped:
                escaped = False
            elif quote:
                escaped = ch == "\\"
                quote = "" if ch == quote else quote  # a doubled quote re-enters on the next char
            elif ch in "'\"":
                quote = ch
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    end = index
                    break
        inner, rest_lower = rest[1:end], rest_lower[end + 1 :]
    labels: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    if base in ("enum", "set"):
        labels = tuple(_unquote(a, b) for a, b in _LABEL.findall(inner))
    elif inner:
        args = tuple(a.strip() for a in inner.split(","))
    words = set(re.findall(r"[a-z0-9_]+", rest_lower))
    binary_charset = bool(re.search(r"\b(?:character\s+set|charset)\s+binary\b", rest_lower))
    return _Spelling(base, args, labels, "unsigned" in words or "zerofill" in words, binary_charset)


def _unquote(single: str, double: str) -> str:
    if single or not double:
        return re.sub(r"\\(.)", r"\1", single.replace("''", "'"), flags=re.S)
    return re.sub(r"\\(.)", r"\1", double.replace('""', '"'), flags=re.S)


def _int_arg(spelling: _Spelling, index: int, default: int | None) -> int | None:
    try:
        return int(spelling.args[index])
    except (IndexError, ValueError):
        return default


def column_type(column_type: str, *, data_type: str | None = None, is_json: bool = False) -> ColumnType:
    """The shared type for a MySQL/MariaDB type spelling.

    ``column_type`` is information_schema's COLUMN_TYPE (``"bigint(20) unsigned"``)
    or a DDL spelling (``"BIGINT UNSIGNED"``); ``data_type`` (DATA_TYPE) is used
    when the spelling's base name is not recognised; ``is_json`` marks MariaDB's
    JSON, which is a LONGTEXT with ``CHECK (json_valid(col))`` (see
    :func:`json_columns`).  Unknown types map to TEXT with a warning.
    """
    if is_json:
        return ColumnType(Kind.JSON)
    sp = _parse(column_type)
    ct = _shared_type(sp)
    if ct is None and data_type:
        ct = _shared_type(_parse(data_type))
    if ct is None:
        log.warning("unknown MySQL type %r: replicating it as text", column_type)
        return ColumnType(Kind.TEXT)
    return ct


def _shared_type(sp: _Spelling) -> ColumnType | None:
    base = sp.base
    if base in _INT_BYTES:
        width = _INT_BYTES[base] * 8 + (1 if sp.unsigned else 0)  # magnitude bits incl. sign
        if width > 64:
            return ColumnType(Kind.DECIMAL, precision=20, scale=0)
        return ColumnType(Kind.INT, bits=16 if width <= 16 else 32 if width <= 32 else 64)
    if base == "serial":  # BIGINT UNSIGNED NOT NULL AUTO_INCREMENT UNIQUE
        return ColumnType(Kind.DECIMAL, precision=20, scale=0)
    if base in ("bool", "boolean"):
        return ColumnType(Kind.INT, bits=16)  # TINYINT(1): a 2 must survive
    if base == "year":
        return ColumnType(Kind.INT, bits=16)
    if base in ("decimal", "dec", "numeric", "fixed"):
        precision = _int_arg(sp, 0, 10)
        return ColumnType(Kind.DECIMAL, precision=precision, scale=_int_arg(sp, 1, 0))
    if base in ("float", "float4"):
        # FLOAT(p) with p > 24 is a DOUBLE; FLOAT(M,D) is still single precision.
        bits = 64 if len(sp.args) == 1 and (_int_arg(sp, 0, 0) or 0) > 24 else 32
        return ColumnType(Kind.FLOAT, bits=bits)
    if base in ("double", "real", "float8"):
        return ColumnType(Kind.FLOAT, bits=64)
    if base == "bit":
        return ColumnType(Kind.BITS, length=_int_arg(sp, 0, 1))
    if base in _TEXT:
        length = _int_arg(sp, 0, 1 if base == "char" else None) if base in ("char", "varchar") else None
        return ColumnType(Kind.BYTES if sp.binary_charset else Kind.TEXT, length=length)
    if base in _BYTES:
        length = _int_arg(sp, 0, 1 if base == "binary" else None) if base in ("binary", "varbinary") else None
        return ColumnType(Kind.BYTES, length=length)
    if base in ("enum", "inet6", "inet4"):
        return ColumnType(Kind.TEXT)
    if base == "set":
        return ColumnType(Kind.TEXT_ARRAY)
    if base == "json":
        return ColumnType(Kind.JSON)
    if base == "uuid":
        return ColumnType(Kind.UUID)
    if base == "date":
        return ColumnType(Kind.DATE)
    if base == "time":
        return ColumnType(Kind.TIME, precision=_int_arg(sp, 0, 0))
    if base == "datetime":
        return ColumnType(Kind.TIMESTAMP, precision=_int_arg(sp, 0, 0))
    if base == "timestamp":
        return ColumnType(Kind.TIMESTAMPTZ, precision=_int_arg(sp, 0, 0))
    if base in _SPATIAL:
        return ColumnType(Kind.BYTES)
    return None


_JSON_CHECK = re.compile(r"^\s*json_valid\s*\(\s*`((?:[^`]|``)+)`\s*\)\s*$", re.I)


def json_columns(cursor: Any, database: str, table: str) -> set[str]:
    """Names of the table's MariaDB JSON columns (those checked by ``json_valid(col)`` alone).

    ``cursor`` is a pymysql cursor.  MySQL has a native JSON type, so on MySQL
    this returns an empty set without querying.
    """
    if "mariadb" not in cursor.connection.get_server_info().lower():
        return set()
    cursor.execute(
        "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
        "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
        (database, table),
    )
    found = set()
    for (clause,) in cursor.fetchall():
        m = _JSON_CHECK.match(clause or "")
        if m:
            found.add(m.group(1).replace("``", "`"))
    return found


def describe_columns(cursor: Any, database: str, table: str) -> list[tuple[Column, MySQLColumnInfo]]:
    """The table's columns in source order, each with its :class:`MySQLColumnInfo`.

    Generated columns (VIRTUAL and STORED) are included and flagged: MariaDB
    writes both into FULL row images, so both replicate as ordinary columns.
    """
    json_cols = json_columns(cursor, database, table)
    cursor.execute(
        "SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, EXTRA "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    result = []
    for name, ctype, dtype, nullable, charset, extra in cursor.fetchall():
        extra = (extra or "").upper()
        generated = (
            "VIRTUAL" if "VIRTUAL GENERATED" in extra else "STORED" if "STORED GENERATED" in extra else None
        )
        col = Column(
            name=name,
            type=column_type(ctype, data_type=dtype, is_json=name in json_cols),
            nullable=nullable == "YES",
            source_type=ctype,
            generated=generated is not None,
        )
        result.append((col, MySQLColumnInfo(name=name, charset=charset, generated=generated)))
    return result


# --------------------------------------------------------------------------
# Value helpers shared by both paths
# --------------------------------------------------------------------------


def _nullable(convert: Converter, null_value: Any = None) -> Converter:
    def wrapped(value: Any) -> Any:
        return null_value if value is None else convert(value)

    return wrapped


def _float32(value: float) -> float:
    """The shortest decimal that reads back as the same IEEE single, as a Python float."""
    single = _F32.unpack(_F32.pack(value))[0]
    if not math.isfinite(single):
        return single
    for digits in (6, 7, 8):  # %g drops trailing zeros, so 6 covers every shorter form
        candidate = float(f"{single:.{digits}g}")
        if _F32.unpack(_F32.pack(candidate))[0] == single:
            return candidate
    return float(f"{single:.9g}")


class _Verbatim(str):
    """A JSON number token kept as written: a double would change its value."""


def _parse_float(token: str) -> Any:
    value = float(token)
    if math.isfinite(value) and Decimal(repr(value)) == Decimal(token):
        return value
    return _Verbatim(token)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def json_text(value: Any) -> str:
    """The canonical JSON value: the source's own text when it has one.

    MariaDB stores JSON as text and both read paths return that text
    unchanged, so it is kept verbatim (lossless, and PostgreSQL's jsonb
    normalises whitespace, key order and repeated keys the same way for both).
    MySQL's binary JSON arrives from the binlog as a parsed structure, which
    is serialised by :func:`normalise_json`.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    return normalise_json(value)


def normalise_json(value: Any) -> str:
    """JSON text in the one form both paths produce.

    Compact separators, keys in source order (a repeated key keeps its last
    value), non-ASCII unescaped, numbers that a double holds exactly in
    Python's shortest form (``2.50`` -> ``2.5``), longer numbers verbatim.
    Accepts text, UTF-8 bytes, or the structure pymysqlreplication parses from
    MySQL's binary JSON.
    """
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        value = json.loads(value, parse_float=_parse_float, parse_constant=_reject_constant)
    else:
        value = _plain(value)
    return _dump(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {_plain(k) if isinstance(k, bytes) else str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, float):
        return _parse_float(repr(value))
    if isinstance(value, Decimal):
        return _parse_float(str(value))
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)  # MySQL JSON opaque values (dates, times)


def _dump(value: Any) -> str:
    if isinstance(value, _Verbatim):
        return str.__str__(value)
    if isinstance(value, dict):
        return (
            "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _dump(v) for k, v in value.items()) + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _zero_date(col: Column) -> Any:
    return None if col.nullable else NOT_NULL_ZERO_DATE


def _bits(length: int) -> Converter:
    def convert(value: Any) -> str:
        if isinstance(value, str) and len(value) == length:
            return value
        number = int(value, 2) if isinstance(value, str) else int.from_bytes(value, "big")
        return format(number, f"0{length}b")

    return convert


def _set_members(value: str) -> list[str]:
    return value.split(",") if value else []


# --------------------------------------------------------------------------
# Snapshot path (pymysql)
# --------------------------------------------------------------------------


def snapshot_select_expr(col: Column, quoted_name: str) -> str:
    """The select-list expression the snapshot reads ``col`` through.

    FLOAT is read widened to DOUBLE because the text protocol prints only six
    significant digits of a FLOAT; everything else is read as is.
    """
    if col.type.kind is Kind.FLOAT and col.type.bits == 32:
        return f"CAST({quoted_name} AS DOUBLE)"
    return quoted_name


_LONGEST = {"tinytext": 255, "tinyblob": 255, "text": 65_535, "blob": 65_535}
_LONGEST.update({"mediumtext": 16_777_215, "mediumblob": 16_777_215, "enum": 255 * 4})
_ANY_LENGTH = 4_294_967_295


def max_byte_length(col: Column) -> int:
    """The most bytes a value of ``col`` can hold (at most 4 per character), from its type spelling."""
    sp = _parse(col.source_type) if col.source_type else None
    if sp is None:
        return _ANY_LENGTH
    if sp.base in ("char", "varchar"):
        return (_int_arg(sp, 0, 1) or 1) * (1 if sp.binary_charset else 4)
    if sp.base in ("binary", "varbinary"):
        return _int_arg(sp, 0, 1) or 1
    return _LONGEST.get(sp.base, _ANY_LENGTH)


def snapshot_key_expr(col: Column, quoted_name: str) -> str:
    """The expression a snapshot chunk reads key column ``col`` through, to bound the next chunk.

    The value read must compare in ``WHERE (key) > (value)`` exactly as ``ORDER
    BY key`` sorts.  ENUM and SET sort by their number (declaration index, bit
    mask) but compare with a string as text, and BIT compares with bytes as
    text, so all three are read as numbers; FLOAT is read widened to DOUBLE,
    as its text form has six digits only.
    """
    sp = _parse(col.source_type) if col.source_type else None
    if sp is not None and sp.base in ("enum", "set", "bit"):
        return f"({quoted_name} + 0)"
    if col.type.kind is Kind.FLOAT and col.type.bits == 32:
        return f"CAST({quoted_name} AS DOUBLE)"
    return quoted_name


def snapshot_key_value(col: Column, value: Any) -> Any:
    """A stored resume value as :func:`snapshot_key_expr` reads it (older versions stored ENUM/SET
    labels and BIT bytes)."""
    sp = _parse(col.source_type) if col.source_type else None
    if sp is None:
        return value
    if sp.base == "enum" and isinstance(value, str):
        return sp.labels.index(value) + 1 if value in sp.labels else 0
    if sp.base == "set" and isinstance(value, str):
        return sum(1 << sp.labels.index(m) for m in _set_members(value) if m in sp.labels)
    if sp.base == "bit" and isinstance(value, (bytes, bytearray)):
        return int.from_bytes(value, "big")
    return value


def snapshot_converter(col: Column) -> Converter:
    """Turn a value pymysql returned for ``col`` (read via :func:`snapshot_select_expr`,
    in a session prepared by :data:`SNAPSHOT_SESSION_SQL`) into the canonical value."""
    kind, ct = col.type.kind, col.type
    zero = _zero_date(col)
    if kind is Kind.INT:
        return _nullable(int)
    if kind is Kind.DECIMAL:
        return _nullable(Decimal)
    if kind is Kind.FLOAT:
        return _nullable(_float32 if ct.bits == 32 else float)
    if kind is Kind.BITS:
        return _nullable(_bits(ct.length or 1))
    if kind is Kind.BYTES:
        return _nullable(bytes)
    if kind in (Kind.DATE, Kind.TIMESTAMP):
        return _nullable(lambda v: zero if isinstance(v, str) else v)  # pymysql returns zero dates as text
    if kind is Kind.TIMESTAMPTZ:
        return _nullable(lambda v: zero if isinstance(v, str) else v.replace(tzinfo=_UTC))
    if kind is Kind.TIME:
        return _nullable(lambda v: v)
    if kind is Kind.JSON:
        return _nullable(json_text)
    if kind is Kind.TEXT_ARRAY:
        return _nullable(_set_members)
    if kind is Kind.UUID:
        return _nullable(str)
    return _nullable(_as_text)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode(
            "utf-8", "replace"
        )  # only unknown types arrive as bytes; warned at mapping
    return str(value)


# --------------------------------------------------------------------------
# Binlog path (pymysqlreplication)
# --------------------------------------------------------------------------

# Python codecs for MySQL charsets pymysqlreplication cannot decode (it then
# returns bytes) or decodes in the wrong byte order (utf16: native order).
_CODECS = {
    "ucs2": "utf-16-be",
    "utf16": "utf-16-be",
    "utf16le": "utf-16-le",
    "utf32": "utf-32-be",
    "eucjpms": "euc_jis_2004",
    "ujis": "euc_jp",
    "latin1": "cp1252",
    "utf8mb3": "utf-8",
    "utf8mb4": "utf-8",
    "utf8": "utf-8",
}


def _mysql_latin1_table() -> str:
    # MySQL's latin1 is cp1252 with its five undefined bytes mapped to the C1 controls of the same
    # number (0x81 -> U+0081, 0x8D, 0x8F, 0x90, 0x9D), as CONVERT(... USING utf8mb4) does.
    chars = []
    for byte in range(256):
        try:
            chars.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:
            chars.append(chr(byte))
    return "".join(chars)


_MYSQL_LATIN1 = _mysql_latin1_table()


def decode_mysql_latin1(data: bytes) -> str:
    """Bytes of a latin1 column, decoded as MySQL decodes them."""
    return codecs.charmap_decode(data, "strict", _MYSQL_LATIN1)[0]


@functools.cache
def text_decoder(encoding_name: str) -> Callable[[bytes], str] | None:
    """How pymysqlreplication should decode a text value it has ``encoding_name`` for.

    ``encoding_name`` is what the library keeps as a column's
    ``character_set_name``: its Python name for the MySQL charset (``cp1252``
    for latin1, ``utf8`` for utf8mb4...).  ``None`` for charsets Python has no
    codec for (``binary``, ``swe7``...): the value stays bytes and
    :func:`binlog_converter` decodes it.  latin1 is decoded as MySQL's own
    cp1252 variant.  The decoder raises ``UnicodeDecodeError`` on bytes the
    charset cannot hold.
    """
    from pymysql.charset import charset_by_name

    name = encoding_name.lower()
    if name in ("cp1252", "latin1"):  # MySQL has no cp1252: the library's name for latin1
        return decode_mysql_latin1
    known = charset_by_name(name)
    encoding = known.encoding if known else name
    try:
        codecs.lookup(encoding)
    except LookupError:
        return None
    return lambda data: data.decode(encoding)


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    name = _CODECS.get(charset.lower(), charset.lower())
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


@functools.cache
def _library_mangles_negative_fractional_time() -> bool:
    """Whether pymysqlreplication decodes -00:00:00.25 (TIME(6)) as -00:00:00.75.

    MySQL stores a negative TIME2 as the complement of the whole packed value,
    fraction included; pymysqlreplication (1.0.17) complements the integer part
    alone.  Probing the decoder keeps the fix-up off once the library is fixed.
    """
    try:
        from pymysqlreplication.row_event import RowsEvent

        class _Packet:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def read_int_be_by_size(self, size: int) -> int:  # signed, as the library's is
                chunk, self.data = self.data[:size], self.data[size:]
                return int.from_bytes(chunk, "big", signed=True)

        class _Col:
            fsp = 6

        probe = object.__new__(RowsEvent)
        probe.packet = _Packet((0x800000000000 - 250000).to_bytes(6, "big"))
        value = probe._RowsEvent__read_time2(_Col())
        return value == _dt.timedelta(microseconds=-750000)
    except Exception:  # noqa: BLE001 - a changed library layout must not stop replication
        log.warning("could not probe pymysqlreplication's TIME decoding; assuming 1.0.17 behaviour")
        return True


_SECOND = _dt.timedelta(seconds=1)
_NO_TIME = _dt.timedelta(0)


def _binlog_time(value: _dt.timedelta) -> _dt.timedelta:
    # The library returns -(S + 1) + f for the true -(S + f); undo that.
    if value < _NO_TIME and value.microseconds and _library_mangles_negative_fractional_time():
        whole = _dt.timedelta(days=value.days, seconds=value.seconds)
        return whole + _SECOND - _dt.timedelta(microseconds=value.microseconds)
    return value


def _binlog_int(sp: _Spelling | None) -> Converter:
    if sp is None or sp.base not in _INT_BYTES:
        return int
    bits = _INT_BYTES[sp.base] * 8
    if sp.unsigned:  # the library honours signedness metadata; this keeps us right if it ever does not
        return lambda v: v + (1 << bits) if v < 0 else v
    limit = 1 << (bits - 1)
    return lambda v: v - (1 << bits) if v >= limit else v


def _binlog_text(sp: _Spelling | None, info: MySQLColumnInfo | None, col: Column) -> Converter:
    base = sp.base if sp else ""
    if base == "inet6":
        return lambda v: v if isinstance(v, str) and v else _inet6_text(_padded(v, 16))
    if base == "inet4":
        return lambda v: v if isinstance(v, str) and v else str(ipaddress.IPv4Address(_padded(v, 4)))
    charset = (info.charset or "").lower() if info else ""
    codec = _codec(charset) or "utf-8"
    if base == "enum" and sp is not None and _undecodable(sp.labels, codec):

        def enum_value(v: Any) -> str:
            if v == "":
                raise ValueError(
                    f"column {col.name!r}: ENUM label not decodable from the binlog "
                    f"(non-UTF-8 labels in charset {charset}); resnapshot the table"
                )
            return v

        return enum_value
    if charset == "utf16":
        # Decoded in native (little-endian) order by the library; MySQL's utf16 is big-endian.
        return lambda v: (
            v.encode("utf-16-le", "surrogatepass").decode(codec)
            if isinstance(v, str)
            else bytes(v).decode(codec)
        )
    return lambda v: v if isinstance(v, str) else bytes(v).decode(codec)


def _undecodable(labels: Iterable[str], codec: str) -> bool:
    for label in labels:
        try:
            label.encode(codec).decode("utf-8")
        except (UnicodeError, LookupError):
            return True
    return False


def _padded(value: Any, length: int) -> bytes:
    # The binlog drops trailing 0x00 of fixed-width binary values; an empty one arrives as ''.
    data = value.encode("latin-1") if isinstance(value, str) else bytes(value)
    return data.ljust(length, b"\0")


def _inet6_text(data: bytes) -> str:
    """MariaDB's own INET6 spelling, which is not RFC 5952.

    The first longest run of zero groups becomes ``::`` even when it is one
    group long, and only ``::a.b.c.d`` / ``::ffff:a.b.c.d`` (six zero groups,
    or five and ffff) keep a dotted IPv4 tail.
    """
    words = struct.unpack(">8H", data)
    gap_pos, gap_len, run = -1, 0, -1
    for index, word in enumerate((*words, 1)):
        if word == 0 and run < 0:
            run = index
        elif word != 0 and run >= 0:
            if index - run > gap_len:
                gap_pos, gap_len = run, index - run
            run = -1
    out, index = [], 0
    while index < 8:
        if index == gap_pos:
            out.append("::" if index == 0 else ":")
            index += gap_len
            continue
        if index == 6 and gap_pos == 0 and (gap_len == 6 or (gap_len == 5 and words[5] == 0xFFFF)):
            out.append(".".join(str(b) for b in data[12:]))
            break
        out.append(f"{words[index]:x}" + (":" if index < 7 else ""))
        index += 1
    return "".join(out)


def _binlog_bytes(sp: _Spelling | None, ct: ColumnType) -> Converter:
    if sp is not None and (sp.base == "binary" or (sp.base == "char" and sp.binary_charset)):
        length = ct.length or 1
        return lambda v: _padded(v, length)
    return lambda v: v.encode("latin-1") if isinstance(v, str) else bytes(v)


def _binlog_set(sp: _Spelling | None, col: Column, info: MySQLColumnInfo | None) -> Converter:
    order = {label: i for i, label in enumerate(sp.labels)} if sp else {}
    ambiguous = (
        sp is not None and info is not None and _undecodable(sp.labels, _codec(info.charset) or "utf-8")
    )

    def convert(value: Any) -> list[str]:
        if isinstance(value, str):
            return _set_members(value)
        if ambiguous and "" in value:
            raise ValueError(
                f"column {col.name!r}: SET label not decodable from the binlog; resnapshot the table"
            )
        return sorted(value, key=lambda m: order.get(m, len(order)))

    return convert


def _binlog_timestamptz(zero: Any) -> Converter:
    def convert(value: _dt.datetime) -> Any:
        if value == _EPOCH:
            return zero  # epoch second 0 is how a zero TIMESTAMP is stored
        if value < _EPOCH:
            value += _TIMESTAMP_WRAP  # unsigned 32-bit seconds (MariaDB 11.5+) read as signed
        return value.replace(tzinfo=_UTC)

    return convert


def binlog_converter(col: Column, info: MySQLColumnInfo | None = None) -> Converter:
    """Turn a value pymysqlreplication decoded for ``col`` into the canonical value.

    ``info`` supplies the column's charset; without it text is trusted as the
    library decoded it.  Feed whole row images through :func:`binlog_image`,
    which also tells an empty SET from NULL.
    """
    kind, ct = col.type.kind, col.type
    sp = _parse(col.source_type) if col.source_type else None
    zero = _zero_date(col)
    if kind is Kind.INT:
        if sp is not None and sp.base == "year":
            return _nullable(lambda v: 0 if v == 1900 else v)  # YEAR 0000 is stored as 0, read as 1900+0
        return _nullable(_binlog_int(sp))
    if kind is Kind.DECIMAL:
        fix = _binlog_int(sp)
        return _nullable(lambda v: Decimal(fix(v)) if isinstance(v, int) else Decimal(v))
    if kind is Kind.FLOAT:
        return _nullable(_float32 if ct.bits == 32 else float)
    if kind is Kind.BITS:
        return _nullable(_bits(ct.length or 1))
    if kind is Kind.BYTES:
        return _nullable(_binlog_bytes(sp, ct))
    if kind is Kind.TEXT:
        return _nullable(_binlog_text(sp, info, col))
    if kind in (Kind.DATE, Kind.TIMESTAMP):
        return _nullable(lambda v: v, zero)  # the library gives None for zero and partial dates
    if kind is Kind.TIMESTAMPTZ:
        return _nullable(_binlog_timestamptz(zero), zero)
    if kind is Kind.TIME:
        return _nullable(_binlog_time)
    if kind is Kind.JSON:
        return _nullable(json_text)
    if kind is Kind.TEXT_ARRAY:
        return _nullable(_binlog_set(sp, col, info), None if col.nullable else [])
    if kind is Kind.UUID:
        return _nullable(lambda v: v if isinstance(v, str) and v else str(uuid.UUID(bytes=_padded(v, 16))))
    return _nullable(_as_text)


def binlog_image(
    values: Mapping[str, Any], none_sources: Mapping[str, str] | None, converters: Mapping[str, Converter]
) -> dict[str, Any]:
    """One canonical row image from a pymysqlreplication image and its ``none_sources``.

    Columns the event did not carry (non-FULL row images) are left out, an
    empty SET (which the library reports as None) becomes ``[]``, and columns
    without a converter (unknown to the schema) are dropped.
    """
    image = {}
    for name, value in values.items():
        convert = converters.get(name)
        if convert is None:
            continue
        if value is None and none_sources:
            source = none_sources.get(name)
            if source == _NONE_ABSENT:
                continue
            if source == _NONE_EMPTY_SET:
                value = frozenset()
        image[name] = convert(value)
    return image
