"""Corrections to pymysqlreplication applied when the binlog reader is imported.

Each fix replaces or adds one library piece and says why; behaviour the
converters correct value by value is in :mod:`warpd.connectors.mysql.types`
instead.  The three fixes:

* column names of 128 bytes or more in a table map (:func:`_read_column_names`);
* text values decoded as MySQL decodes them (:func:`_read_string`): latin1 is
  MySQL's cp1252 variant, and a value no codec can decode raises
  :class:`UndecodableValue` naming the column instead of a bare
  ``UnicodeDecodeError``;
* MariaDB's compressed events (``log_bin_compress=ON``), which the library
  does not know and would hand over as ``NotImplementedEvent``: each is
  inflated and parsed as the plain event it compresses (:data:`COMPRESSED_EVENTS`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any

from pymysql.protocol import MysqlPacket
from pymysqlreplication.constants import BINLOG
from pymysqlreplication.event import QueryEvent
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    RowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from warpd.connectors.mysql.types import text_decoder

# MariaDB's event type codes (sql/log_event.h); the V1 row events are the ones MariaDB writes.
QUERY_COMPRESSED_EVENT = 0xA5
WRITE_ROWS_COMPRESSED_EVENT_V1 = 0xA6
UPDATE_ROWS_COMPRESSED_EVENT_V1 = 0xA7
DELETE_ROWS_COMPRESSED_EVENT_V1 = 0xA8


class CompressedEventError(ValueError):
    """A compressed event whose record cannot be inflated."""


class UndecodableValue(ValueError):
    """A text value in a row event that its column's character set cannot decode."""

    def __init__(self, column: str, collation: str, cause: Exception):
        super().__init__(f"column {column!r} (collation {collation}): {cause}")
        self.column = column


def _read_column_names(self: Any, length: int) -> list[str]:
    # The server writes each name of the COLUMN_NAME metadata with a length-encoded
    # integer (net_store_length: one byte below 251); pymysqlreplication 1.0.17 reads it
    # as a 7-bit varint, so a name of 128 bytes or more (e.g. 43 CJK characters)
    # derails the whole table map and the stream stops.
    names = []
    read_until = self.packet.read_bytes + length
    while self.packet.read_bytes < read_until:
        size = self.packet.read_length_coded_binary()
        names.append(self.packet.read(size).decode("utf-8"))
    return names


def column_text_decoder(column: Any) -> Callable[[bytes], str] | None:
    """How a text value of a table-map ``column`` is decoded: as MySQL decodes its charset (latin1 is
    MySQL's cp1252 variant), None (keep the bytes) for a charset Python does not know, and
    :class:`UndecodableValue` naming the column for a value no codec can decode."""
    decode = text_decoder(column.character_set_name or "utf8")  # no metadata: UTF-8, as the library
    if decode is None:
        return None

    def checked(raw: bytes) -> str:
        try:
            return decode(raw)
        except UnicodeDecodeError as exc:
            collation = getattr(column, "collation_name", None) or column.character_set_name or "unknown"
            raise UndecodableValue(column.name, collation, exc) from exc

    return checked


def _read_string(self: Any, size: int, column: Any) -> Any:
    # The library decodes latin1 with Python's cp1252, which rejects the five bytes MySQL maps
    # to C1 controls (0x81 ...): one such value crashed the whole stream.  Decode as MySQL
    # does, so a binlog value equals the snapshot's CONVERT(... USING utf8mb4); keep the
    # library's bytes for charsets Python does not know (the converters decode those), and
    # name the column when a value really cannot be decoded.
    raw = self.packet.read_length_coded_pascal_string(size)
    decode = column_text_decoder(column)
    return raw if decode is None else decode(raw)


# -- compressed events -------------------------------------------------------------


def _inflate(record: bytes) -> bytes:
    """One compressed record: a header byte (0x80 | length-of-length), the length big-endian, zlib data."""
    header = record[0]
    if not header & 0x80 or header & 0x70:
        raise ValueError(f"unknown compressed-record header 0x{header:02x}")
    lenlen = header & 0x07
    expected = int.from_bytes(record[1 : 1 + lenlen], "big")
    data = zlib.decompress(record[1 + lenlen :])
    if len(data) != expected:
        raise ValueError(f"compressed record inflated to {len(data)} bytes, {expected} announced")
    return data


def _length_coded(body: bytes, at: int) -> tuple[int, int]:
    """A packed integer at ``at``: (value, offset after it)."""
    first = body[at]
    if first < 251:
        return first, at + 1
    width = {252: 2, 253: 3, 254: 8}[first]
    return int.from_bytes(body[at + 1 : at + 1 + width], "little"), at + 1 + width


def _rows_payload_offset(body: bytes, update: bool) -> int:
    # V1 post-header: table id (6) + flags (2); then the column count and one (two for an
    # update) column bitmaps, uncompressed; the rows after them are the compressed record.
    width, at = _length_coded(body, 8)
    return at + (width + 7) // 8 * (2 if update else 1)


def _query_payload_offset(body: bytes) -> int:
    # post-header (13): thread id, exec time, db length (1), error code, status-vars length (2);
    # then the status vars, the db name and its NUL; the statement is the compressed record.
    db_len = body[8]
    (status_len,) = struct.unpack_from("<H", body, 11)
    return 13 + status_len + db_len + 1


def _compressed(plain_type: int, event_class: type, offset: Callable[[bytes], int]) -> Callable[..., Any]:
    def make(wrapper: Any, size: int, table_map: Any, ctl_connection: Any, **kwargs: Any) -> Any:
        rest = wrapper.packet.read_all()  # the body, then the checksum (if any)
        body, tail = rest[:size], rest[size:]
        try:
            at = offset(body)
            plain = body[:at] + _inflate(body[at:])
        except (ValueError, KeyError, IndexError, struct.error, zlib.error) as exc:
            raise CompressedEventError(f"compressed event type 0x{wrapper.event_type:02x}: {exc}") from exc
        wrapper.packet = MysqlPacket(plain + tail, "utf-8")
        wrapper.event_type = plain_type
        return event_class(wrapper, len(plain), table_map, ctl_connection, **kwargs)

    make.__name__ = f"compressed_{event_class.__name__}"
    return make


COMPRESSED_EVENTS: dict[int, Callable[..., Any]] = {
    QUERY_COMPRESSED_EVENT: _compressed(BINLOG.QUERY_EVENT, QueryEvent, _query_payload_offset),
    WRITE_ROWS_COMPRESSED_EVENT_V1: _compressed(
        BINLOG.WRITE_ROWS_EVENT_V1, WriteRowsEvent, lambda b: _rows_payload_offset(b, False)
    ),
    UPDATE_ROWS_COMPRESSED_EVENT_V1: _compressed(
        BINLOG.UPDATE_ROWS_EVENT_V1, UpdateRowsEvent, lambda b: _rows_payload_offset(b, True)
    ),
    DELETE_ROWS_COMPRESSED_EVENT_V1: _compressed(
        BINLOG.DELETE_ROWS_EVENT_V1, DeleteRowsEvent, lambda b: _rows_payload_offset(b, False)
    ),
}
"""Factories the packet wrapper calls for MariaDB's compressed event types (list them in
``only_events``); each returns the plain library event for the inflated body."""


def apply() -> None:
    if hasattr(TableMapEvent, "_read_column_names"):
        TableMapEvent._read_column_names = _read_column_names
    if hasattr(RowsEvent, "_RowsEvent__read_string"):
        RowsEvent._RowsEvent__read_string = _read_string
    event_map = getattr(BinLogPacketWrapper, "_BinLogPacketWrapper__event_map", None)
    if isinstance(event_map, dict):
        for event_type, factory in COMPRESSED_EVENTS.items():
            event_map.setdefault(event_type, factory)  # a library that knows them keeps its own
