"""The compiled row decoder (warpd/connectors/mysql/rowdecoder.py) against pymysqlreplication's own.

Every type case of test_type_mapping is written to a throwaway MariaDB
database, in one table per case and in one wide table holding every case's
column; each row is inserted, updated and deleted, so write, update and
delete events carry every value as before and after images.  The binlog
range is then read twice, once by the library alone and once with the
decoder installed, and each event's rows must be equal, value for value and
type for type.  The decoder must also have decoded the tables whose types it
reads (else this would compare the library with itself), and a row event cut
short must raise, never yield a row.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
from test_type_mapping import CASES, MYSQL, WRITER_SESSION, P

from warpd.connectors.mysql import libfixes, rowdecoder

DB = f"warp_t_rowdec_{os.getpid()}"
SERVER_ID = 3_100_000 + os.getpid() % 1_000_000
# cases the wide table leaves out: their definitions name their own column ``c``
WIDE_EXCLUDED = {c.id for c in CASES if re.search(r"\bc\b", c.ddl)}
# the types the decoder leaves to the library (ENUM, SET, BIT, spatial): a table without them is decoded
LIBRARY_TYPES = re.compile(r"ENUM|\bSET\b|\bBIT\b|GEOMETRY|POINT|LINESTRING|POLYGON", re.IGNORECASE)


# values the type cases do not reach: lengths past one length byte's 7 and 8 bits, long prefixes,
# negative decimals of every layout, odd fractional-second precisions, negative fractions of TIME
EXTRA_COLUMNS = (
    "v200 VARCHAR(200) CHARACTER SET latin1, vb VARBINARY(250), v1000 VARCHAR(1000), mt MEDIUMTEXT,"
    " d1 DECIMAL(1,0), d9 DECIMAL(9,9),"
    " d18 DECIMAL(18,4), d30 DECIMAL(30,11), t1 TIME(1), t3 TIME(3), t5 TIME(5), dt1 DATETIME(1),"
    " dt5 DATETIME(5), ts0 TIMESTAMP NULL, ts5 TIMESTAMP(5) NULL, j JSON, mi MEDIUMINT UNSIGNED,"
    " ti TINYINT UNSIGNED, f FLOAT, y YEAR, b VARBINARY(300)"
)
EXTRA_ROWS = (
    (
        "x" * 130 + "é" * 60,
        b"\xff" * 200,
        "é" * 600,
        "z" * 70_000,
        -9,
        "-0.123456789",
        "-12345678901234.5678",
        "-1234567890123456789.01234567891",
        "-00:00:00.3",
        "-838:59:58.999",
        "-12:00:00.00001",
        "2024-02-29 23:59:59.9",
        "1000-01-01 00:00:00.00001",
        "1970-01-01 00:00:01",
        "2038-01-19 03:14:07.99999",
        '{"a": [1, 2.5, "x", null, true], "b": {"c": "' + "w" * 300 + '"}}',
        16_777_215,
        255,
        3.5,
        2155,
        bytes(range(256)) + b"tail",
    ),
    (
        "",
        b"",
        "",
        "",
        0,
        "0.000000000",
        "0.0000",
        "0.00000000000",
        "00:00:00.0",
        "00:00:00.000",
        "00:00:00.00000",
        "2000-01-01 00:00:00.0",
        "9999-12-31 23:59:59.99999",
        None,
        None,
        "[]",
        0,
        0,
        -0.0,
        1901,
        b"",
    ),
)


def _connect(**kwargs: Any) -> pymysql.connections.Connection:
    return pymysql.connect(charset="utf8mb4", autocommit=True, **MYSQL, **kwargs)


def _typed(value: Any) -> Any:
    """A value with the type of every part, so 1 == 1.0 == True and naive == aware mismatches show."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_typed(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(repr(v) for v in value)
    return (type(value).__name__, repr(value))


def _literal(value: Any) -> tuple[str, tuple[Any, ...]]:
    if isinstance(value, P):
        return "%s", (value.value,)
    return str(value).replace("%", "%%"), ()


@pytest.fixture(scope="module")
def binlog_range() -> Iterator[tuple[str, int, str, int]]:
    admin = _connect()
    cur = admin.cursor()
    cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")
    cur.execute(f"CREATE DATABASE `{DB}` CHARACTER SET utf8mb4")
    try:
        cur.execute(f"USE `{DB}`")
        wide = [c for c in CASES if c.id not in WIDE_EXCLUDED]
        fast = [c for c in wide if not LIBRARY_TYPES.search(c.ddl)]
        for case in CASES:
            cur.execute(f"CREATE TABLE `t_{case.id}` (id INT PRIMARY KEY, c {case.ddl})")
        cur.execute(f"CREATE TABLE `extra` (id INT PRIMARY KEY, {EXTRA_COLUMNS})")
        for table, cases in (("wide", wide), ("wide_fast", fast)):
            columns = ", ".join(f"`c_{c.id}` {c.ddl.replace('NOT NULL', 'NULL')}" for c in cases)
            cur.execute(f"CREATE TABLE `{table}` (id INT PRIMARY KEY, {columns})")
        cur.execute("SHOW MASTER STATUS")
        start = cur.fetchone()[:2]
        writer = _connect(database=DB)
        with writer.cursor() as w:
            for statement in WRITER_SESSION:
                w.execute(statement)
            for case in CASES:
                table = f"t_{case.id}"
                for row_id, (literal, _, _) in enumerate(case.rows, start=1):
                    sql, args = _literal(literal)
                    w.execute(f"INSERT INTO `{table}` (id, c) VALUES ({row_id}, {sql})", args)
                # every row takes the next row's value (the first takes the last's), then goes
                for row_id, (literal, _, _) in enumerate(case.rows[1:] + case.rows[:1], start=1):
                    sql, args = _literal(literal)
                    w.execute(f"UPDATE `{table}` SET c = {sql} WHERE id = {row_id}", args)
                w.execute(f"DELETE FROM `{table}`")
            marks = ", ".join(["%s"] * len(EXTRA_ROWS[0]))
            for row_id, row in enumerate(EXTRA_ROWS, start=1):
                w.execute(f"INSERT INTO `extra` VALUES ({row_id}, {marks})", row)
            w.execute("UPDATE `extra` SET id = id + 10")
            w.execute("DELETE FROM `extra`")
            # the wide tables: row n holds each case's n-th value (NULL where a case has fewer)
            for table, cases in (("wide", wide), ("wide_fast", fast)):
                most = max(len(c.rows) for c in cases)
                for row_id in range(1, most + 1):
                    w.execute(f"INSERT INTO `{table}` (id) VALUES ({row_id})")
                    for case in cases:
                        if row_id <= len(case.rows):
                            sql, args = _literal(case.rows[row_id - 1][0])
                            w.execute(f"UPDATE `{table}` SET `c_{case.id}` = {sql} WHERE id = {row_id}", args)
                w.execute(f"DELETE FROM `{table}`")
        writer.close()
        cur.execute("SHOW MASTER STATUS")
        end = cur.fetchone()[:2]
        yield (*start, *end)
    finally:
        cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")
        admin.close()


def _read(
    fast: bool, start: tuple[str, int, str, int], before_columns: frozenset[str] | None = None
) -> list[tuple[str, str, Any]]:
    libfixes.apply()
    if fast:
        rowdecoder.install()
    else:
        rowdecoder.uninstall()
    stream = BinLogStreamReader(
        connection_settings={
            "host": MYSQL["host"],
            "port": MYSQL["port"],
            "user": MYSQL["user"],
            "passwd": MYSQL["password"],
        },
        server_id=SERVER_ID,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        resume_stream=True,
        log_file=start[0],
        log_pos=start[1],
        blocking=False,
        only_schemas=[DB],
    )
    events = []
    try:
        for event in stream:
            if before_columns is not None and isinstance(event, UpdateRowsEvent):
                event._warp_before_columns = before_columns  # as the binlog reader asks for a key
            try:
                rows: Any = event.rows
            except Exception as exc:  # noqa: BLE001 - an error is a result to compare too
                rows = f"{type(exc).__name__}: {exc}"
            events.append((event.table, type(event).__name__, rows))
            if (stream.log_file, stream.log_pos) >= (start[2], start[3]):
                break
    finally:
        stream.close()
    return events


@pytest.fixture(scope="module")
def both(binlog_range: tuple[str, int, str, int]) -> Iterator[tuple[list[Any], list[Any]]]:
    try:
        library = _read(False, binlog_range)
        fast = _read(True, binlog_range)
        yield library, fast
    finally:
        rowdecoder.install()  # as the binlog reader left it


def test_the_decoder_reads_every_event_as_the_library_does(both: tuple[list[Any], list[Any]]) -> None:
    library, fast = both
    assert len(library) == len(fast)
    assert {t for t, _, _ in library} >= {f"t_{c.id}" for c in CASES} | {"wide", "wide_fast", "extra"}
    different = [
        (lib[0], lib[1], lib[2], ours[2])
        for lib, ours in zip(library, fast, strict=True)
        if _typed(lib) != _typed(ours)
    ]
    assert different == []


def test_a_before_image_read_for_some_columns_is_the_full_one_cut_to_them(
    binlog_range: tuple[str, int, str, int], both: tuple[list[Any], list[Any]]
) -> None:
    """An UPDATE's before image decoded for its key (and a column after variable-length ones) holds
    exactly those values of the full image; the after image is whole."""
    wanted = frozenset({"id", "c_json", "j", "y"})
    partial = _read(True, binlog_range, before_columns=wanted)
    _, full = both
    assert len(partial) == len(full)
    checked = 0
    for (table, kind, rows), (_, _, whole) in zip(partial, full, strict=True):
        if kind != "UpdateRowsEvent" or table not in rowdecoder.decoded_tables():
            assert _typed(rows) == _typed(whole)
            continue
        for row, expected in zip(rows, whole, strict=True):
            cut = {k: v for k, v in expected["before_values"].items() if k in wanted}
            assert _typed(row["before_values"]) == _typed(cut)
            assert _typed(row["after_values"]) == _typed(expected["after_values"])
            checked += 1
    assert checked > 100


def test_the_decoder_decodes_the_types_it_knows(both: tuple[list[Any], list[Any]]) -> None:
    # the tables whose column types the decoder reads: the comparison above is not the library twice
    known = ["int", "bigint_unsigned", "decimal_65_30", "varchar_utf8mb4", "datetime6", "json"]
    decoded = {case.id for case in CASES if f"t_{case.id}" in rowdecoder.decoded_tables()}
    assert decoded >= {k for k in known if any(c.id == k for c in CASES)}
    assert len(decoded) >= len(CASES) // 2
    assert {"wide_fast", "extra"} <= rowdecoder.decoded_tables()  # many columns, NULLs among them


def test_a_row_event_cut_short_raises() -> None:
    class Column:
        def __init__(self, name: str, type_: int, **meta: Any):
            self.name, self.type, self.unsigned = name, type_, False
            self.character_set_name, self.collation_name = "utf8mb4", None
            self.__dict__.update(meta)

    class Table:
        columns = [Column("id", 3), Column("note", 15, max_length=64)]

    decoder = rowdecoder.TableDecoder(Table())
    row = bytes([0]) + struct.pack("<i", 7) + bytes([5]) + b"hello"
    values, none, end = decoder.image(row, 0, {})
    assert (values, none, end) == ({"id": 7, "note": "hello"}, {}, len(row))
    for cut in range(1, len(row)):
        with pytest.raises((struct.error, IndexError)):
            decoder.image(row[:cut], 0, {})
