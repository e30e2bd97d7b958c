"""The MySQL/MariaDB snapshot: large and escape-heavy values, every key type, and the start position.

End-to-end through ``cartridge-warp --mode single`` against the local MariaDB and
each destination (tests marked ``destinations``: PostgreSQL and MariaDB itself; fixtures in
conftest.py); each test checks the rows a user would find at the destination.  The tests
that read the source alone (no cartridge-warp process) run once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Databases, Warp, write_config
from test_replication import assert_converged, q, start_streaming

from warpd.connectors.mysql import copytext
from warpd.connectors.mysql.source import MySQLSource
from warpd.errors import FatalError
from warpd.state.store import StateStore

BLOB_BYTES = 9_000_000


def _fill_blob(dbs: Databases, table: str, column: str, key: int, size: int) -> bytes:
    """Append random bytes to ``column`` of row ``key`` 1 MB at a time (a 9 MB statement is
    over the server's packet limit once escaped); return the value."""
    value = os.urandom(size)
    for start in range(0, size, 1_000_000):
        dbs.sql(
            f"UPDATE {q(table)} SET {q(column)} = CONCAT({q(column)}, %s) WHERE id = %s",
            (value[start : start + 1_000_000], key),
        )
    return value


def _digests_mysql(dbs: Databases, table: str, columns: dict[str, str]) -> dict[int, tuple[Any, ...]]:
    """MD5 and length of each column's bytes: ``columns`` maps a name to "bytes" or the PostgreSQL
    name of the charset its text is stored in (UTF8 is compared as MariaDB's utf8mb4)."""
    raws = [f"CONVERT({q(c)} USING utf8mb4)" if enc == "UTF8" else q(c) for c, enc in columns.items()]
    picks = ", ".join(f"MD5({raw}), LENGTH({raw})" for raw in raws)
    return {r[0]: tuple(r[1:]) for r in dbs.sql(f"SELECT id, {picks} FROM {q(table)}")}  # noqa: S608


def _digests_dest(dbs: Databases, table: str, columns: dict[str, str]) -> dict[int, tuple[Any, ...]]:
    """The same digests at the destination: each text column's value converted back to the source's
    charset (the destination holds all text as UTF-8)."""
    picks = []
    for name, enc in columns.items():
        if dbs.dest.kind == "mysql":
            raw = (
                q(name)
                if enc == "bytes"
                else f"CONVERT({q(name)} USING {'utf8mb4' if enc == 'UTF8' else enc})"
            )
            picks.append(f"MD5({raw}), LENGTH({raw})")
        else:
            raw = f'"{name}"' if enc == "bytes" else f"convert_to(\"{name}\", '{enc}')"
            picks.append(f"md5({raw}), octet_length({raw})")
    rows = dbs.dest.query(f"SELECT id, {', '.join(picks)} FROM {{}}", table)  # noqa: S608
    return {r[0]: tuple(r[1:]) for r in rows}


# -- 1 and 2: values the server must not encode itself --------------------------------
@pytest.mark.destinations
def test_large_and_escape_heavy_values_arrive_exactly(dbs: Databases, warp: Callable[..., Warp]) -> None:
    """A 9,000,000-byte LONGBLOB used to arrive as NULL (its hex form overflowed max_allowed_packet),
    as did a 9,000,000-character latin1 LONGTEXT (18 MB once converted to UTF-8); text with many
    characters to escape took the server time quadratic in their number. All must land exactly.

    (The escape-heavy values are kept moderate: on the code before the fix a killed snapshot
    query goes on escaping in the server for as long as it takes.)
    """
    dbs.sql(
        "CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB, t LONGTEXT, lt LONGTEXT CHARACTER SET latin1, "
        "j JSON, small VARCHAR(300))"
    )
    dbs.sql(
        "INSERT INTO big VALUES (1, '', NULL, NULL, NULL, 'plain'), "
        "(2, NULL, '', '', '{}', CONCAT('a', CHAR(10), 'b')), (3, '', '', 'x', NULL, NULL), "
        "(4, 'x', 'tab\there', NULL, '[1]', ''), (5, NULL, NULL, NULL, NULL, REPEAT('\\\\', 300))"
    )
    _fill_blob(dbs, "big", "b", 1, BLOB_BYTES)
    # every character COPY escapes, between multi-byte characters
    dbs.sql(
        "UPDATE big SET t = REPEAT(CONCAT('é€\\\\', CHAR(9), 'x', CHAR(10), CHAR(13), 'ü'), 20000) WHERE id = 1"
    )
    dbs.sql("UPDATE big SET t = REPEAT(CHAR(10), 200000) WHERE id = 2")  # escape-heavy, not large
    # 9 MB of latin1, 18 MB in UTF-8 (built in latin1: a UTF-8 literal would overflow the packet)
    dbs.sql("UPDATE big SET lt = REPEAT(CONVERT('é' USING latin1), 4500000) WHERE id = 2")
    dbs.sql(
        "UPDATE big SET lt = CONCAT(lt, CONVERT(CONCAT(CHAR(10), '\\\\') USING latin1), "
        "REPEAT(CONVERT('ÿ' USING latin1), 4500000)) WHERE id = 2"
    )
    _fill_blob(dbs, "big", "b", 3, BLOB_BYTES)  # with row 3's text: a row over max_allowed_packet
    dbs.sql("UPDATE big SET t = REPEAT('ab', 4500000) WHERE id = 3")
    dbs.sql(
        "UPDATE big SET j = CONCAT('[', REPEAT(CONCAT(JSON_QUOTE(CONCAT('q\"', CHAR(10))), ','), 20000), '0]') "
        "WHERE id = 4"
    )
    w = start_streaming(warp)
    assert_converged(dbs, w)
    columns = {"b": "bytes", "t": "UTF8", "lt": "LATIN1", "small": "UTF8"}  # j (jsonb): assert_converged
    assert _digests_dest(dbs, "big", columns) == _digests_mysql(dbs, "big", columns)
    sizes = dbs.dest.query(
        "SELECT id, octet_length(b), char_length(lt) FROM {} WHERE id <= 3 ORDER BY id", "big"
    )
    assert sizes == [(1, BLOB_BYTES, None), (2, None, 9_000_002), (3, BLOB_BYTES, 1)]
    assert "Traceback" not in w.output


def test_a_value_the_server_cannot_encode_stops_the_snapshot(
    dbs: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were a value ever encoded by the server beyond max_allowed_packet (here: with the routing
    of long values to Python switched off), the snapshot stops naming the table; no NULL passes."""
    dbs.sql("CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB)")
    dbs.sql("INSERT INTO blobs VALUES (1, 'small'), (2, '')")
    _fill_blob(dbs, "blobs", "b", 2, BLOB_BYTES)
    monkeypatch.setattr(copytext, "deferral_condition", lambda *_args: None)
    source = MySQLSource(dbs.source_uri, dbs.name, server_id=998)
    try:
        with pytest.raises(FatalError) as caught:
            for _chunk in source.snapshot(source.describe("blobs"), None, 10, copy_text=True):
                pass
    finally:
        source.close()
    message = str(caught.value)
    assert "'blobs'" in message and "max_allowed_packet" in message and "NULL" in message


# -- 3: every key type, one row a chunk --------------------------------------------------
# (table, column definitions, key, rows as SQL tuples)
KEY_TABLES: list[tuple[str, str, str, list[str]]] = [
    ("k_tinyint", "k TINYINT", "k", ["-128", "-1", "0", "1", "127"]),
    ("k_tinyint_u", "k TINYINT UNSIGNED", "k", ["0", "1", "128", "255"]),
    ("k_bool", "k BOOL", "k", ["0", "1", "2"]),
    ("k_smallint", "k SMALLINT", "k", ["-32768", "0", "32767"]),
    ("k_smallint_u", "k SMALLINT UNSIGNED", "k", ["0", "65535"]),
    ("k_mediumint", "k MEDIUMINT", "k", ["-8388608", "0", "8388607"]),
    ("k_mediumint_u", "k MEDIUMINT UNSIGNED", "k", ["0", "16777215"]),
    ("k_int", "k INT", "k", ["-2147483648", "0", "2147483647"]),
    ("k_int_u", "k INT UNSIGNED ZEROFILL", "k", ["0", "2147483648", "4294967295"]),
    ("k_bigint", "k BIGINT", "k", ["-9223372036854775808", "0", "9223372036854775807"]),
    ("k_bigint_u", "k BIGINT UNSIGNED", "k", ["0", "9223372036854775808", "18446744073709551615"]),
    (
        "k_decimal",
        "k DECIMAL(65,30)",
        "k",
        [
            "0",
            "-1.5",
            "0.0000001",
            "0.000000100000000000000000000001",
            "99999999999999999999999999999999999.5",
        ],
    ),
    ("k_float", "k FLOAT", "k", ["1.2345678", "1.2345679", "1.234568", "-3.4e38", "0"]),
    ("k_double", "k DOUBLE", "k", ["0.1", "0.30000000000000004", "0.3", "1.7976931348623157e308", "-5e-324"]),
    ("k_bit", "k BIT(10)", "k", ["b'0'", "b'1'", "b'11'", "b'1000000000'", "b'1111111111'"]),
    ("k_year", "k YEAR", "k", ["0", "1901", "2024", "2155"]),
    ("k_date", "k DATE", "k", ["'0000-00-00'", "'1000-01-01'", "'2024-02-29'", "'9999-12-31'"]),
    (
        "k_datetime",
        "k DATETIME(6)",
        "k",
        [
            "'1000-01-01 00:00:00'",
            "'2024-01-01 00:00:00'",
            "'2024-01-01 00:00:00.000001'",
            "'9999-12-31 23:59:59.999999'",
        ],
    ),
    (
        "k_timestamp",
        "k TIMESTAMP(3)",
        "k",
        [
            "'1970-01-01 00:00:01'",
            "'2024-03-31 01:30:00.5'",
            "'2024-10-27 01:30:00'",
            "'2038-01-19 03:14:07.999'",
        ],
    ),
    (
        "k_time",
        "k TIME(6)",
        "k",
        ["'-838:59:59'", "'-00:00:01.5'", "'-00:00:01'", "'00:00:00'", "'838:59:59'"],
    ),
    ("k_char", "k CHAR(5)", "k", ["''", "'a'", "'B'", "'c d'", "'é'", "'z'"]),
    ("k_varchar", "k VARCHAR(20)", "k", ["''", "'a'", "'a\\t'", "'A b'", "'B'", "'é'", "'😀'"]),
    ("k_varchar_cs", "k VARCHAR(20) COLLATE utf8mb4_bin", "k", ["'a'", "'A'", "'b'", "'B'", "'a\\t'"]),
    ("k_varchar_nopad", "k VARCHAR(20) COLLATE utf8mb4_nopad_bin", "k", ["'a'", "'a '", "'a  '", "'b'"]),
    ("k_varchar_latin1", "k VARCHAR(20) CHARACTER SET latin1", "k", ["'a'", "'é'", "'Z'", "'ÿ'"]),
    ("k_text_prefix", "k TEXT", "k(4)", ["'aaaa-1'", "'aaab'", "'B'", "'ü'"]),
    ("k_enum", "k ENUM('zebra','apple','mango')", "k", ["'zebra'", "'apple'", "'mango'", "'not a label'"]),
    ("k_set", "k SET('x','y','z')", "k", ["''", "'z'", "'x,y'", "'y'", "'x,y,z'"]),
    ("k_binary", "k BINARY(4)", "k", ["0x00", "0x01", "0xff", "'ab'"]),
    ("k_varbinary", "k VARBINARY(8)", "k", ["''", "0x00", "0x0000", "0xff", "'A'", "'a'"]),
    ("k_blob_prefix", "k BLOB", "k(3)", ["0x000102", "0xff", "'abc'"]),
    (
        "k_uuid",
        "k UUID",
        "k",
        [
            "'00000000-0000-0000-0000-000000000002'",
            "'00000000-0000-0000-0001-000000000001'",
            "'00000001-0000-0000-0000-000000000000'",
            "'10000000-0000-0000-0000-000000000000'",
        ],
    ),
    ("k_inet6", "k INET6", "k", ["'::1'", "'::ffff:1.2.3.4'", "'fe80::1'", "'2001:db8::'"]),
    (
        "k_enum_int",
        "k ENUM('zebra','apple','mango'), id INT",
        "k, id",
        ["'zebra', 1", "'apple', 2", "'mango', 3", "'zebra', 4", "'apple', 5", "'mango', 6"],
    ),
    (
        "k_mixed",
        "s SET('x','y'), b BIT(3), f FLOAT, v VARCHAR(10)",
        "s, b, f, v",
        [
            "'y', b'1', 1.2345678, 'a'",
            "'y', b'1', 1.2345679, 'a'",
            "'x', b'10', 1.5, 'B'",
            "'x', b'1', 1.5, 'b'",
        ],
    ),
    (
        "k_temporal_decimal",
        "u INT UNSIGNED, d DECIMAL(10,3), t TIME, dt DATETIME(3)",
        "u, d, t, dt",
        [
            "1, 1.5, '-00:00:01', '2024-01-01 00:00:00'",
            "1, 1.5, '-00:00:01', '2024-01-01 00:00:00.001'",
            "1, 1.5, '00:00:00', '2024-01-01 00:00:00'",
            "1, -1.5, '838:59:59', '1000-01-01 00:00:00'",
        ],
    ),
]


@pytest.mark.destinations
def test_every_key_type_copies_every_row_with_one_row_chunks(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """Chunk boundaries compare keys as ORDER BY sorts them: ENUM/SET by number, FLOAT exactly, BIT as a
    number; an ENUM key used to copy 1 row of 3 and an (ENUM, id) key 3 of 6."""
    dbs.sql("SET SESSION sql_mode = ''")  # zero dates, an invalid ENUM value
    dbs.sql("SET SESSION time_zone = '+00:00'")
    for table, columns, key, rows in KEY_TABLES:
        dbs.sql(f"CREATE TABLE {table} ({columns}, note VARCHAR(10), PRIMARY KEY ({key}))")
        for n, row in enumerate(rows):
            dbs.sql(f"INSERT INTO {table} VALUES ({row}, 'r{n}')")  # noqa: S608 - test data
        assert dbs.source_count(table) == len(rows), table
    config = write_config(tmp_path, f"schemas:\n  - name: {dbs.name}\n    snapshot_chunk_size: 1\n")
    w = start_streaming(warp, config)
    counts = {t: dbs.dest.count(t) for t, _c, _k, _r in KEY_TABLES}
    expected = {t: len(rows) for t, _c, _k, rows in KEY_TABLES}
    tables = None
    if dbs.dest.kind == "mysql":
        # the zero date of a NOT NULL key arrives as '-infinity' (docs/type-mapping.md), which PostgreSQL
        # holds and a MySQL DATE cannot: that one row is dead-lettered, every other row is copied
        expected["k_date"] -= 1
        tables = [t for t, _c, _k, _r in KEY_TABLES if t != "k_date"]
        letters = StateStore(str(tmp_path / "state")).dead_letters(dbs.name)
        assert [(d.table, str(d.row["k"]), d.operation) for d in letters] == [
            ("k_date", "-infinity", "snapshot")
        ]
        assert "infinity" in letters[0].reason, letters[0].reason
    assert counts == expected
    assert_converged(dbs, w, tables)


def test_a_snapshot_resumes_from_a_label_stored_by_an_older_version(dbs: Databases) -> None:
    """Older versions stored an ENUM/SET key as its label and BIT as bytes; resuming must still
    continue after that row in ORDER BY order."""
    from warpd.connectors.keycodec import encode_key

    dbs.sql(
        "CREATE TABLE e (k ENUM('zebra','apple','mango'), s SET('x','y'), b BIT(4), PRIMARY KEY (k, s, b))"
    )
    dbs.sql("INSERT INTO e VALUES ('zebra','y',1), ('apple','x',2), ('apple','y',1), ('mango','x',1)")
    source = MySQLSource(dbs.source_uri, dbs.name, server_id=998)
    try:
        stored = encode_key(["apple", "x", b"\x02"])
        rows = [r for chunk in source.snapshot(source.describe("e"), stored, 1) for r in chunk.rows]
    finally:
        source.close()
    assert [(r["k"], r["s"], r["b"]) for r in rows] == [("apple", ["y"], "0001"), ("mango", ["x"], "0001")]


def test_a_null_in_configured_key_columns_stops_the_copy_instead_of_ending_it(dbs: Databases) -> None:
    """key_columns may name a nullable column; a chunk ending on NULL used to end the copy
    (nothing is greater than NULL), so the rest of the table was silently never copied."""
    dbs.sql("CREATE TABLE nk (a INT NULL, b INT)")
    dbs.sql("INSERT INTO nk VALUES (NULL, 1), (1, 2), (2, 3)")
    source = MySQLSource(dbs.source_uri, dbs.name, server_id=998)
    try:
        with pytest.raises(FatalError) as caught:
            for _chunk in source.snapshot(source.describe("nk", ("a",)), None, 1, copy_text=True):
                pass
    finally:
        source.close()
    assert "'nk'" in str(caught.value) and "NOT NULL" in str(caught.value)


# -- 7: the start position under continuous writes ---------------------------------------
@pytest.mark.destinations
def test_snapshot_started_under_continuous_writes_converges(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """The start position is taken with the snapshot's view (MariaDB: binlog_snapshot_file/position of a
    consistent snapshot), so no transaction can be in the binlog before it yet invisible to the copy."""
    from conftest import mysql_root

    dbs.sql("CREATE TABLE hot (id INT PRIMARY KEY, v INT NOT NULL, w INT NOT NULL DEFAULT 0)")
    dbs.sql("INSERT INTO hot (id, v) SELECT seq, seq FROM seq_1_to_5000")
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        conn = mysql_root(dbs.name)
        try:
            with conn.cursor() as cur:
                i = 0
                while not stop.is_set():
                    i += 1
                    cur.execute("START TRANSACTION")
                    cur.execute("INSERT INTO hot (id, v) VALUES (%s, %s)", (100_000 * (n + 1) + i, i))
                    cur.execute("UPDATE hot SET w = w + 1 WHERE id = %s", (1 + (i * 7 + n) % 5000,))
                    cur.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(6)]
    for t in threads:
        t.start()
    try:
        config = write_config(tmp_path, f"schemas:\n  - name: {dbs.name}\n    snapshot_chunk_size: 500\n")
        w = start_streaming(warp, config)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert dbs.source_count("hot") > 5000
    assert_converged(dbs, w)


def test_every_transaction_before_the_start_position_is_visible_to_the_copy(dbs: Databases) -> None:
    """The property behind the test above, sampled many times: right after current_position() returns
    P, every transaction the binlog holds before P is visible to a new read."""
    from conftest import MYSQL_HOST, MYSQL_PORT, mysql_root
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import XidEvent
    from pymysqlreplication.row_event import WriteRowsEvent

    dbs.sql("CREATE TABLE w (id INT AUTO_INCREMENT PRIMARY KEY, n INT NOT NULL)")
    start = dbs.sql("SHOW MASTER STATUS")[0][:2]
    stop = threading.Event()

    def writer(n: int) -> None:
        conn = mysql_root(dbs.name)
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    cur.execute("INSERT INTO w (n) VALUES (%s)", (n,))
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(6)]
    for t in threads:
        t.start()
    source = MySQLSource(dbs.source_uri, dbs.name, server_id=997)
    samples = []
    try:
        for _ in range(300):
            position = source.current_position()
            visible = {r[0] for r in dbs.sql("SELECT id FROM w")}
            samples.append((position, visible))
    finally:
        stop.set()
        for t in threads:
            t.join()
        source.close()
    # every row of w was inserted by a committed transaction: read the binlog until each one's commit is
    # found (a non-blocking read ends at the binlog's end, or earlier if the server drops the dump: the
    # next read resumes after the last commit found)
    total = dbs.sql("SELECT COUNT(*) FROM w")[0][0]
    committed_at: dict[int, tuple[str, int]] = {}
    resume = (start[0], int(start[1]))
    deadline = time.monotonic() + 120
    while len(committed_at) < total and time.monotonic() < deadline:
        reader = BinLogStreamReader(
            connection_settings={"host": MYSQL_HOST, "port": MYSQL_PORT, "user": "root", "passwd": ""},
            server_id=3_900_000 + os.getpid() % 100_000,
            log_file=resume[0],
            log_pos=resume[1],
            resume_stream=True,
            blocking=False,
            only_events=[WriteRowsEvent, XidEvent],
            only_schemas=[dbs.name],
        )
        pending: list[int] = []
        try:
            for event in reader:
                if isinstance(event, WriteRowsEvent):
                    pending += [row["values"]["id"] for row in event.rows]
                else:
                    resume = (reader.log_file, event.packet.log_pos)
                    committed_at.update((i, resume) for i in pending)
                    pending = []
        finally:
            reader.close()
    assert total > 300
    assert len(committed_at) == total, f"{total - len(committed_at)} inserts' commits not found in the binlog"
    late = [
        (
            position,
            sorted(
                i
                for i, (f, end) in committed_at.items()
                if f == position["file"] and end <= position["pos"] and i not in visible
            )[:5],
        )
        for position, visible in samples
    ]
    assert [x for x in late if x[1]] == []
