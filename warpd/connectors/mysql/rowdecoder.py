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

from warpd.connectors.mysql.libfixes import UndecodableValue
from warpd.connectors.mysql.types import text_decoder

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


class _Unsupported(Exception):
    """A column the decoder does not read: the table goes through the library."""


# -- column readers ------------------------------------------------------------------


def _fixed(unpack: Callable[[bytes, int], tuple[Any, ...]], width: int) -> Reader:
    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        return unpack(data, off)[0], off + width, None

    return read


def _int24(unsigned: bool) -> Reader:
    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        end = off + 3
        if end > len(data):
            raise struct.error("unpack requires a buffer of 3 bytes")
        return int.from_bytes(data[off:end], "little", signed=not unsigned), end, None

    return read


def _year(data: bytes, off: int) -> tuple[Any, int, str | None]:
    return data[off] + 1900, off + 1, None


def _be_signed(data: bytes | bytearray, off: int, size: int) -> int:
    """The library's read_int_be_by_size for 1 to 4 bytes: big-endian, signed."""
    chunk = data[off : off + size]
    if len(chunk) != size:
        raise struct.error(f"unpack requires a buffer of {size} bytes")
    return int.from_bytes(chunk, "big", signed=True)


def _length(data: bytes, off: int, size: int) -> int:
    """The library's read_uint_by_size for a length prefix: little-endian, unsigned."""
    chunk = data[off : off + size]
    if len(chunk) != size:
        raise struct.error(f"unpack requires a buffer of {size} bytes")
    return int.from_bytes(chunk, "little")


def _text(prefix: int, column: Any) -> Reader:
    # as libfixes._read_string: MySQL's own decoding of the column's charset, bytes for a charset
    # Python does not know, and the column named when a value cannot be decoded
    decode = text_decoder(column.character_set_name or "utf8")

    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        n = _length(data, off, prefix)
        start = off + prefix
        end = start + n
        raw = data[start:end]
        if len(raw) != n:
            raise struct.error(f"a value of {n} bytes runs past the event")
        if decode is None:
            return raw, end, None
        try:
            return decode(raw), end, None
        except UnicodeDecodeError as exc:
            collation = getattr(column, "collation_name", None) or column.character_set_name or "unknown"
            raise UndecodableValue(column.name, collation, exc) from exc

    return read


def _json(prefix: int) -> Reader:
    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        n = _length(data, off, prefix)
        start = off + prefix
        if n == 0:
            return None, start, None
        end = start + n
        raw = data[start:end]
        if len(raw) != n:
            raise struct.error(f"a JSON value of {n} bytes runs past the event")
        return parse_json(raw[0], raw[1:]), end, None

    return read


def _decimal(precision: int, decimals: int) -> Reader:
    integral = precision - decimals
    uncomp_integral, comp_integral = divmod(integral, 9)
    uncomp_fractional, comp_fractional = divmod(decimals, 9)
    head = _COMPRESSED_BYTES[comp_integral]
    tail = _COMPRESSED_BYTES[comp_fractional]
    width = head + 4 * (uncomp_integral + uncomp_fractional) + tail

    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        raw = bytearray(data[off : off + width])
        if len(raw) != width:
            raise struct.error(f"a DECIMAL of {width} bytes runs past the event")
        # the library's arithmetic, on a copy whose sign bit is flipped as it does
        if raw[0] & 0x80:
            res, mask = "", 0
        else:
            res, mask = "-", -1
        raw[0] ^= 0x80
        at = 0
        if head:
            res += str(_be_signed(raw, 0, head) ^ mask)
            at = head
        for _ in range(uncomp_integral):
            res += f"{_be_i32(raw, at)[0] ^ mask:09d}"
            at += 4
        res += "."
        for _ in range(uncomp_fractional):
            res += f"{_be_i32(raw, at)[0] ^ mask:09d}"
            at += 4
        if tail:
            res += f"{_be_signed(raw, at, tail) ^ mask:0{comp_fractional}d}"
        return Decimal(res), off + width, None

    return read


def _fsp_reader(fsp: int) -> tuple[int, Callable[[bytes, int], int]]:
    """(bytes, reader) of a fractional-seconds part, as the library's __read_fsp computes it."""
    size = (fsp + 1) // 2

    def microseconds(data: bytes, off: int) -> int:
        if not size:
            return 0
        value = _be_signed(data, off, size)
        if fsp % 2:
            value = int(value / 10)
        return value * (10 ** (6 - fsp))

    return size, microseconds


def _datetime2(fsp: int) -> Reader:
    size, fraction = _fsp_reader(fsp)

    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        chunk = data[off : off + 5]
        if len(chunk) != 5:
            raise struct.error("a DATETIME runs past the event")
        packed = int.from_bytes(chunk, "big")
        year_month = (packed >> 22) & 0x1FFFF
        end = off + 5 + size
        try:
            value = _dt.datetime(
                int(year_month / 13),
                year_month % 13,
                (packed >> 17) & 0x1F,
                (packed >> 12) & 0x1F,
                (packed >> 6) & 0x3F,
                packed & 0x3F,
            )
        except ValueError:
            fraction(data, off + 5)
            return None, end, NONE_SOURCE.OUT_OF_DATETIME2_RANGE
        micro = fraction(data, off + 5)
        if micro > 0:
            value = value.replace(microsecond=micro)
        return value, end, None

    return read


def _timestamp2(fsp: int) -> Reader:
    size, fraction = _fsp_reader(fsp)

    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        value = _EPOCH + _dt.timedelta(seconds=_be_signed(data, off, 4))
        micro = fraction(data, off + 4)
        if micro > 0:
            value = value.replace(microsecond=micro)
        return value, off + 4 + size, None

    return read


def _time2(fsp: int) -> Reader:
    size, fraction = _fsp_reader(fsp)

    def read(data: bytes, off: int) -> tuple[Any, int, str | None]:
        packed = _be_signed(data, off, 3)
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
    """The reader of one table-map column; :class:`_Unsupported` for a type left to the library."""
    t, unsigned = column.type, bool(column.unsigned)
    if t == FIELD_TYPE.TINY:
        return _fixed(_u8 if unsigned else _i8, 1)
    if t == FIELD_TYPE.SHORT:
        return _fixed(_u16 if unsigned else _i16, 2)
    if t == FIELD_TYPE.INT24:
        return _int24(unsigned)
    if t == FIELD_TYPE.LONG:
        return _fixed(_u32 if unsigned else _i32, 4)
    if t == FIELD_TYPE.LONGLONG:
        return _fixed(_u64 if unsigned else _i64, 8)
    if t == FIELD_TYPE.YEAR:
        return _year
    if t == FIELD_TYPE.FLOAT:
        return _fixed(_f32, 4)
    if t == FIELD_TYPE.DOUBLE:
        return _fixed(_f64, 8)
    if t == FIELD_TYPE.NEWDECIMAL:
        return _decimal(column.precision, column.decimals)
    if t in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
        return _text(2 if column.max_length > 255 else 1, column)
    if t == FIELD_TYPE.BLOB:
        return _text(column.length_size, column)
    if t == FIELD_TYPE.JSON:
        return _json(column.length_size)
    if t == FIELD_TYPE.DATETIME2:
        return _datetime2(column.fsp)
    if t == FIELD_TYPE.TIMESTAMP2:
        return _timestamp2(column.fsp)
    if t == FIELD_TYPE.TIME2:
        return _time2(column.fsp)
    if t == FIELD_TYPE.DATE:
        return _date
    raise _Unsupported(t)


class TableDecoder:
    """Reads the row images of one table map's row events."""

    def __init__(self, table: Any):
        self.names = [c.name for c in table.columns]
        if not all(isinstance(n, str) and n for n in self.names):
            raise _Unsupported("no column names in the table map (binlog_row_metadata is not FULL)")
        self.readers = [column_reader(c) for c in table.columns]
        self.count = len(self.readers)
        self.null_bytes = (self.count + 7) // 8
        self.full = bytes([0xFF] * (self.count // 8)) + (
            bytes([(1 << (self.count % 8)) - 1]) if self.count % 8 else b""
        )

    def covers(self, present: bytes) -> bool:
        """Whether a columns-present bitmap names every column (a FULL image)."""
        if len(present) != self.null_bytes or self.count == 0:
            return False
        if present[:-1] != self.full[:-1]:
            return False
        last = self.full[-1]
        return present[-1] & last == last

    def image(
        self, data: bytes, off: int, sources: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, str], int]:
        """One row image at ``off``: (values, none sources, offset after it).

        ``sources`` is the event's record of why a value is None, kept across
        its rows as the library keeps it (its ``none_sources`` per image read it).
        """
        nulls = data[off : off + self.null_bytes]
        if len(nulls) != self.null_bytes:
            raise struct.error("a row image runs past the event")
        off += self.null_bytes
        values: dict[str, Any] = {}
        names = self.names
        none: list[str] | None = None
        for i, read in enumerate(self.readers):
            name = names[i]
            if nulls[i >> 3] & (1 << (i & 7)):
                sources[name] = NONE_SOURCE.NULL
                values[name] = None
                if none is None:
                    none = []
                none.append(name)
                continue
            value, off, why = read(data, off)
            values[name] = value
            if value is None:
                if why is not None:
                    sources[name] = why
                if none is None:
                    none = []
                none.append(name)
        none_sources = {n: sources.get(n, "null") for n in none} if none else {}
        return values, none_sources, off


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
        while off < size:
            before, before_none, off = image(data, off, sources)
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


def install() -> None:
    """Put the decoder in the library's place (once; a no-op when turned off)."""
    if not ENABLED or getattr(RowsEvent, "_warp_rowdecoder", False):
        return
    RowsEvent._fetch_rows = _fetch_rows
    TableMapEvent.__init__ = _table_map_init
    RowsEvent._warp_rowdecoder = True


def uninstall() -> None:
    """The library's own decoding again (tests compare the two)."""
    RowsEvent._fetch_rows = _library_fetch_rows
    TableMapEvent.__init__ = _library_table_map_init
    RowsEvent._warp_rowdecoder = False
    _table_maps.clear()
