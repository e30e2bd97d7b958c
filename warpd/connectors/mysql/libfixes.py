"""Corrections to pymysqlreplication applied when the binlog reader is imported.

Each fix replaces one library method with a corrected copy and says why;
behaviour the converters correct value by value is in
:mod:`warpd.connectors.mysql.types` instead.
"""

from __future__ import annotations

from typing import Any

from pymysqlreplication.row_event import TableMapEvent


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


def apply() -> None:
    if hasattr(TableMapEvent, "_read_column_names"):
        TableMapEvent._read_column_names = _read_column_names
