"""A faster decoding of table maps and row events, equal value for value to pymysqlreplication's.

Single-row statements in small transactions cost the library more than the
rows do: every row event is preceded by a table-map event, which the library
parses afresh (column definitions, optional metadata, column names) although
it is byte for byte the one it parsed a moment before; and each column of a
row goes through several method calls and an ``if`` chain over every MySQL
type.  Two replacements, installed by :func:`install`:

* **table maps** are cached by their bytes (the table id included): the same
  bytes give the same table, so a repeated map reuses the parsed one
  (:func:`_table_map_init`).  The cache is bounded; ids change at DDL and
  after a server restart, which changes the bytes.
* **rows** are decoded by a decoder built once per table map
  (:class:`TableDecoder`): one small reader per column chosen from the
  column's type and metadata, reading straight from the event's bytes.  It
  returns exactly what the library returns (values, and the library's
  ``none_sources``), so everything downstream is unchanged.  A table with a
  column type it does not read (ENUM, SET, BIT, GEOMETRY, the pre-5.6
  temporal types, ...), an event whose images are not FULL, and a partial
  JSON update go through the library as before.

A value the decoder cannot read (an event shorter than its columns say, a
text its charset cannot decode) raises, as the library does, and the reader
stops the schema naming the table and position: nothing is skipped.
``tests/test_rowdecoder.py`` decodes every type the type-mapping tests use
through both paths and compares them; ``WARP_BINLOG_DECODER=library`` (an
environment variable read at import) turns this module off, for comparisons.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pymysqlreplication.constants import BINLOG, FIELD_TYPE, NONE_SOURCE
from pymysqlreplication.event import BinLogEvent
from pymysqlreplication.json_binary import parse_json
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    PartialUpdateRowsEvent,
    RowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)
from pymysqlreplication.table import Table

from warpd.connectors.mysql.libfixes import column_text_decoder

log = logging.getLogger(__name__)

ENABLED = os.environ.get("WARP_BINLOG_DECODER", "fast") != "library"

# A column reader: (event bytes, offset) -> (value, offset after it, none source or None)
Reader = Callable[[bytes, int], tuple[Any, int, str | None]]

_EPOCH = _dt.datetime(1970, 1, 1)
_COMPRESSED_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_MAX_TABLE_MAPS = 1024

_u8 = struct.Struct("<B").unpack_from
_i8 = struct.Struct("<b").unpack_from
_u16 = struct.Struct("<H").unpack_from
_i16 = struct.Struct("<h").unpack_from
_u32 = struct.Struct("<I").unpack_from
_i32 = struct.Struct("<i").unpack_from
_u64 = struct.Struct("<Q").unpack_from
_i64 = struct.Struct("<q").unpack_from
_f32 = struct.Struct("<f").unpack_from
_f64 = struct.Struct("<d").unpack_from
_be_i32 = struct.Struct(">i").unpack_from
_be_i16 = struct.Struct(">h").unpack_from
_be_i8 = struct.Struct(">b").unpack_from


class _Unsupported(Exception):
    """A column the decoder does not read: the table goes through the library."""


# -- column readers ------------------------------------------------------------------


def _int24(unsigned: bool) -> Reader:
    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        end = off + 3
        if end > len(data):
            raise struct.error("unpack requires a buffer of 3 bytes")
        return int.from_bytes(data[off:end], "little", signed=not unsigned), end, None

    return read


def _decimal(precision: int, decimals: int) -> Reader:
    """MySQL's packed DECIMAL: groups of nine digits in four big-endian bytes, the leading and
    trailing partial groups in fewer; the sign bit flipped, and every byte inverted when negative.
    The value equals the library's (which builds the digits as text) for every value MySQL writes."""
    integral = precision - decimals
    uncomp_integral, comp_integral = divmod(integral, 9)
    uncomp_fractional, comp_fractional = divmod(decimals, 9)
    head = _COMPRESSED_BYTES[comp_integral]
    tail = _COMPRESSED_BYTES[comp_fractional]
    width = head + 4 * (uncomp_integral + uncomp_fractional) + tail
    # (offset, bytes, digits it holds) of every group, most significant first
    groups: list[tuple[int, int, int]] = []
    at = 0
    if head:
        groups.append((at, head, comp_integral))
        at += head
    for _ in range(uncomp_integral + uncomp_fractional):
        groups.append((at, 4, 9))
        at += 4
    if tail:
        groups.append((at, tail, comp_fractional))
    exponent = f"E-{decimals}"
    from_bytes = int.from_bytes

    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        raw = data[off : off + width]
        if len(raw) != width:
            raise struct.error(f"a DECIMAL of {width} bytes runs past the event")
        first = raw[0]
        if first & 0x80:
            sign, flip = "", 0
        else:
            sign, flip = "-", 0xFF
        packed = bytes([first ^ 0x80 ^ flip]) + (raw[1:] if not flip else bytes(b ^ 0xFF for b in raw[1:]))
        digits = 0
        for start, size, count in groups:
            digits = digits * 10**count + from_bytes(packed[start : start + size], "big")
        return Decimal(f"{sign}{digits}{exponent}"), off + width, None

    return read


def _fraction(fsp: int) -> tuple[int, Callable[[bytes, int], int]]:
    """(bytes, reader) of a fractional-seconds part, as the library's __read_fsp computes it
    (big-endian, signed, tenths dropped for an odd precision)."""
    size = (fsp + 1) // 2
    scale = 10 ** (6 - fsp)
    if size == 0:
        return 0, lambda data, off: 0
    unpack = {1: _be_i8, 2: _be_i16}.get(size)

    def microseconds(data: bytes, off: int) -> int:
        if unpack is not None:
            value = unpack(data, off)[0]
        else:
            value = int.from_bytes(data[off : off + 3], "big", signed=True)
        if fsp % 2:
            value = int(value / 10)
        return value * scale

    return size, microseconds


def _datetime2(fsp: int) -> Reader:
    size, fraction = _fraction(fsp)
    datetime = _dt.datetime

    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        packed = int.from_bytes(data[off : off + 5], "big")
        year_month = (packed >> 22) & 0x1FFFF
        end = off + 5 + size
        micro = fraction(data, off + 5) if size else 0
        try:
            value = datetime(
                year_month // 13,
                year_month % 13,
                (packed >> 17) & 0x1F,
                (packed >> 12) & 0x1F,
                (packed >> 6) & 0x3F,
                packed & 0x3F,
            )
        except ValueError:
            return None, end, NONE_SOURCE.OUT_OF_DATETIME2_RANGE
        if micro > 0:
            value = value.replace(microsecond=micro)
        return value, end, None

    return read


def _timestamp2(fsp: int) -> Reader:
    size, fraction = _fraction(fsp)
    timedelta = _dt.timedelta

    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        value = _EPOCH + timedelta(seconds=_be_i32(data, off)[0])
        micro = fraction(data, off + 4)
        if micro > 0:
            value = value.replace(microsecond=micro)
        return value, off + 4 + size, None

    return read


def _time2(fsp: int) -> Reader:
    size, fraction = _fraction(fsp)

    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        packed = int.from_bytes(data[off : off + 3], "big", signed=True)
        sign = 1 if (packed >> 23) & 1 else -1
        if sign == -1:
            packed = ~packed + 1
        value = (
            _dt.timedelta(
                hours=(packed >> 12) & 0x3FF,
                minutes=(packed >> 6) & 0x3F,
                seconds=packed & 0x3F,
                microseconds=fraction(data, off + 3),
            )
            * sign
        )
        return value, off + 3 + size, None

    return read


def _date(data: bytes, off: int) -> tuple[Any, int, str | None]:
    chunk = data[off : off + 3]
    if len(chunk) != 3:
        raise struct.error("a DATE runs past the event")
    packed = int.from_bytes(chunk, "little")
    end = off + 3
    if packed == 0:
        return None, end, NONE_SOURCE.OUT_OF_DATE_RANGE
    year, month, day = (packed >> 9) & 0x7FFF, (packed >> 5) & 0xF, packed & 0x1F
    if year == 0 or month == 0 or day == 0:
        return None, end, NONE_SOURCE.OUT_OF_DATE_RANGE
    return _dt.date(year, month, day), end, None


def column_reader(column: Any) -> Reader:
    """The reader of a column :func:`_inline` does not read in line; :class:`_Unsupported` for a
    type left to the library."""
    t = column.type
    if t == FIELD_TYPE.INT24:
        return _int24(bool(column.unsigned))
    if t == FIELD_TYPE.NEWDECIMAL:
        return _decimal(column.precision, column.decimals)
    if t == FIELD_TYPE.DATETIME2:
        return _datetime2(column.fsp)
    if t == FIELD_TYPE.TIMESTAMP2:
        return _timestamp2(column.fsp)
    if t == FIELD_TYPE.TIME2:
        return _time2(column.fsp)
    if t == FIELD_TYPE.DATE:
        return _date
    raise _Unsupported(t)


def _inline(column: Any, i: int, env: dict[str, Any]) -> list[str] | None:
    """Source lines reading column ``i`` into ``v{i}`` (advancing ``off``), for the types simple
    enough to read in line; None for the others, which call their :func:`column_reader`."""
    t, unsigned = column.type, bool(column.unsigned)
    fixed = {
        FIELD_TYPE.TINY: (_u8 if unsigned else _i8, 1),
        FIELD_TYPE.SHORT: (_u16 if unsigned else _i16, 2),
        FIELD_TYPE.LONG: (_u32 if unsigned else _i32, 4),
        FIELD_TYPE.LONGLONG: (_u64 if unsigned else _i64, 8),
        FIELD_TYPE.FLOAT: (_f32, 4),
        FIELD_TYPE.DOUBLE: (_f64, 8),
    }
    if t in fixed:
        env[f"U{i}"], width = fixed[t]
        return [f"v{i} = U{i}(data, off)[0]", f"off += {width}"]
    if t == FIELD_TYPE.YEAR:
        return [f"v{i} = data[off] + 1900", "off += 1"]
    if t in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING, FIELD_TYPE.BLOB, FIELD_TYPE.JSON):
        if t == FIELD_TYPE.BLOB or t == FIELD_TYPE.JSON:
            prefix = column.length_size
        else:
            prefix = 2 if column.max_length > 255 else 1
        if prefix == 1:
            lines = ["n = data[off]"]
        elif prefix == 2:
            lines = ["n = _u16(data, off)[0]"]
        else:
            lines = [f"n = _from_bytes(data[off : off + {prefix}], 'little')"]
        lines.append(f"off += {prefix}")
        if t == FIELD_TYPE.JSON:  # an empty value is None, as the library reads it
            return [
                *lines,
                "if n:",
                f"    v{i} = _parse_json(data[off], data[off + 1 : off + n])",
                "    off += n",
                "else:",
                f"    v{i} = None",
            ]
        lines += [f"v{i} = data[off : off + n]", "off += n"]
        decode = column_text_decoder(column)
        if decode is not None:
            env[f"D{i}"] = decode
            lines.append(f"v{i} = D{i}(v{i})")
        return lines
    return None


def _skip(column: Any) -> list[str]:
    """Source lines moving ``off`` past a (non-NULL) value of ``column`` without decoding it."""
    t = column.type
    width = {
        FIELD_TYPE.TINY: 1,
        FIELD_TYPE.SHORT: 2,
        FIELD_TYPE.INT24: 3,
        FIELD_TYPE.LONG: 4,
        FIELD_TYPE.LONGLONG: 8,
        FIELD_TYPE.FLOAT: 4,
        FIELD_TYPE.DOUBLE: 8,
        FIELD_TYPE.YEAR: 1,
        FIELD_TYPE.DATE: 3,
    }.get(t)
    if t == FIELD_TYPE.DATETIME2:
        width = 5 + (column.fsp + 1) // 2
    elif t == FIELD_TYPE.TIMESTAMP2:
        width = 4 + (column.fsp + 1) // 2
    elif t == FIELD_TYPE.TIME2:
        width = 3 + (column.fsp + 1) // 2
    elif t == FIELD_TYPE.NEWDECIMAL:
        integral = column.precision - column.decimals
        width = (
            _COMPRESSED_BYTES[integral % 9]
            + 4 * (integral // 9 + column.decimals // 9)
            + _COMPRESSED_BYTES[column.decimals % 9]
        )
    if width is not None:
        return [f"off += {width}"]
    if t in (FIELD_TYPE.BLOB, FIELD_TYPE.JSON):
        prefix = column.length_size
    elif t in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
        prefix = 2 if column.max_length > 255 else 1
    else:
        raise _Unsupported(t)
    length = {1: "data[off]", 2: "_u16(data, off)[0]"}.get(
        prefix, f"_from_bytes(data[off : off + {prefix}], 'little')"
    )
    return [f"off += {prefix} + {length}"]


_ImageReader = Callable[[bytes, int, dict[str, str]], tuple[dict[str, Any], dict[str, str], int]]


class TableDecoder:
    """Reads the row images of one table map's row events with code generated for its columns.

    The generated ``image(data, off, sources)`` reads the null bitmap as one
    integer and each column in line (or through its reader, for the temporal
    and decimal types); names and helpers come from its namespace, never from
    the source text, so no column name is ever part of generated code.
    :meth:`partial` generates one that decodes some columns and steps over the
    others (the old key of an UPDATE is all the engine reads of its before image).
    """

    def __init__(self, table: Any):
        self.table = table
        self.names = [c.name for c in table.columns]
        if not all(isinstance(n, str) and n for n in self.names):
            raise _Unsupported("no column names in the table map (binlog_row_metadata is not FULL)")
        self.count = len(self.names)
        self.null_bytes = (self.count + 7) // 8
        self.full = bytes([0xFF] * (self.count // 8)) + (
            bytes([(1 << (self.count % 8)) - 1]) if self.count % 8 else b""
        )
        self.image: _ImageReader = self._generate(frozenset(self.names))
        self._partial: dict[frozenset[str], _ImageReader] = {}

    def partial(self, wanted: frozenset[str]) -> _ImageReader:
        """An image reader returning only the ``wanted`` columns (as the full reader reads them)."""
        reader = self._partial.get(wanted)
        if reader is None:
            reader = self._partial[wanted] = self._generate(wanted & frozenset(self.names))
        return reader

    def _generate(self, wanted: frozenset[str]) -> _ImageReader:
        table = self.table
        env: dict[str, Any] = {
            "_u16": _u16,
            "_from_bytes": int.from_bytes,
            "_parse_json": parse_json,
            "_error": struct.error,
            "NULL": NONE_SOURCE.NULL,
        }
        body = [
            f"end = off + {self.null_bytes}",
            "if end > len(data):",
            "    raise _error('a row image runs past the event')",
            "nulls = _from_bytes(data[off:end], 'little')",
            "off = end",
            "none = None",
        ]
        kept = []
        for i, column in enumerate(table.columns):
            if self.names[i] not in wanted:
                body += [f"if not nulls & {1 << i}:"] + ["    " + line for line in _skip(column)]
                continue
            kept.append(i)
            env[f"N{i}"] = self.names[i]
            inline = _inline(column, i, env)
            if inline is None:
                env[f"R{i}"] = column_reader(column)
                read = [
                    f"v{i}, off, why = R{i}(data, off)",
                    f"if v{i} is None:",
                    "    if why is not None:",
                    f"        sources[N{i}] = why",
                    f"    none = (none or []) + [N{i}]",
                ]
            else:
                read = inline
                if column.type == FIELD_TYPE.JSON:
                    read += [f"if v{i} is None:", f"    none = (none or []) + [N{i}]"]
            body += [
                f"if nulls & {1 << i}:",
                f"    v{i} = None",
                f"    sources[N{i}] = NULL",
                f"    none = (none or []) + [N{i}]",
                "else:",
            ]
            body += ["    " + line for line in read]
        body += [
            "if off > len(data):",
            "    raise _error('a row image runs past the event')",
            "values = {" + ", ".join(f"N{i}: v{i}" for i in kept) + "}",
            "return values, ({n: sources.get(n, NULL) for n in none} if none else {}), off",
        ]
        source = "def image(data, off, sources):\n" + "".join(f"    {line}\n" for line in body)
        where = f"{getattr(table, 'schema', '?')}.{getattr(table, 'table', '?')}"
        exec(compile(source, f"<row decoder of {where}>", "exec"), env)  # noqa: S102
        reader: _ImageReader = env["image"]
        return reader

    def covers(self, present: bytes) -> bool:
        """Whether a columns-present bitmap names every column (a FULL image)."""
        if len(present) != self.null_bytes or self.count == 0:
            return False
        if present[:-1] != self.full[:-1]:
            return False
        last = self.full[-1]
        return present[-1] & last == last


def _decoder(table: Any) -> TableDecoder | None:
    decoder = table.__dict__.get("_warp_decoder", False)
    if decoder is False:
        try:
            decoder = TableDecoder(table)
        except (_Unsupported, AttributeError, TypeError) as exc:
            log.debug("rows of %s.%s are decoded by pymysqlreplication: %s", table.schema, table.table, exc)
            decoder = None
        table.__dict__["_warp_decoder"] = decoder  # not in Table.data: names starting "_" are left out
    return decoder


# -- the library's hooks -------------------------------------------------------------

_library_fetch_rows = RowsEvent._fetch_rows
_library_table_map_init = TableMapEvent.__init__
_library_table_data = Table.data
_table_maps: dict[bytes, dict[str, Any]] = {}
_decoded: set[str] = set()  # tables whose rows this module decoded (tests ask; bounded)


def decoded_tables() -> frozenset[str]:
    """The names of the tables whose row events the decoder (not the library) has read."""
    return frozenset(_decoded)


def _fetch_rows(self: Any) -> None:
    table = self.table_map.get(self.table_id)
    decoder = _decoder(table) if table is not None else None
    wrapper = self.packet
    if (
        decoder is None
        or not self.complete
        or isinstance(self, PartialUpdateRowsEvent)
        or self.event_type == BINLOG.PARTIAL_UPDATE_ROWS_EVENT
        or wrapper._BinLogPacketWrapper__data_buffer
        or len(table.columns) != self.number_of_columns
    ):
        _library_fetch_rows(self)
        return
    update = isinstance(self, UpdateRowsEvent)
    if not decoder.covers(self.columns_present_bitmap) or (
        update and not decoder.covers(self.columns_present_bitmap2)
    ):
        _library_fetch_rows(self)
        return
    packet = wrapper.packet
    size = self.event_size - wrapper.read_bytes
    start = packet._position
    data = bytes(packet._data[start : start + size])
    if len(data) != size:
        raise struct.error(f"a row event of {size} bytes holds {len(data)}")
    rows: list[dict[str, Any]] = []
    sources: dict[str, str] = {}
    off = 0
    image = decoder.image
    if update:
        wanted = self.__dict__.get("_warp_before_columns")  # set by the reader: only these are read
        before_image = decoder.partial(wanted) if wanted else image
        while off < size:
            before, before_none, off = before_image(data, off, sources)
            after, after_none, off = image(data, off, sources)
            rows.append(
                {
                    "before_values": before,
                    "before_none_sources": before_none,
                    "after_values": after,
                    "after_none_sources": after_none,
                }
            )
    elif isinstance(self, (WriteRowsEvent, DeleteRowsEvent)):
        while off < size:
            values, none_sources, off = image(data, off, sources)
            rows.append({"values": values, "none_sources": none_sources})
    else:  # a row event class this module does not know
        _library_fetch_rows(self)
        return
    if off != size:
        raise struct.error(f"row images end at byte {off} of a {size}-byte row event")
    packet._position = start + size
    wrapper.read_bytes += size
    self._RowsEvent__rows = rows
    if self.table not in _decoded:
        if len(_decoded) >= _MAX_TABLE_MAPS:
            _decoded.clear()
        _decoded.add(self.table)


def _table_map_init(
    self: Any, from_packet: Any, event_size: int, table_map: Any, ctl_connection: Any, **kwargs: Any
) -> None:
    packet = from_packet.packet
    if from_packet._BinLogPacketWrapper__data_buffer:
        _library_table_map_init(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
        return
    start = packet._position
    body = bytes(packet._data[start : start + event_size])
    cached = _table_maps.get(body)
    if cached is None:
        _library_table_map_init(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
        if self._processed and getattr(self, "table_obj", None) is not None and len(body) == event_size:
            if len(_table_maps) >= _MAX_TABLE_MAPS:
                _table_maps.clear()
            keep = {
                k: v
                for k, v in self.__dict__.items()
                if k not in _PER_EVENT and not k.startswith("_TableMapEvent__")
            }
            _table_maps[body] = keep
        return
    BinLogEvent.__init__(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
    only_schemas = kwargs.get("only_schemas")
    only_tables = kwargs.get("only_tables")
    if (only_schemas is not None and cached["schema"] not in only_schemas) or (
        only_tables is not None and cached["table"] not in only_tables
    ):
        self._processed = False
        return
    self.__dict__.update(cached)
    table_map[self.table_id] = self.table_obj


# what BinLogEvent.__init__ sets for each event: never taken from the cache
_PER_EVENT = frozenset(
    {
        "packet",
        "table_map",
        "event_type",
        "timestamp",
        "event_size",
        "_post_header_lengths",
        "_ctl_connection",
        "mysql_version",
        "_ignore_decode_errors",
        "_verify_checksum",
        "_is_event_valid",
        "_processed",
        "complete",
    }
)


def _table_data(self: Any) -> dict[str, Any]:
    # Table.data rebuilds a dict of the table's attributes on every call, and every row event asks it
    # for the primary key: built once per table (nothing assigns a table's attributes after its map).
    cached: dict[str, Any] | None = self.__dict__.get("_warp_data")
    if cached is None:
        cached = self.__dict__["_warp_data"] = _library_table_data.fget(self)
    return cached


def install() -> None:
    """Put the decoder in the library's place (once; a no-op when turned off)."""
    if not ENABLED or getattr(RowsEvent, "_warp_rowdecoder", False):
        return
    RowsEvent._fetch_rows = _fetch_rows
    TableMapEvent.__init__ = _table_map_init
    Table.data = property(_table_data)
    RowsEvent._warp_rowdecoder = True


def uninstall() -> None:
    """The library's own decoding again (tests compare the two)."""
    RowsEvent._fetch_rows = _library_fetch_rows
    TableMapEvent.__init__ = _library_table_map_init
    Table.data = _library_table_data
    RowsEvent._warp_rowdecoder = False
    _table_maps.clear()
