"""The binlog reader never skips what it cannot turn into exact changes (issue 8, items 4, 6 and 20).

Each case either replicates exactly (compressed events, XA, latin1's odd
bytes) or stops the schema with a message naming the table, the binlog
position and the fix (statement-logged DML, partial row images, values no
codec can decode), and a paused table's undecodable rows never stop the rest.
The end-to-end tests run the real ``cartridge-warp`` (or ``warpd``) against
the local MariaDB and PostgreSQL.
"""

from __future__ import annotations

import re
import signal
import uuid
import zlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pymysql
import pytest
from conftest import MYSQL_HOST, MYSQL_PORT, Databases, Warp, mysql_root, wait_converged, wait_until
from daemon_support import Daemon
from test_replication import assert_converged, binlog_position, position_order, start_streaming, state

from warpd.connectors.base import Heartbeat, SchemaChange, SchemaOpKind
from warpd.connectors.mysql import ddl as mddl
from warpd.connectors.mysql.binlog import BinlogReader
from warpd.connectors.mysql.binlog_checks import (
    UnreplicableEvent,
    XaTransactions,
    undecodable_event,
    unreplicable,
    xa_decision,
)
from warpd.types import Column, ColumnType, Kind, TableSchema

TIMEOUT = 120.0


def session(database: str) -> pymysql.connections.Connection:
    """A root session of its own, for session-level binlog settings."""
    return pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", database=database, autocommit=True
    )


def in_session(database: str, *statements: str) -> None:
    """Run ``statements`` in one root session of their own (session-level binlog settings)."""
    conn = session(database)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def stopped_with(w: Warp, *fragments: str) -> str:
    """Wait for cartridge-warp to exit 1 with a message holding every fragment; return the output."""
    rc = w.wait(TIMEOUT)
    out = w.output
    assert rc == 1, f"exit code {rc}:\n{out[-4000:]}"
    assert "internal error" not in out and "Traceback" not in out, out[-4000:]
    for fragment in fragments:
        assert fragment in out, f"{fragment!r} not in:\n{out[-4000:]}"
    assert re.search(r"binlog \S+\.\d+:\d+", out), out[-4000:]  # the position
    return out


# -- unit level: decisions that need a server we do not have ---------------------------------


def test_a_mysql_compressed_transaction_payload_is_a_stop_naming_the_fix() -> None:
    what, fix = undecodable_event(0x28)  # TRANSACTION_PAYLOAD_EVENT
    assert "binlog_transaction_compression" in what and "binlog_transaction_compression = OFF" in fix
    here, start = {"file": "binlog.000007", "pos": 9120}, {"file": "binlog.000007", "pos": 8000}
    message = str(unreplicable(what, "shop", None, here, start, fix))
    assert "binlog.000007:9120" in message and "database shop" in message
    for event_type in (0xA9, 0xAA, 0xAB, 0x14):  # events the library cannot decode: never skipped
        assert undecodable_event(event_type) is not None
    assert undecodable_event(0x21) is None  # e.g. MySQL's anonymous GTID: no rows, ignored
    reader = _reader({})
    with pytest.raises(UnreplicableEvent, match=r"binlog_transaction_compression.*b\.000002:77"):
        reader._undecodable(SimpleNamespace(event_type=0x28), {"file": "b.000002", "pos": 77})
    reader._undecodable(SimpleNamespace(event_type=0x22), {"file": "b.000002", "pos": 99})  # passes


def test_mariadb_compressed_records_inflate_and_a_corrupt_one_is_an_error_not_a_skip() -> None:
    from pymysql.protocol import MysqlPacket

    from warpd.connectors.mysql import libfixes

    data = b"row data " * 100
    record = bytes([0x82]) + len(data).to_bytes(2, "big") + zlib.compress(data)
    assert libfixes._inflate(record) == data
    factory = libfixes.COMPRESSED_EVENTS[libfixes.WRITE_ROWS_COMPRESSED_EVENT_V1]
    body = b"\x01\0\0\0\0\0" + b"\0\0" + b"\x02" + b"\x03" + bytes([0x82, 0, 9]) + b"not zlib"
    wrapper = SimpleNamespace(packet=MysqlPacket(body, "utf-8"), event_type=0xA6)
    with pytest.raises(libfixes.CompressedEventError, match="0xa6"):
        factory(wrapper, len(body), {}, None)


@pytest.mark.parametrize(
    ("statement", "targets"),
    [
        ("INSERT INTO t VALUES (1)", [("db", "t")]),
        ("insert ignore into other.`x y` (a) select * from t", [("other", "x y")]),
        ("UPDATE LOW_PRIORITY t AS u SET a = 1 WHERE id = 2", [("db", "t")]),
        ("UPDATE t1, db2.t2 SET t1.a = t2.a", [("db", "t1"), ("db2", "t2")]),
        ("DELETE FROM t WHERE id = 1", [("db", "t")]),
        ("REPLACE t VALUES (1)", [("db", "t")]),
        ("LOAD DATA INFILE 'x' INTO TABLE d.t", [("d", "t")]),
        ("UPDATE t1 JOIN t2 ON t1.id = t2.id SET t1.a = 1", None),
        ("DELETE t1 FROM t1 JOIN t2", None),
        ("CALL p()", None),
    ],
)
def test_the_tables_a_statement_logged_change_targets(statement: str, targets: Any) -> None:
    assert mddl.dml_targets(statement, "db") == targets


def test_xa_decisions_and_the_held_checkpoint() -> None:
    assert xa_decision("XA COMMIT X'7832',X'',1") == ("COMMIT", (1, b"x2", b""))
    assert xa_decision("XA ROLLBACK X'61',X'62',3") == ("ROLLBACK", (3, b"a", b"b"))
    assert xa_decision("XA END X'7831',X'',1") is None
    xa = XaTransactions()
    first, later = {"file": "b.000001", "pos": 100}, {"file": "b.000001", "pos": 500}
    xa.prepared((1, b"a", b""), first, [Heartbeat(None)])
    xa.prepared((1, b"b", b""), later, [Heartbeat(None)])
    xa.prepared((1, b"c", b""), later, [])  # no row of this schema: holds nothing
    assert xa.hold() == first
    assert xa.decide((1, b"a", b"")) is not None and xa.hold() == later
    assert xa.decide((1, b"c", b"")) == []
    assert xa.decide((1, b"zz", b"")) is None  # prepared before the stream's start


def _reader(tables: dict[str, TableSchema]) -> BinlogReader:
    source = SimpleNamespace(database="db", copied_at={})
    return BinlogReader(source, {"file": "b.000001", "pos": 4}, tables, lambda _t: True)  # type: ignore[arg-type]


def test_create_table_if_not_exists_keeps_the_tracked_shape() -> None:
    """MySQL binlogs CREATE TABLE IF NOT EXISTS even when the table exists (MariaDB does not)."""
    big = ColumnType(Kind.INT, bits=64)
    shape = TableSchema("t", (Column("id", big, False, "bigint"), Column("n", big, True, "bigint")), ("id",))
    tables = {"t": shape}
    reader = _reader(tables)
    event = SimpleNamespace(
        query="CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY, n INT)", schema=b"db", timestamp=1
    )
    events = list(reader._query(event, {"file": "b.000001", "pos": 900}))
    assert tables["t"] is shape
    assert not [e for e in events if isinstance(e, SchemaChange)]
    # a table that does not exist yet is still created from the statement
    event.query = "CREATE TABLE IF NOT EXISTS fresh (id INT PRIMARY KEY)"
    created = [
        e for e in reader._query(event, {"file": "b.000001", "pos": 990}) if isinstance(e, SchemaChange)
    ]
    assert [e.table for e in created] == ["fresh"] and created[0].kind is SchemaOpKind.CREATE_TABLE
    assert created[0].schema is not None and [c.name for c in created[0].schema.columns] == ["id"]
    assert "fresh" not in tables  # reported, not written: the engine owns the map


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.destinations
def test_create_table_if_not_exists_on_a_replicated_table_changes_nothing(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    dbs.sql("CREATE TABLE big (id INT PRIMARY KEY, n BIGINT)")
    dbs.sql("INSERT INTO big VALUES (1, 1)")
    w = start_streaming(warp)
    dbs.sql("CREATE TABLE IF NOT EXISTS big (id INT PRIMARY KEY, n INT)")  # exists: a no-op with a warning
    dbs.sql("INSERT INTO big VALUES (2, 3000000000)")
    assert_converged(dbs, w)
    assert dbs.dest.query("SELECT n FROM {} WHERE id = 2", "big") == [(3000000000,)]


class GlobalSettings:
    """SET GLOBAL for one test, restored by :meth:`restore` (and at teardown): other tests share the server."""

    def __init__(self) -> None:
        self.conn = mysql_root()
        self.saved: dict[str, Any] = {}

    def set(self, name: str, value: Any) -> None:
        with self.conn.cursor() as cur:
            if name not in self.saved:
                cur.execute("SELECT @@GLOBAL." + name)
                self.saved[name] = cur.fetchone()[0]
            cur.execute(f"SET GLOBAL {name} = %s", (value,))

    def restore(self) -> None:
        with self.conn.cursor() as cur:
            for name, value in reversed(list(self.saved.items())):
                cur.execute(f"SET GLOBAL {name} = %s", (value,))
        self.saved.clear()


@pytest.fixture
def server_globals() -> Iterator[GlobalSettings]:
    settings = GlobalSettings()
    try:
        yield settings
    finally:
        settings.restore()
        settings.conn.close()


@pytest.mark.exclusive  # SET GLOBAL log_bin_compress: every other test's events would be compressed too
@pytest.mark.destinations
def test_mariadb_compressed_binlog_events_replicate(
    dbs: Databases, warp: Callable[..., Warp], server_globals: GlobalSettings
) -> None:
    dbs.sql("CREATE TABLE c (id INT PRIMARY KEY, a INT, s TEXT)")
    dbs.sql("INSERT INTO c VALUES (1, 1, 'before')")
    w = start_streaming(warp)
    conn = session(dbs.name)
    try:
        server_globals.set("log_bin_compress_min_len", 10)
        server_globals.set("log_bin_compress", "ON")
        with conn.cursor() as cur:  # one session, as few events as cover each kind
            cur.execute("INSERT INTO c VALUES (2, 2, REPEAT('x', 300)), (3, 3, 'y'), (4, 4, 'z')")
            cur.execute("UPDATE c SET a = a + 10, s = CONCAT(s, '!')")
            cur.execute("DELETE FROM c WHERE id = 3")
            cur.execute("ALTER TABLE c ADD COLUMN extra VARCHAR(40) NULL")  # a compressed statement
            cur.execute("INSERT INTO c VALUES (5, 5, 'after', 'with extra')")
    finally:
        server_globals.restore()  # at once: other tests' events must not be compressed
        conn.close()
    assert_converged(dbs, w)
    assert dbs.dest.query("SELECT id, a, extra FROM {} ORDER BY id", "c") == [
        (1, 11, None),
        (2, 12, None),
        (4, 14, None),
        (5, 5, "with extra"),
    ]


@pytest.mark.destinations
def test_statement_logged_dml_on_a_replicated_table_stops_the_schema(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE kept (id INT PRIMARY KEY, a INT)")
    dbs.sql("CREATE TABLE ignored (id INT PRIMARY KEY, a INT)")
    dbs.sql("INSERT INTO kept VALUES (1, 1)")
    config = tmp_path / "c.yaml"
    config.write_text(f"schemas:\n  - name: {dbs.name}\n    table_blacklist: [ignored]\n")
    w = start_streaming(warp, str(config))
    in_session(
        dbs.name,
        "SET SESSION binlog_format = 'STATEMENT'",
        "INSERT INTO ignored VALUES (1, 1)",  # not replicated: no reason to stop
        "INSERT INTO kept VALUES (2, 2)",
    )
    stopped_with(w, f"table {dbs.name}.kept", "logged as a statement", "binlog_format=ROW", "warpctl pause")
    assert dbs.dest.query("SELECT id FROM {} ORDER BY id", "kept") == [(1,)]


@pytest.mark.destinations
def test_statement_logged_dml_through_a_view_stops_the_schema(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    # The statement names the view, not the replicated table it writes: it must not pass as "not ours".
    dbs.sql("CREATE TABLE kept (id INT PRIMARY KEY, a INT)")
    dbs.sql("INSERT INTO kept VALUES (1, 1)")
    dbs.sql("CREATE VIEW v AS SELECT * FROM kept")
    dbs.sql("CREATE TABLE ignored (id INT PRIMARY KEY, a INT)")
    config = tmp_path / "c.yaml"
    config.write_text(f"schemas:\n  - name: {dbs.name}\n    table_blacklist: [ignored, v]\n")
    w = start_streaming(warp, str(config))
    in_session(
        dbs.name,
        "SET SESSION binlog_format = 'STATEMENT'",
        # neither an excluded table nor a temporary one writes a replicated table: no reason to stop
        "CREATE TEMPORARY TABLE tmp (id INT PRIMARY KEY)",
        "INSERT INTO tmp VALUES (1)",
        "INSERT INTO ignored VALUES (1, 1)",
        "UPDATE v SET a = 7 WHERE id = 1",  # a view (excluded by name or not) writes the table under it
    )
    out = stopped_with(w, f"{dbs.name}.v", "logged as a statement", "binlog_format=ROW")
    error = next(line for line in out.splitlines() if " ERROR " in line)
    assert "UPDATE v" in error and "tmp" not in error and "ignored" not in error, error
    assert dbs.dest.query("SELECT id, a FROM {}", "kept") == [(1, 1)]


@pytest.mark.destinations
def test_a_partial_row_image_stops_instead_of_deleting_the_row(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    dbs.sql("CREATE TABLE m (id INT PRIMARY KEY, a INT, b VARCHAR(20))")
    dbs.sql("INSERT INTO m VALUES (1, 10, 'keep me')")
    w = start_streaming(warp)
    in_session(
        dbs.name,
        "SET SESSION binlog_row_image = 'MINIMAL'",
        "UPDATE m SET a = 11 WHERE id = 1",
    )
    stopped_with(w, f"table {dbs.name}.m", "partial row image", "binlog_row_image=FULL")
    # before the fix the after-image without the key read as a key change and deleted the row
    assert dbs.dest.query("SELECT id, a, b FROM {}", "m") == [(1, 10, "keep me")]


@pytest.mark.destinations
def test_xa_rollback_commit_and_a_restart_between_prepare_and_commit(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE x (id INT PRIMARY KEY, v VARCHAR(20))")
    dbs.sql("INSERT INTO x VALUES (1, 'base')")
    w = start_streaming(warp)
    conn = session(dbs.name)
    cur = conn.cursor()
    # XA ids are the server's, and a prepared one outlives its session and a server restart:
    # ids of this test's own, rolled back if it fails, so no other run meets them
    prepared: set[str] = set()

    def xid(label: str) -> str:
        return f"'{label}-{dbs.name}'"

    def prepare(label: str, row_id: int) -> None:
        cur.execute(f"XA START {xid(label)}")
        cur.execute("INSERT INTO x VALUES (%s, %s)", (row_id, label))
        cur.execute("UPDATE x SET v = %s WHERE id = 1", (label,))
        cur.execute(f"XA END {xid(label)}")
        cur.execute(f"XA PREPARE {xid(label)}")
        prepared.add(label)

    def decide(how: str, label: str) -> None:
        cur.execute(f"XA {how} {xid(label)}")
        prepared.discard(label)

    try:
        prepare("rolled", 2)
        decide("ROLLBACK", "rolled")
        prepare("done", 3)
        decide("COMMIT", "done")
        assert_converged(dbs, w)  # no phantom row 2, row 3 and 'done' applied
        assert dbs.dest.query("SELECT id, v FROM {} ORDER BY id", "x") == [(1, "done"), (3, "done")]

        held = binlog_position(dbs)
        prepare("across", 4)
        dbs.sql("INSERT INTO x VALUES (5, 'after prepare')")  # committed while 'across' is undecided
        wait_until(lambda: dbs.dest.query("SELECT 1 FROM {} WHERE id = 5", "x"), TIMEOUT, "row 5")
        assert dbs.dest.query("SELECT 1 FROM {} WHERE id = 4", "x") == [], "applied before its XA COMMIT"
        store = state(tmp_path)
        try:
            assert position_order(store.checkpoint(dbs.name)) <= held, "the checkpoint passed an undecided XA"
        finally:
            store.close()
        assert w.stop(signal.SIGTERM, 60) == 0
        decide("COMMIT", "across")
    finally:
        for label in list(prepared):
            in_session(dbs.name, f"XA ROLLBACK {xid(label)}")
        conn.close()
    w2 = start_streaming(warp)
    assert_converged(dbs, w2)
    assert dbs.dest.query("SELECT id, v FROM {} ORDER BY id", "x") == [
        (1, "across"),
        (3, "done"),
        (4, "across"),
        (5, "after prepare"),
    ]


@pytest.mark.destinations
def test_an_xa_transaction_prepared_before_a_copy_and_committed_after_it_is_applied(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """Replayed events a table's copy holds are skipped (docs/how-it-works.md); the rows of an XA
    transaction prepared before the copy started but committed after it are not in the copy, and are
    ordered by their XA COMMIT, not by where the prepare logged them."""
    dbs.sql("CREATE TABLE x (id INT PRIMARY KEY)")
    assert start_streaming(warp).stop(signal.SIGTERM, 60) == 0  # the checkpoint is before what follows
    dbs.sql("CREATE TABLE y (id INT PRIMARY KEY, v VARCHAR(20))")  # new: copied when the process starts
    dbs.sql("INSERT INTO y VALUES (1, 'base'), (3, 'gone')")
    conn = session(dbs.name)
    cur = conn.cursor()
    cur.execute("XA START 'late'")
    cur.execute("INSERT INTO y VALUES (2, 'late')")
    cur.execute("UPDATE y SET v = 'late' WHERE id = 1")
    cur.execute("DELETE FROM y WHERE id = 3")
    cur.execute("XA END 'late'")
    cur.execute("XA PREPARE 'late'")
    w = start_streaming(warp)  # copies y without the prepared rows, then replays from the checkpoint
    cur.execute("XA COMMIT 'late'")
    conn.close()
    assert_converged(dbs, w)
    assert "already in it" in w.output or "copied from" in w.output, "nothing was skipped: test is moot"
    assert w.stop(signal.SIGTERM, 60) == 0


LATIN1_ODD = bytes([0x81, 0x8D, 0x8F, 0x90, 0x9D])  # undefined in cp1252; MySQL maps them to U+0081...


@pytest.mark.destinations
def test_latin1_bytes_python_cp1252_rejects_replicate_exactly(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    dbs.sql(
        "CREATE TABLE l (id INT PRIMARY KEY, s VARCHAR(40) CHARACTER SET latin1, t TEXT CHARACTER SET latin1)"
    )
    dbs.sql("INSERT INTO l VALUES (1, CONVERT(%s USING latin1), 'snapshot')", (LATIN1_ODD + b"\x80",))
    w = start_streaming(warp)
    for i, byte in enumerate(LATIN1_ODD, start=2):
        dbs.sql(
            "INSERT INTO l VALUES (%s, CONVERT(%s USING latin1), CONVERT(%s USING latin1))",
            (i, bytes([byte]), b"a" + bytes([byte])),
        )
    dbs.sql("UPDATE l SET t = CONVERT(%s USING latin1) WHERE id = 1", (LATIN1_ODD + b"\xe9",))
    assert_converged(dbs, w)
    assert dbs.dest.query("SELECT s FROM {} WHERE id = 2", "l") == [("\x81",)]


@pytest.mark.destinations
def test_an_undecodable_value_stops_naming_table_and_position_and_excluding_the_table_gets_past_it(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE a (id INT PRIMARY KEY, s VARCHAR(20) CHARACTER SET ascii)")
    dbs.sql("CREATE TABLE other (id INT PRIMARY KEY, v INT)")
    dbs.sql("INSERT INTO a VALUES (1, 'fine')")
    w = start_streaming(warp)
    # ascii accepts 0xFF through a binary connection; no codec can read it back
    in_session(dbs.name, "SET NAMES binary", "INSERT INTO a VALUES (2, 0x41FF42)")
    dbs.sql("INSERT INTO other VALUES (1, 1)")
    stopped_with(w, f"table {dbs.name}.a", "cannot be decoded", "column 's'", "warpctl pause")
    assert dbs.dest.query("SELECT id FROM {}", "other") == [], "nothing after the stop is applied"
    config = tmp_path / "c.yaml"
    config.write_text(f"schemas:\n  - name: {dbs.name}\n    table_blacklist: [a]\n")
    w2 = start_streaming(warp, str(config))
    assert_converged(dbs, w2, tables=["other"])


def test_pausing_a_table_with_an_undecodable_row_lets_the_stream_go_on(
    daemon: Daemon, dbs: Databases
) -> None:
    dbs.sql("CREATE TABLE bad (id INT PRIMARY KEY, s VARCHAR(20) CHARACTER SET ascii)")
    dbs.sql("CREATE TABLE good (id INT PRIMARY KEY, v VARCHAR(20))")
    dbs.sql("INSERT INTO good VALUES (1, 'v1')")
    daemon.write_config([dbs.name])
    daemon.start()
    daemon.streaming(dbs.name)
    in_session(dbs.name, "SET NAMES binary", "INSERT INTO bad VALUES (1, 0x41FF42)")
    dbs.sql("UPDATE good SET v = 'after' WHERE id = 1")
    wait_until(lambda: f"table {dbs.name}.bad" in daemon.output, TIMEOUT, "the stop naming the table")
    assert "internal error" not in daemon.output
    paused = daemon.warpctl("pause", f"{dbs.name}.bad")
    assert paused.returncode == 0, paused.stderr
    wait_until(
        lambda: dbs.dest.query("SELECT v FROM {} WHERE id = 1", "good") == [("after",)],
        TIMEOUT,
        "the change after the undecodable row",
    )
    dbs.sql("INSERT INTO good VALUES (2, 'later')")
    wait_converged(dbs, None, TIMEOUT, tables=["good"])


def test_pausing_the_parent_of_emulated_cascades_does_not_skip_its_undecodable_row(
    daemon: Daemon, dbs: Databases
) -> None:
    # The children's emulated ON DELETE actions come from the parent's events: skipping one of them
    # because the parent is paused would leave its children diverging while the checkpoint moves on.
    dbs.sql("CREATE TABLE bad (id INT PRIMARY KEY, s VARCHAR(20) CHARACTER SET ascii)")
    dbs.sql(
        "CREATE TABLE kid (id INT PRIMARY KEY, bad_id INT, "
        "FOREIGN KEY (bad_id) REFERENCES bad (id) ON DELETE CASCADE)"
    )
    dbs.sql("INSERT INTO bad VALUES (1, 'ok')")
    dbs.sql("INSERT INTO kid VALUES (10, 1)")
    daemon.write_config([dbs.name], schema_extra="    foreign_key_cascades: emulate\n")
    daemon.start()
    daemon.streaming(dbs.name)
    in_session(dbs.name, "SET NAMES binary", "INSERT INTO bad VALUES (2, 0x41FF42)")
    stop = f"table {dbs.name}.bad"
    wait_until(lambda: stop in daemon.output, TIMEOUT, "the stop naming the table")
    paused = daemon.warpctl("pause", f"{dbs.name}.bad")
    assert paused.returncode == 0, paused.stderr

    def stopped_while_paused() -> bool:
        # the process logs the pause once it is in force; the same event must stop it after that
        _, seen, after = daemon.output.partition("paused tables (changes skipped until warpctl resume): bad")
        return bool(seen) and any(" ERROR " in line and stop in line for line in after.splitlines())

    wait_until(stopped_while_paused, TIMEOUT, "the same stop with the table paused")
    assert "internal error" not in daemon.output


@pytest.mark.destinations
def test_two_single_mode_processes_with_one_replica_id_stop_instead_of_evicting_each_other(
    dbs: Databases, tmp_path: Any
) -> None:
    # Item 23 in single mode: a config with source.server_id that does not list the schemas gives every
    # `--schema X` process the same id; each connection evicted the other's, forever, with warnings only.
    other = Databases(f"warp_t_{uuid.uuid4().hex[:10]}", dbs.dest.kind)
    procs: list[Warp] = []
    try:
        server_id = 3_000_000_000 + uuid.uuid4().int % 1_000_000  # clear of the other tests' ids
        config = tmp_path / "c.yaml"
        config.write_text(f"source: {{server_id: {server_id}}}\n")
        for d in (dbs, other):
            d.sql("CREATE TABLE t (id INT PRIMARY KEY)")
            state_dir = tmp_path / d.name
            state_dir.mkdir()
            w = Warp(d, str(state_dir), str(config), [], {}).start()
            procs.append(w)
            wait_until(lambda w=w: "streaming changes" in w.output or not w.alive(), TIMEOUT, "streaming")
        first, second = procs
        for i in range(1000):
            if not first.alive():
                break
            dbs.sql("INSERT INTO t VALUES (%s)", (i,))
            other.sql("INSERT INTO t VALUES (%s)", (i,))
            wait_until(lambda n=i + 1: dbs.pg_count("t") == n or not first.alive(), TIMEOUT, "the row")
        assert first.wait(TIMEOUT) == 2, first.output[-3000:]
        assert f"server_id {server_id}" in first.output and "Traceback" not in first.output
        assert second.alive(), second.output[-3000:]
        other.sql("INSERT INTO t VALUES (-1)")
        wait_until(lambda: other.pg_count("t") == other.source_count("t"), TIMEOUT, "the second to go on")
        assert "same server_uuid/server_id" not in second.output, second.output[-3000:]
    finally:
        for w in procs:
            if w.alive():
                w.kill()
        other.drop()


@pytest.mark.destinations
def test_a_temporary_table_shadowing_a_replicated_one_leaves_it_alone(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    # Under statement-based logging TRUNCATE/ALTER of a session's temporary `t` are logged exactly like
    # those of the real `t`: they emptied the destination table and added a column the source never had.
    dbs.sql("CREATE TABLE t (id INT PRIMARY KEY, a INT)")
    dbs.sql("INSERT INTO t VALUES (1, 1), (2, 2)")
    w = start_streaming(warp)
    in_session(
        dbs.name,
        "SET SESSION binlog_format = 'STATEMENT'",
        "CREATE TEMPORARY TABLE t (x INT)",
        "TRUNCATE TABLE t",
        "ALTER TABLE t ADD COLUMN z INT",
        "RENAME TABLE t TO t_tmp",  # MariaDB renames the temporary table; it goes on as t_tmp
        "TRUNCATE TABLE t_tmp",
        "DROP TEMPORARY TABLE t_tmp",
    )
    dbs.sql("INSERT INTO t VALUES (3, 3)")
    assert_converged(dbs, w)
    assert dbs.dest.query("SELECT * FROM {} ORDER BY id", "t") == [(1, 1), (2, 2), (3, 3)]
