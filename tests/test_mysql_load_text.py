"""MariaDB -> MariaDB snapshot rows encoded by the source server as LOAD DATA text (MYSQL_LOAD_TEXT).

The MySQL source can render snapshot rows server-side in the format the MySQL
destination's ``LOAD DATA`` reads (warpd/connectors/mysql/copytext.py); the
engine asks for it when both sides list it.  Every value must land exactly as
through the canonical path (values converted in Python, encoded by the
destination): the same table is copied both ways into two databases and
compared, value by value, and the tricky values are checked against what was
written at the source.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pymysql
import pytest

from tests.conftest import MYSQL_HOST, MYSQL_PORT, mysql_root
from warpd.config.model import SchemaConfig
from warpd.connectors.base import MYSQL_LOAD_TEXT, SnapshotChunk
from warpd.connectors.mysql.destination import MySQLDestination
from warpd.connectors.mysql.source import MySQLSource
from warpd.engine.applier import DestinationPool, TableApplier

URI = f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/"

DDL = """CREATE TABLE mixed (
    id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    u64 BIGINT UNSIGNED, i64 BIGINT, d65 DECIMAL(65,30), d12 DECIMAL(12,2), f64 DOUBLE, f32 FLOAT,
    b TINYINT(1), txt TEXT, lat VARCHAR(300) CHARACTER SET latin1, longtxt MEDIUMTEXT,
    vb VARBINARY(300), bl BLOB, js JSON, dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, d DATE,
    tm TIME(6), bits BIT(12), bit64 BIT(64), e ENUM('a', 'b\tc'), st SET('x', 'y'), uid UUID, yr YEAR
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

TRICKY = "tab\there, newline\nthere, backslash\\ and \\N, cr\r, nul\0, ctrl-z\x1a, é ü 😀"
LONG = ("line\twith a tab and a \\ backslash\n" * 40) + "end"  # > 256 bytes with escapes: read raw
ALL_BYTES = bytes(range(256))
U64 = 2**64 - 1
D65 = Decimal("-" + "9" * 35 + "." + "9" * 30)

ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "u64": U64,
        "i64": -(2**63),
        "d65": D65,
        "d12": Decimal("-1234567890.12"),
        "f64": 0.1 + 0.2,
        "f32": 1.5,
        "b": 1,
        "txt": TRICKY,
        "lat": "café\tbar\\",
        "longtxt": LONG,
        "vb": b"\t\n\\N\0\r\x1a",
        "bl": ALL_BYTES,
        "js": '{"a": "t\\tb\\\\", "n": null, "x": 2.50, "u": "\\u00e9"}',
        "dtm": "2021-03-04 05:06:07.890123",
        "ts": "2038-01-19 03:14:07.999999",
        "d": "1000-01-01",
        "tm": "838:59:59.000000",
        "bits": 0b101000000001,
        "bit64": U64,
        "e": "b\tc",
        "st": "x,y",
        "uid": "123e4567-e89b-12d3-a456-426614174000",
        "yr": 2155,
    },
    {"id": 2},  # every other column NULL
    {
        "id": 3,
        "u64": 0,
        "i64": 2**63 - 1,
        "d65": Decimal("0." + "0" * 29 + "1"),
        "d12": Decimal("0.00"),
        "f64": -1.7976931348623157e308,
        "f32": -0.0,
        "b": 0,
        "txt": "\\N",  # the two characters, not NULL
        "lat": "",
        "longtxt": "\\",
        "vb": b"",
        "bl": b"\\N",
        "js": "null",  # JSON null, not SQL NULL
        "dtm": "0000-00-00 00:00:00",  # nullable zero date: NULL
        "ts": "1970-01-01 00:00:01",
        "d": "9999-12-31",
        "tm": "-838:59:59.000000",
        "bits": 0,
        "bit64": 0,
        "e": "a",
        "st": "",
        "uid": "00000000-0000-0000-0000-000000000000",
        "yr": 1901,
    },
    {"id": U64, "txt": "N", "longtxt": LONG * 3, "js": "[1, 2.0, -0, 1e2]", "vb": b"\\", "tm": "00:00:00"},
]


def _insert(cur: Any, table: str, row: dict[str, Any]) -> None:
    names = ", ".join(f"`{n}`" for n in row)
    cur.execute(f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(row))})", tuple(row.values()))


@pytest.fixture
def dbs() -> Iterator[tuple[str, str, str]]:
    """(source, destination of the canonical path, destination of the LOAD DATA text path)."""
    name = f"warp_lt_{uuid.uuid4().hex[:10]}"
    out = (name, f"{name}_canon", f"{name}_bulk")
    with mysql_root() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{name}`")
        cur.execute("SET SESSION sql_mode = '', time_zone = '+00:00'")  # zero dates allowed
        cur.execute(DDL)
        for row in ROWS:
            _insert(cur, "mixed", row)
        cur.execute("CREATE TABLE zero_dates (id INT PRIMARY KEY, d DATETIME NOT NULL)")
        cur.execute("INSERT INTO zero_dates VALUES (1, '2020-01-02 03:04:05'), (2, '0000-00-00 00:00:00')")
        cur.execute("INSERT INTO zero_dates VALUES (3, '2020-00-15 00:00:00')")
    yield out
    with mysql_root() as conn, conn.cursor() as cur:
        for db in out:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")


def _copy(
    source: MySQLSource, table: str, dest_db: str, bulk_format: str | None, chunk_size: int = 2
) -> tuple[list[SnapshotChunk], list[tuple[Any, ...]]]:
    """Snapshot ``table`` into ``dest_db`` as the engine does; return the chunks and the dead letters."""
    dest = MySQLDestination(URI)
    schema = source.describe(table)
    plan = dest.plan(schema, dest_db, soft_delete=False, metadata=False)
    pool = DestinationPool(lambda: MySQLDestination(URI))
    letters: list[tuple[Any, ...]] = []
    applier = TableApplier(
        "lt",
        plan,
        SchemaConfig(name="lt").table_settings(table),
        pool,
        lambda *x: letters.append(x),
        lambda: False,
    )
    try:
        dest.prepare(plan)
        fmt = {"bulk_format": bulk_format} if bulk_format else {}
        chunks = list(source.snapshot(schema, None, chunk_size, **fmt))
        for chunk in chunks:
            applier.copy_snapshot(chunk)
    finally:
        applier.close()
        pool.close()
        dest.close()
    return chunks, letters


def _rows(db: str, table: str, columns: str = "*") -> list[tuple[Any, ...]]:
    with mysql_root() as conn, conn.cursor() as cur:
        cur.execute("SET SESSION time_zone = '+00:00'")
        cur.execute(f"SELECT {columns} FROM `{db}`.`{table}` ORDER BY id")
        return list(cur.fetchall())


def test_load_text_snapshot_lands_the_same_values_as_the_canonical_path(dbs: tuple[str, str, str]) -> None:
    src_db, canon_db, bulk_db = dbs
    source = MySQLSource(f"{URI}{src_db}", src_db, server_id=4_100_000 + uuid.uuid4().int % 100_000)
    try:
        _chunks, canon_letters = _copy(source, "mixed", canon_db, None)
        chunks, letters = _copy(source, "mixed", bulk_db, MYSQL_LOAD_TEXT)
    finally:
        source.close()
    assert canon_letters == [] and letters == []
    # the server encoded these columns itself; the others (FLOAT, SET) came as values
    encoded = set(chunks[0].encoded_columns)
    assert {"u64", "d65", "txt", "longtxt", "vb", "bl", "js", "dtm", "ts", "tm", "bits", "bit64"} <= encoded
    assert {"f32", "st"}.isdisjoint(encoded), encoded
    assert chunks[0].encoded is not None and "\r" not in "".join(
        chunks[-2].encoded or []
    )  # deferred ones filled

    canon, bulk = _rows(canon_db, "mixed"), _rows(bulk_db, "mixed")
    assert len(bulk) == len(ROWS)
    for a, b in zip(canon, bulk, strict=True):
        assert a == b and [type(x) for x in a] == [type(x) for x in b], (a, b)

    cols = "id, u64, d65, txt, longtxt, vb, bl, js, dtm, ts, tm, bits + 0, bit64 + 0, lat, f64"
    got = {r[0]: r[1:] for r in _rows(bulk_db, "mixed", cols)}
    one, nulls, three, last = got[1], got[2], got[3], got[U64]
    assert one[:5] == (U64, D65, TRICKY, LONG, b"\t\n\\N\0\r\x1a")
    assert one[5] == ALL_BYTES
    assert json.loads(one[6]) == {"a": "t\tb\\", "n": None, "x": 2.5, "u": "é"}
    assert one[7:11] == (
        dt.datetime(2021, 3, 4, 5, 6, 7, 890123),
        dt.datetime(2038, 1, 19, 3, 14, 7, 999999),
        dt.timedelta(hours=838, minutes=59, seconds=59),
        0b101000000001,
    )
    assert one[11:] == (U64, "café\tbar\\", 0.30000000000000004)
    assert set(nulls) == {None}  # SQL NULL, never the text '\N'
    assert three[2:8] == ("\\N", "\\", b"", b"\\N", "null", None)  # '\N' text and JSON null stay values
    assert three[9] == -dt.timedelta(hours=838, minutes=59, seconds=59)
    assert last[2:4] == ("N", LONG * 3) and last[4] == b"\\"


def test_load_text_refuses_what_the_canonical_path_refuses(dbs: tuple[str, str, str]) -> None:
    """A zero date in a NOT NULL column has no MySQL value: the row goes to the dead letters either way."""
    src_db, canon_db, bulk_db = dbs
    source = MySQLSource(f"{URI}{src_db}", src_db, server_id=4_200_000 + uuid.uuid4().int % 100_000)
    try:
        _c, canon_letters = _copy(source, "zero_dates", canon_db, None, chunk_size=10)
        chunks, letters = _copy(source, "zero_dates", bulk_db, MYSQL_LOAD_TEXT, chunk_size=10)
    finally:
        source.close()
    assert "d" in chunks[0].encoded_columns
    # (a dead letter keeps the server-encoded columns as their text: "2")
    assert (
        sorted(int(x[2]["id"]) for x in canon_letters) == sorted(int(x[2]["id"]) for x in letters) == [2, 3]
    )
    assert all(x[2]["d"] == "-infinity" for x in letters)
    # the same reason as the canonical path's, not a warning of the load
    assert {x[3] for x in letters} == {x[3] for x in canon_letters}, (letters, canon_letters)
    assert (
        _rows(bulk_db, "zero_dates")
        == _rows(canon_db, "zero_dates")
        == [(1, dt.datetime(2020, 1, 2, 3, 4, 5))]
    )


@pytest.mark.exclusive  # SET GLOBAL local_infile = 0 would change how other tests' MariaDB destinations load
def test_load_text_through_multi_row_inserts_when_local_infile_is_off(dbs: tuple[str, str, str]) -> None:
    src_db, _canon_db, bulk_db = dbs
    with mysql_root() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.local_infile")
        old = int(cur.fetchone()[0])
        cur.execute("SET GLOBAL local_infile = 0")
    try:
        dest = MySQLDestination(URI)
        dest.connect()
    finally:
        with mysql_root() as conn, conn.cursor() as cur:
            cur.execute(f"SET GLOBAL local_infile = {old}")
    source = MySQLSource(f"{URI}{src_db}", src_db, server_id=4_300_000 + uuid.uuid4().int % 100_000)
    try:
        assert dest.local_infile is False
        schema = source.describe("mixed")
        plan = dest.plan(schema, bulk_db, soft_delete=False, metadata=True)
        dest.prepare(plan)
        for chunk in source.snapshot(schema, None, 10, bulk_format=MYSQL_LOAD_TEXT):
            encoded = dest.encode_chunk(plan, chunk)
            assert not encoded.failed
            if encoded.records:
                dest.write(plan, [r for _row, r in encoded.records], direct=True, layout=encoded.layout)
        got = {r["id"]: r for r in dest.read_rows(plan) or []}
    finally:
        source.close()
        dest.close()
    assert got[1]["txt"] == TRICKY and got[1]["bl"] == ALL_BYTES and got[1]["u64"] == U64
    assert (
        got[3]["txt"] == "\\N" and got[2]["txt"] is None and got[3]["js"] is None
    )  # JSON null reads as None
    assert got[U64]["longtxt"] == LONG * 3


def test_a_duplicate_key_in_a_direct_load_is_reported_as_a_duplicate(dbs: tuple[str, str, str]) -> None:
    """LOAD DATA LOCAL turns a duplicate key into a warning; the direct load raises it, so the engine merges."""
    src_db, _canon_db, bulk_db = dbs
    source = MySQLSource(f"{URI}{src_db}", src_db, server_id=4_400_000 + uuid.uuid4().int % 100_000)
    dest = MySQLDestination(URI)
    try:
        schema = source.describe("mixed")
        plan = dest.plan(schema, bulk_db, soft_delete=False, metadata=False)
        dest.prepare(plan)
        chunk = next(iter(source.snapshot(schema, None, 10, bulk_format=MYSQL_LOAD_TEXT)))
        encoded = dest.encode_chunk(plan, chunk)
        records = [r for _row, r in encoded.records]
        dest.write(plan, records[:1], direct=True, layout=encoded.layout)
        with pytest.raises(pymysql.err.MySQLError) as info:
            dest.write(plan, records, direct=True, layout=encoded.layout)
        assert dest.is_duplicate(info.value)
        assert len(_rows(bulk_db, "mixed", "id")) == 1  # rolled back whole
        dest.write(plan, records, layout=encoded.layout)  # the merge the engine then does
        assert len(_rows(bulk_db, "mixed", "id")) == len(ROWS)
    finally:
        source.close()
        dest.close()


def test_the_engine_negotiates_load_data_text_for_a_mysql_destination(
    dbs: tuple[str, str, str], tmp_path: Any
) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    src_db, _canon_db, bulk_db = dbs
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "source": {"connection_string": f"{URI}{src_db}"},
                "destination": {"type": "mysql", "connection_string": URI},
                "schemas": [{"name": src_db, "destination_schema": bulk_db}],
            }
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "warpd", "--config", str(config), "--schema", src_db, "--dry-run",
         "--state-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert (
        "rows of an initial copy encoded by the source server (mysql-load-data-text)"
        in out.stdout + out.stderr
    )


def test_a_chunk_copied_again_after_a_crash_is_merged_not_refused(dbs: tuple[str, str, str]) -> None:
    """A chunk committed before a crash but not recorded is copied again: its keys are there, and the
    engine merges it (the same rows, no dead letters)."""
    src_db, _canon_db, bulk_db = dbs
    source = MySQLSource(f"{URI}{src_db}", src_db, server_id=4_500_000 + uuid.uuid4().int % 100_000)
    try:
        _copy(source, "mixed", bulk_db, MYSQL_LOAD_TEXT)
        first = _rows(bulk_db, "mixed")
        with mysql_root() as conn, conn.cursor() as cur:
            cur.execute(f"DELETE FROM `{bulk_db}`.mixed WHERE id = 3")  # one key of the chunk missing
        _chunks, letters = _copy(source, "mixed", bulk_db, MYSQL_LOAD_TEXT)
    finally:
        source.close()
    assert letters == []
    assert _rows(bulk_db, "mixed") == first
