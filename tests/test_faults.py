"""Faults an operator will meet: kill -9, database restarts, a purged binlog, a broken set-up.

Every test runs the real ``cartridge-warp`` process against the real local
MariaDB and a destination, and asserts what a user notices: the rows at the
destination (``converged``), exit codes, messages and the state file.  Tests
marked ``destinations`` run once per destination kind (PostgreSQL, and MariaDB
itself: tests/destinations.py); the checks of the source's set-up (binlog
settings, grants, passwords) run once, since no destination is reached.  Tests
that stop or reconfigure a database server restore it in ``finally`` and wait
until it answers again, so later tests are unaffected.
"""

from __future__ import annotations

import functools
import os
import random
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg2
import pymysql
import pytest
from conftest import (
    PG_DSN,
    Databases,
    Warp,
    mysql_root,
    wait_converged,
    wait_stopped,
    wait_until,
    write_config,
)
from servers import MariaDBServer, PostgresCluster

from warpd.connectors.keycodec import decode_key
from warpd.state.store import StateStore

# restarts and reconfigures the database servers, purges binlogs: alone, after the parallel phase of make test
pytestmark = pytest.mark.exclusive

STREAMING = "streaming changes from"
CONVERGE_TIMEOUT = 180.0
# Quick retries so outages of a few seconds are ridden out without long waits; generous attempts.
FAST_RETRY = "retry: {initial_delay_seconds: 0.2, max_delay_seconds: 2, max_attempts: 100}\n"


# -- helpers -------------------------------------------------------------------
def state_of(w: Warp) -> StateStore:
    return StateStore(os.path.dirname(w.log_path))


def start_streaming(warp: Callable[..., Warp], config: str | None = None) -> Warp:
    w = warp(config)
    wait_until(lambda: STREAMING in w.output or not w.alive(), 150, "the snapshot to finish")
    assert w.alive(), f"cartridge-warp exited early with {w.proc.poll()}:\n{w.output}"
    return w


def assert_converged(dbs: Databases, w: Warp | None, timeout: float = CONVERGE_TIMEOUT) -> None:
    """Wait until the checkpoint covers every change made so far, then until every source table equals
    its destination copy (and the process stays up).  Waiting for the checkpoint first matters: a
    replay may pass through states where the tables match but the stream is not done (a replayed
    CREATE TABLE of a table renamed later)."""
    if w is not None:
        file, pos = dbs.sql("SHOW MASTER STATUS")[0][:2]
        end = (int(str(file).rsplit(".", 1)[-1]), int(pos))
        store = state_of(w)

        def applied() -> bool:
            assert w.alive(), (
                f"cartridge-warp exited with {w.proc.poll() if w.proc else None}:\n{w.output[-6000:]}"
            )
            checkpoint = store.checkpoint(dbs.name)
            if checkpoint is None:
                return False
            return (int(str(checkpoint["file"]).rsplit(".", 1)[-1]), int(checkpoint["pos"])) >= end

        try:
            wait_until(applied, timeout, f"the checkpoint to reach {end}", interval=0.3)
        finally:
            store.close()
    wait_converged(dbs, w, timeout)


def stop_cleanly(w: Warp) -> str:
    rc = w.stop(signal.SIGTERM, timeout=60)
    out = w.output
    assert rc == 0, f"exit code {rc}:\n{out[-4000:]}"
    assert "Traceback" not in out, out
    return out


def assert_no_dead_letters(w: Warp, dbs: Databases) -> None:
    assert state_of(w).dead_letters(dbs.name) == [], "rows went to the dead-letter table"


def wait_for_exit(w: Warp, timeout: float = 90) -> tuple[int, str]:
    rc = w.wait(timeout)
    return rc, w.output


def assert_startup_failure(w: Warp, *needles: str, secret: str | None = None) -> str:
    """The process exits 1 with a message containing ``needles``, and no traceback."""
    rc, out = wait_for_exit(w)
    assert rc == 1, f"exit code {rc}:\n{out}"
    assert "Traceback" not in out and 'File "' not in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in the output:\n{out}"
    if secret is not None:
        assert secret not in out, out
    return out


# -- the databases ---------------------------------------------------------------
# Found by port and pid file (tests/servers.py), never by process name: another MariaDB or
# PostgreSQL on the machine must not be mistaken for the one under test.
@functools.cache
def mariadb_server() -> MariaDBServer:
    return MariaDBServer.discover()


@functools.cache
def postgres_cluster() -> PostgresCluster:
    return PostgresCluster.discover()


def ensure_mariadb() -> None:
    mariadb_server().start()


def restart_mariadb() -> None:
    mariadb_server().restart()


def postmaster_started() -> Any:
    conn = psycopg2.connect(PG_DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_postmaster_start_time()")
            return cur.fetchone()[0]
    finally:
        conn.close()


def restart_postgres() -> None:
    postgres_cluster().restart()


def ensure_postgres() -> None:
    postgres_cluster().ensure()


def reconnect(dbs: Databases) -> None:
    """Give the test's own connections a fresh start after a server restart."""
    try:
        dbs._my.close()
    except Exception:  # noqa: BLE001 - it is broken, that is the point
        pass
    dbs._my = mysql_root(dbs.name)
    try:
        dbs.pg.close()
    except Exception:  # noqa: BLE001
        pass
    dbs.pg = psycopg2.connect(PG_DSN)
    dbs.pg.autocommit = True
    try:
        dbs.dest.close()
    except Exception:  # noqa: BLE001
        pass
    dbs.dest = type(dbs.dest)(dbs.dest.schema)


# -- a source writer ---------------------------------------------------------------
class Writer(threading.Thread):
    """Keeps changing ``items`` at the source: inserts, updates, deletes and primary-key changes.

    Runs its own connection and rides out source outages (reconnects and
    carries on), so the only question left is whether the destination ends up
    equal to whatever the source holds.
    """

    def __init__(self, dbs: Databases, first_id: int, seed: int = 7):
        super().__init__(name="source-writer", daemon=True)
        self.dbs = dbs
        self.next_id = first_id
        self.rnd = random.Random(seed)
        self.halt = threading.Event()
        self.committed = 0
        self.failures = 0

    def _one(self, cur: Any) -> None:
        r = self.rnd.random()
        some = self.rnd.randrange(1, self.next_id)
        if r < 0.35:
            self.next_id += 1
            cur.execute(
                "INSERT INTO items (id, qty, note) VALUES (%s, %s, %s)",
                (self.next_id, self.rnd.randrange(1000), f"new {self.next_id}"),
            )
        elif r < 0.65:
            cur.execute(
                "UPDATE items SET qty = qty + 1, note = %s WHERE id = %s", (f"upd {time.time()}", some)
            )
        elif r < 0.8:
            cur.execute("DELETE FROM items WHERE id = %s", (some,))
        elif r < 0.92:
            self.next_id += 1
            cur.execute("UPDATE items SET id = %s WHERE id = %s", (self.next_id, some))
        else:
            cur.execute("UPDATE items SET qty = qty * 2 WHERE id BETWEEN %s AND %s", (some, some + 20))

    def run(self) -> None:
        conn = None
        while not self.halt.is_set():
            try:
                if conn is None:
                    conn = mysql_root(self.dbs.name)
                with conn.cursor() as cur:
                    if self.rnd.random() < 0.3:  # a multi-statement transaction
                        conn.begin()
                        for _ in range(self.rnd.randrange(2, 6)):
                            self._one(cur)
                        conn.commit()
                    else:
                        self._one(cur)
                self.committed += 1
            except (pymysql.err.MySQLError, OSError):
                self.failures += 1
                try:
                    if conn is not None:
                        conn.close()
                except Exception:  # noqa: BLE001 - broken connection
                    pass
                conn = None
                time.sleep(0.2)
            time.sleep(0.003)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        assert not self.is_alive()


def make_items(dbs: Databases, rows: int = 2000) -> None:
    dbs.sql("CREATE TABLE items (id INT PRIMARY KEY, qty INT NOT NULL, note VARCHAR(60))")
    dbs.sql(f"INSERT INTO items SELECT seq, seq % 100, CONCAT('item ', seq) FROM seq_1_to_{int(rows)}")


# -- 1. kill -9 during the snapshot ------------------------------------------------------
def kill_mid_copy(w: Warp, dbs: Databases, table: str, after_rows: int = 5_000) -> Any:
    """kill -9 ``w`` once ``after_rows`` rows of ``table``'s copy are committed; its progress then."""
    stores: list[StateStore] = []

    def some_chunks_done() -> Any:
        assert w.alive(), w.output
        if not stores:
            if not os.path.exists(os.path.join(os.path.dirname(w.log_path), "state.db")):
                return None
            stores.append(state_of(w))
        prog = stores[0].snapshot_progress(dbs.name).get(table)
        return prog if prog and prog.rows_copied >= after_rows else None

    wait_until(some_chunks_done, 120, "some snapshot chunks to be committed", interval=0.01)
    w.proc.send_signal(signal.SIGSTOP)  # freeze it at this point, then kill -9 it there
    try:
        # the signal is delivered asynchronously: read the state only once every thread has stopped,
        # or a chunk committed in between makes the state read here differ from the state on disk
        wait_stopped(w.proc.pid)
        at_kill = state_of(w).snapshot_progress(dbs.name)[table]
    finally:
        w.kill()
    assert at_kill.status == "running", f"the snapshot finished before the kill: {at_kill}"
    return at_kill


@pytest.mark.destinations(bigquery=True)
def test_kill_during_snapshot_resumes_at_last_committed_chunk(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    total = 100_000
    dbs.sql("CREATE TABLE narrow (id INT PRIMARY KEY, v INT)")
    dbs.sql(f"INSERT INTO narrow SELECT seq, seq % 997 FROM seq_1_to_{total}")
    # BigQuery: one merge job per chunk, so chunks of 5,000 (20 of them) rather than 200 merges
    chunk = 5000 if dbs.dest.kind == "bigquery" else 500
    config = write_config(tmp_path, f"snapshot_chunk_size: {chunk}\n")
    w = warp(config)
    at_kill = kill_mid_copy(w, dbs, "narrow")
    assert 0 < at_kill.rows_copied < total
    assert at_kill.resume_after is not None
    copied_before = at_kill.rows_copied
    # the resume point, as a source key: the last id copied
    (resume_id,) = decode_key(at_kill.resume_after)
    assert copied_before <= resume_id < total

    # changes while it is down: in the copied range, in the range still to copy, and new rows
    dbs.sql("UPDATE narrow SET v = -1 WHERE id <= 100")
    dbs.sql("DELETE FROM narrow WHERE id BETWEEN 200 AND 250")
    dbs.sql("UPDATE narrow SET v = -2 WHERE id > 99000")
    dbs.sql("DELETE FROM narrow WHERE id BETWEEN 98000 AND 98010")
    dbs.sql("INSERT INTO narrow SELECT seq, -3 FROM seq_100001_to_100500")

    after_kill = state_of(w).snapshot_progress(dbs.name)["narrow"]
    assert after_kill.rows_copied == copied_before
    still_to_copy = dbs.sql("SELECT COUNT(*) FROM narrow WHERE id > %s", (resume_id,))[0][0]

    w2 = start_streaming(warp, config)
    out = w2.output
    done = re.search(rf"snapshot {dbs.name}\.narrow: done, ([\d,]+) rows \(([\d,]+) in", out)
    assert done, out
    rows_total, copied_now = (int(g.replace(",", "")) for g in done.groups())
    # it resumed: this run copied only what was left, not the table from the start
    assert copied_now < dbs.source_count("narrow"), out
    assert rows_total == copied_before + copied_now
    assert copied_now == still_to_copy, (copied_now, still_to_copy)
    progress_lines = re.findall(rf"snapshot {dbs.name}\.narrow: ([\d,]+)/", out)
    assert all(int(n.replace(",", "")) > copied_before for n in progress_lines), progress_lines
    final = state_of(w2).snapshot_progress(dbs.name)["narrow"]
    assert final.status == "done" and final.rows_copied == rows_total

    # changes after the snapshot still stream
    dbs.sql("UPDATE narrow SET v = 7 WHERE id % 1000 = 0")
    dbs.sql("DELETE FROM narrow WHERE id BETWEEN 5000 AND 5100")
    assert_converged(dbs, w2)
    assert_no_dead_letters(w2, dbs)
    stop_cleanly(w2)


# -- 2. kill -9 while streaming ----------------------------------------------------------
@pytest.mark.destinations(bigquery=True)
def test_kill_during_streaming_loses_and_duplicates_nothing(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    make_items(dbs)
    config = write_config(tmp_path, "batch_size: 50\nmax_batch_latency_ms: 50\n")
    w = start_streaming(warp, config)
    writer = Writer(dbs, first_id=2000)
    writer.start()
    try:
        wait_until(lambda: writer.committed >= 300, 60, "the writer to make changes")
        before = state_of(w).checkpoint(dbs.name)
        wait_until(lambda: state_of(w).checkpoint(dbs.name) != before, 60, "a checkpoint while streaming")
        w.kill()
        mark = writer.committed
        wait_until(lambda: writer.committed >= mark + 200, 60, "changes while cartridge-warp is down")
        w2 = warp(config)
        wait_until(lambda: STREAMING in w2.output or not w2.alive(), 60, "the restart to stream")
        mark = writer.committed
        wait_until(lambda: writer.committed >= mark + 300, 60, "changes after the restart")
    finally:
        writer.stop()
    assert not re.search(r"snapshot \S+: done", w2.output), "the restart copied the table again"
    assert_converged(dbs, w2)
    assert dbs.pg_count("items") == dbs.source_count("items")
    assert_no_dead_letters(w2, dbs)
    stop_cleanly(w2)


# -- 2b. kill -9 again and again while the schema changes ---------------------------------
@pytest.mark.destinations(bigquery=True)
def test_kill_during_schema_changes_replays_them_exactly(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """Killed at random points while DDL and DML stream (MySQL's DDL is not transactional: a change
    applied before the kill is replayed after it), the destination ends up equal to the source."""
    make_items(dbs, 500)
    config = write_config(tmp_path, "batch_size: 20\nmax_batch_latency_ms: 20\n")
    steps = [
        "ALTER TABLE items ADD COLUMN extra VARCHAR(20) NULL",
        "UPDATE items SET extra = CONCAT('x', id) WHERE id % 3 = 0",
        "ALTER TABLE items MODIFY COLUMN qty BIGINT NOT NULL",
        "UPDATE items SET qty = qty + 5000000000 WHERE id % 7 = 0",
        "ALTER TABLE items ADD COLUMN flag INT NOT NULL DEFAULT 7",  # fills rows without row events
        "ALTER TABLE items CHANGE COLUMN note memo VARCHAR(80)",
        "CREATE TABLE side (id INT PRIMARY KEY, v TEXT)",
        "INSERT INTO side SELECT seq, CONCAT('s', seq) FROM seq_1_to_300",
        "RENAME TABLE side TO side2",
        "ALTER TABLE items DROP COLUMN extra",
        "UPDATE side2 SET v = 'changed' WHERE id < 50",
        "CREATE TABLE doomed (id INT PRIMARY KEY)",
        "INSERT INTO doomed VALUES (1), (2)",
        "DROP TABLE doomed",
        "ALTER TABLE side2 ADD COLUMN w INT NULL",
        "UPDATE side2 SET w = id * 2 WHERE id > 250",
    ]
    rng = random.Random(23)
    ids = iter(range(10_000, 20_000))
    w = start_streaming(warp, config)
    kills = 0
    for n, step in enumerate(steps):
        dbs.sql(step)
        for _ in range(5):  # DML with the columns every step keeps
            dbs.sql("INSERT INTO items (id, qty) VALUES (%s, %s)", (next(ids), n))
            dbs.sql("UPDATE items SET qty = qty + 1 WHERE id = %s", (rng.randrange(1, 500),))
            dbs.sql("DELETE FROM items WHERE id = %s", (rng.randrange(1, 500),))
        if n % 2:
            time.sleep(rng.uniform(0.05, 0.8))  # anywhere: mid-batch, mid-DDL, mid-copy, starting up
            assert w.alive(), w.output[-4000:]
            w.kill()
            kills += 1
            w = warp(config)
    assert kills == len(steps) // 2
    assert_converged(dbs, w)
    assert dbs.dest.tables() == ["items", "side2"]
    assert dbs.dest.columns("items") == ["id", "qty", "memo", "flag"]
    assert dbs.dest.columns("side2") == ["id", "v", "w"]
    assert dbs.dest.count("items") == dbs.source_count("items")
    assert_no_dead_letters(w, dbs)
    stop_cleanly(w)


@pytest.mark.destinations
def test_a_copy_killed_then_reshaped_at_the_source_starts_over_in_the_new_shape(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """Killed mid-copy; a column is dropped at the source before the restart. The copy does not resume
    into the old shape's table: it starts over in the new shape, once. (Resuming, the dropped column
    stayed; here the replayed DROP COLUMN then asked for a second full copy, but after a re-copy that
    the replay skips it stayed for good: test_kill_during_schema_changes_replays_them_exactly.)"""
    total = 300_000
    dbs.sql("CREATE TABLE reshaped (id INT PRIMARY KEY, keep INT, gone VARCHAR(20))")
    dbs.sql(f"INSERT INTO reshaped SELECT seq, seq % 997, CONCAT('g', seq) FROM seq_1_to_{total}")
    config = write_config(tmp_path, "snapshot_chunk_size: 500\n")
    w = warp(config)
    kill_mid_copy(w, dbs, "reshaped")
    dbs.sql("ALTER TABLE reshaped DROP COLUMN gone")
    dbs.sql("UPDATE reshaped SET keep = -1 WHERE id <= 10")
    w = start_streaming(warp, config)
    assert_converged(dbs, w)
    assert dbs.dest.columns("reshaped") == ["id", "keep"]
    assert dbs.dest.count("reshaped") == total
    assert "copying it again from the start" in w.output, w.output[-4000:]
    assert_no_dead_letters(w, dbs)
    stop_cleanly(w)


def recopies(w: Warp, table: str) -> int:
    """How many times the stream had ``table`` copied again (a resync), from the process's log."""
    return w.output.count(f"resync_table on {table!r}")


@pytest.mark.destinations
def test_restart_before_ddl_copies_the_table_once_not_per_replayed_event(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """The stream resumes before several ALTER TABLEs. The first one makes the table be copied again;
    the replayed row events and DDL from before that copy are in it already: they neither make it be
    copied once more each (an old shape's column is unknown to the copy), nor take rows back."""
    make_items(dbs, 500)
    config = write_config(tmp_path, "batch_size: 20\nmax_batch_latency_ms: 20\n")
    stop_cleanly(start_streaming(warp, config))  # the checkpoint is before everything below
    dbs.sql("ALTER TABLE items ADD COLUMN flag INT NOT NULL DEFAULT 7")  # no row events: copied again
    dbs.sql("ALTER TABLE items ADD COLUMN extra VARCHAR(20) NULL")
    for i in range(1, 31):  # row events of a shape the copy will not have (extra is dropped below)
        dbs.sql("UPDATE items SET extra = %s, qty = qty + 1000 WHERE id = %s", (f"x{i}", i))
    dbs.sql("ALTER TABLE items MODIFY COLUMN qty BIGINT NOT NULL")
    dbs.sql("DELETE FROM items WHERE id BETWEEN 40 AND 45")
    dbs.sql("INSERT INTO items (id, qty, note) VALUES (600, 5000000000, 'new')")
    dbs.sql("ALTER TABLE items DROP COLUMN extra")
    dbs.sql("UPDATE items SET note = 'last before restart' WHERE id = 50")
    w = start_streaming(warp, config)
    dbs.sql("UPDATE items SET qty = qty + 1, note = 'after' WHERE id IN (1, 2, 600)")  # after the copy
    dbs.sql("DELETE FROM items WHERE id = 3")
    assert_converged(dbs, w)
    assert recopies(w, "items") == 1, w.output[-4000:]  # main: once per replayed event, ~30 times
    assert dbs.dest.columns("items") == ["id", "qty", "note", "flag"]
    assert dbs.dest.count("items") == dbs.source_count("items")
    assert "already in it" in w.output  # the skipped replay is reported
    assert_no_dead_letters(w, dbs)
    stop_cleanly(w)


# -- 3. the destination's restart --------------------------------------------------------
@pytest.mark.destinations
def test_destination_restart_is_ridden_out(dbs: Databases, warp: Callable[..., Warp], tmp_path: Any) -> None:
    """The destination's server restarts while changes stream: PostgreSQL, or the MariaDB server that
    holds the destination database (and, MariaDB -> MariaDB, the source too)."""
    make_items(dbs)
    w = start_streaming(warp, write_config(tmp_path, FAST_RETRY))
    pid = w.proc.pid
    mysql = dbs.dest.kind == "mysql"
    started = mariadb_server().pid() if mysql else postmaster_started()
    writer = Writer(dbs, first_id=2000, seed=11)
    writer.start()
    try:
        wait_until(lambda: writer.committed >= 200, 60, "the writer to make changes")
        failures = writer.failures
        if mysql:
            restart_mariadb()
            assert mariadb_server().pid() != started, "MariaDB did not restart"
        else:
            restart_postgres()
            assert postmaster_started() != started, "PostgreSQL did not restart"
        mark = writer.committed
        wait_until(lambda: writer.committed >= mark + 300, 90, "changes after the restart")
        if mysql:
            assert writer.failures > failures, "the writer never saw the outage"
    finally:
        writer.stop()
        ensure_mariadb()
        ensure_postgres()
        reconnect(dbs)
    assert w.alive() and w.proc.pid == pid, w.output
    assert_converged(dbs, w)
    assert w.alive() and w.proc.pid == pid
    assert_no_dead_letters(w, dbs)
    stop_cleanly(w)


# -- 4. MariaDB (the source) restart ---------------------------------------------------------
# Into PostgreSQL: with a MariaDB destination the source's server is the destination's, and
# test_destination_restart_is_ridden_out[mysql] restarts it.
def test_mariadb_restart_is_ridden_out(dbs: Databases, warp: Callable[..., Warp], tmp_path: Any) -> None:
    make_items(dbs)
    w = start_streaming(warp, write_config(tmp_path, FAST_RETRY))
    pid = w.proc.pid
    writer = Writer(dbs, first_id=2000, seed=13)
    writer.start()
    try:
        wait_until(lambda: writer.committed >= 200, 60, "the writer to make changes")
        failures = writer.failures
        restart_mariadb()
        mark = writer.committed
        wait_until(lambda: writer.committed >= mark + 300, 90, "changes after the restart")
        assert writer.failures > failures, "the writer never saw the outage"
    finally:
        writer.stop()
        ensure_mariadb()
        reconnect(dbs)
    assert w.alive() and w.proc.pid == pid, w.output
    assert_converged(dbs, w)
    assert w.alive() and w.proc.pid == pid
    assert_no_dead_letters(w, dbs)
    stop_cleanly(w)


# -- 5. position lost --------------------------------------------------------------------
@pytest.mark.destinations
def test_lost_position_stops_with_advice_then_resnapshots_when_asked(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    make_items(dbs, 500)
    w = start_streaming(warp)
    dbs.sql("UPDATE items SET qty = 0 WHERE id <= 10")
    assert_converged(dbs, w)
    stop_cleanly(w)
    checkpoint = state_of(w).checkpoint(dbs.name)
    assert checkpoint is not None

    # changes made while it is down, then the binlog holding them is purged
    dbs.sql("INSERT INTO items SELECT seq, 1, 'while down' FROM seq_501_to_700")
    dbs.sql("DELETE FROM items WHERE id BETWEEN 20 AND 40")
    dbs.sql("UPDATE items SET note = 'changed while down' WHERE id BETWEEN 100 AND 150")

    def purged() -> bool:
        dbs.sql("FLUSH BINARY LOGS")
        newest = dbs.sql("SHOW BINARY LOGS")[-1][0]
        dbs.sql(f"PURGE BINARY LOGS TO '{newest}'")
        return checkpoint["file"] not in [r[0] for r in dbs.sql("SHOW BINARY LOGS")]

    wait_until(purged, 60, f"binlog {checkpoint['file']} to be purged", interval=1)

    w2 = warp()
    out = assert_startup_failure(w2, "on_position_lost: resnapshot", checkpoint["file"])
    assert "gone" in out or "purged" in out, out
    assert state_of(w2).checkpoint(dbs.name) == checkpoint, "the checkpoint was reset silently"

    w3 = warp(write_config(tmp_path, "on_position_lost: resnapshot\n"))
    wait_until(lambda: STREAMING in w3.output or not w3.alive(), 150, "the re-copy to finish")
    assert w3.alive(), w3.output
    assert re.search(rf"snapshot {dbs.name}\.items: done", w3.output), w3.output
    dbs.sql("UPDATE items SET qty = 99 WHERE id BETWEEN 600 AND 610")
    assert_converged(dbs, w3)
    assert state_of(w3).checkpoint(dbs.name)["file"] != checkpoint["file"]
    stop_cleanly(w3)


# -- 6. start-up prerequisites -----------------------------------------------------------
@pytest.mark.parametrize(
    "variable, bad, good", [("binlog_format", "MIXED", "ROW"), ("binlog_row_metadata", "MINIMAL", "FULL")]
)
def test_binlog_settings_are_checked_at_startup(
    dbs: Databases, warp: Callable[..., Warp], variable: str, bad: str, good: str
) -> None:
    make_items(dbs, 10)
    (old,) = dbs.sql(f"SELECT @@GLOBAL.{variable}")[0]
    assert old.upper() == good
    dbs.sql(f"SET GLOBAL {variable} = '{bad}'")
    try:
        w = warp()
        out = assert_startup_failure(w, variable, bad, f"SET GLOBAL {variable} = '{good}'")
    finally:
        dbs.sql(f"SET GLOBAL {variable} = '{good}'")
        wait_until(lambda: dbs.sql(f"SELECT @@GLOBAL.{variable}")[0][0].upper() == good, 10, "restore")
    assert "[mysqld]" in out  # how to make it permanent


def test_binlog_off_is_reported_with_the_settings_to_add(dbs: Databases, warp: Callable[..., Warp]) -> None:
    make_items(dbs, 10)
    server = mariadb_server()
    server.stop()
    try:
        server.start("--skip-log-bin")
        reconnect(dbs)
        assert dbs.sql("SELECT @@log_bin")[0][0] == 0
        w = warp()
        out = assert_startup_failure(
            w, "binary log is off", "log_bin", "binlog_format = ROW", "binlog_row_metadata = FULL", "restart"
        )
        assert ":warp@" not in out
    finally:
        restart_mariadb()  # back with the configured binlog
        reconnect(dbs)
    assert dbs.sql("SELECT @@log_bin")[0][0] == 1


def test_user_without_replication_privilege_is_told_the_grant(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    make_items(dbs, 10)
    user = f"warp_norepl_{uuid.uuid4().hex[:6]}"
    dbs.sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'norepl-pw'")
    try:
        dbs.sql(f"GRANT SELECT ON `{dbs.name}`.* TO '{user}'@'%'")
        source = f"mysql://{user}:norepl-pw@127.0.0.1:3306/{dbs.name}"
        w = warp(extra=["--source", source])
        out = assert_startup_failure(w, "REPLICATION SLAVE", secret="norepl-pw")
        assert "GRANT" in out or "grant" in out, out
    finally:
        dbs.sql(f"DROP USER IF EXISTS '{user}'@'%'")


def test_wrong_password_is_reported_without_the_password(dbs: Databases, warp: Callable[..., Warp]) -> None:
    make_items(dbs, 10)
    secret = "Wr0ngPassw0rd-q7"
    w = warp(extra=["--source", f"mysql://warp:{secret}@127.0.0.1:3306/{dbs.name}"])
    out = assert_startup_failure(w, "access denied", secret=secret)
    assert "password" in out.lower()


@pytest.mark.destinations
@pytest.mark.parametrize("with_tables", [True, False], ids=["tables", "empty-database"])
def test_unreachable_destination_fails_at_startup(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any, with_tables: bool
) -> None:
    if with_tables:
        make_items(dbs, 10)
    config = write_config(
        tmp_path, "retry: {max_attempts: 3, initial_delay_seconds: 0.1, max_delay_seconds: 0.5}\n"
    )
    if dbs.dest.kind == "mysql":
        uri, name = "mysql://warp:SecretDst-55@127.0.0.1:1/", "MySQL destination"
    else:
        uri, name = "postgresql://warp:SecretDst-55@127.0.0.1:1/warp_test", "PostgreSQL destination"
    w = warp(config, extra=["--destination", uri])
    out = assert_startup_failure(w, name, "127.0.0.1", secret="SecretDst-55")
    assert "port 1" in out or ":1/" in out, out


# -- 7. the destination's sessions killed mid-stream -------------------------------------------
@pytest.mark.destinations
@pytest.mark.parametrize("attempts", [100, 1], ids=["retried", "failing-in-flight"])
def test_terminated_destination_connections_are_retried_without_loss(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any, attempts: int
) -> None:
    """Retried: each write rides out its killed session.  Failing in flight: with one attempt per
    table write, every killed session fails the batch being applied (while the stream reads on); the
    batch goes back to the pending changes and the reopened stream applies it, losing nothing."""
    make_items(dbs)
    config = write_config(
        tmp_path,
        FAST_RETRY
        + f"""batch_size: 20
max_batch_latency_ms: 20
schemas:
  - name: {dbs.name}
    tables:
      - name: items
        retry: {{max_attempts: {attempts}}}
""",
    )
    w = start_streaming(warp, config)
    pid = w.proc.pid
    writer = Writer(dbs, first_id=2000, seed=17 if attempts > 1 else 23)
    writer.start()
    terminated = 0
    try:
        wait_until(lambda: writer.committed >= 100, 60, "the writer to make changes")
        for _ in range(6):
            # only this test's process (found by its sockets): other processes share the server, and
            # MariaDB -> MariaDB, the source's binlog connection is left alone
            terminated += dbs.dest.kill_sessions(pid)
            time.sleep(0.7)
        mark = writer.committed
        wait_until(lambda: writer.committed >= mark + 200, 60, "changes after the terminations")
    finally:
        writer.stop()
    assert terminated > 0, "no cartridge-warp connection was found to terminate"
    assert_converged(dbs, w)
    if attempts == 1:
        assert "interrupted" in w.output  # the failures reached the stream, which reopened
    assert w.alive() and w.proc.pid == pid
    assert_no_dead_letters(w, dbs)
    stop_cleanly(w)
