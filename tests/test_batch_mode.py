"""mode: batch against the real MariaDB and destinations: incremental and full-refresh runs, the safety lag,
kills in the middle of a run, the atomic swap, the schedule across restarts, schema changes between runs,
key-scan delete detection, and refusals (docs/batch-mode.md)."""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg2
import pytest
from conftest import PG_DSN, converged, wait_converged, wait_until, write_config
from psycopg2 import sql

from warpd.errors import FatalError
from warpd.state.store import StateStore


def batch_config(tmp_path, name: str, tables: str, every: str = "1s", extra: str = "") -> str:
    return write_config(
        tmp_path,
        f"schemas:\n  - name: {name}\n    mode: batch\n    schedule: {{every: {every}}}\n{extra}"
        f"    tables:\n{tables}",
    )


def make_items(dbs, n: int, table: str = "items") -> None:
    dbs.sql(
        f"CREATE TABLE `{table}` (id INT PRIMARY KEY, v VARCHAR(40) NOT NULL, "
        "updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))"
    )
    if n:
        dbs.many(f"INSERT INTO `{table}` (id, v) VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, n + 1)])


def batch_state(state_dir: str, schema: str):
    if not os.path.exists(os.path.join(state_dir, "state.db")):
        return {}, None
    try:
        store = StateStore(state_dir, read_only=True)
    except FatalError:  # the process is still creating it (its migrations not all applied)
        return {}, None
    try:
        return store.batch_tables(schema), store.batch_schedule(schema)
    finally:
        store.close()


def runs_finished(state_dir: str, schema: str, table: str) -> float | None:
    tables, _ = batch_state(state_dir, schema)
    state = tables.get(table)
    return state.run_finished if state is not None and state.run_status == "ok" else None


@pytest.mark.destinations
def test_incremental_and_full_refresh_tables_converge_and_follow_changes(dbs, warp, tmp_path):
    make_items(dbs, 500)
    dbs.sql("CREATE TABLE ref (code VARCHAR(10) PRIMARY KEY, label VARCHAR(40))")
    dbs.many("INSERT INTO ref VALUES (%s, %s)", [(f"c{i}", f"label {i}") for i in range(50)])
    config = batch_config(
        tmp_path,
        dbs.name,
        "      - name: items\n        cursor_column: updated_at\n        safety_lag: 1s\n"
        "      - name: ref\n        sync: full_refresh\n",
    )
    w = warp(config)
    wait_converged(dbs, w, 60)

    dbs.sql("UPDATE items SET v = 'changed' WHERE id <= 10")
    dbs.sql("INSERT INTO items (id, v) VALUES (1001, 'new')")
    dbs.sql("DELETE FROM ref WHERE code IN ('c1', 'c2')")
    dbs.sql("UPDATE ref SET label = 'relabelled' WHERE code = 'c3'")
    dbs.sql("INSERT INTO ref VALUES ('c99', 'added')")
    wait_converged(dbs, w, 60, tables=["ref"])
    wait_until(lambda: dbs.pg_count("items") == 501, 60, "the new item")
    rows = dict(dbs.dest.query("SELECT id, v FROM {} WHERE id <= 10 OR id = 1001", "items"))
    assert rows == {**{i: "changed" for i in range(1, 11)}, 1001: "new"}

    # without a change log an incremental table does not see deletes (docs/batch-mode.md)
    dbs.sql("DELETE FROM items WHERE id = 500")
    dbs.sql("UPDATE items SET v = 'after the delete' WHERE id = 499")
    wait_until(
        lambda: dbs.dest.query("SELECT v FROM {} WHERE id = 499", "items") == [("after the delete",)],
        60,
        "the update after the delete",
    )
    assert dbs.dest.query("SELECT v FROM {} WHERE id = 500", "items") == [("v500",)]
    assert w.stop() == 0
    assert not [t for t in dbs.dest.tables() if t.startswith("_warp_")], "no table beside is left behind"


def test_a_late_commit_within_the_safety_lag_is_picked_up_and_one_older_is_not(dbs, warp, tmp_path):
    make_items(dbs, 0)
    dbs.sql("INSERT INTO items (id, v, updated_at) VALUES (1, 'first', '2026-01-01 12:00:00')")
    config = batch_config(
        tmp_path, dbs.name, "      - name: items\n        cursor_column: updated_at\n        safety_lag: 1h\n"
    )
    w = warp(config)
    wait_until(lambda: dbs.pg_count("items") == 1, 60, "the first run")
    state_dir = os.path.join(str(tmp_path), "state")
    # the mark is stored after the destination committed the rows: wait for it, not only for the rows
    wait_until(lambda: runs_finished(state_dir, dbs.name, "items"), 60, "the first run's mark")
    tables, _ = batch_state(state_dir, dbs.name)
    assert tables["items"].mark["cursor"] == {"$dt": "2026-01-01T12:00:00"}

    # a transaction that took its cursor value before the last run but committed after it
    dbs.sql("INSERT INTO items (id, v, updated_at) VALUES (2, 'late', '2026-01-01 11:30:00')")
    # older than the mark by more than the lag: the documented limit of safety_lag
    dbs.sql("INSERT INTO items (id, v, updated_at) VALUES (3, 'too late', '2026-01-01 10:30:00')")
    wait_until(lambda: dbs.pg_count("items") == 2, 60, "the late row")
    time.sleep(2.5)  # two more runs
    assert sorted(dbs.dest.query("SELECT id, v FROM {}", "items")) == [(1, "first"), (2, "late")]
    assert w.stop() == 0


def test_rows_with_the_cursor_value_of_the_mark_are_read_again(dbs, warp, tmp_path):
    dbs.sql("CREATE TABLE events (id INT PRIMARY KEY, version BIGINT NOT NULL, v TEXT)")
    dbs.sql("INSERT INTO events VALUES (1, 5, 'a')")
    config = batch_config(
        tmp_path, dbs.name, "      - name: events\n        cursor_column: version\n        safety_lag: 0\n"
    )
    w = warp(config)
    wait_until(lambda: dbs.pg_count("events") == 1, 60, "the first run")
    dbs.sql("INSERT INTO events VALUES (2, 5, 'same version as the mark')")
    dbs.sql("INSERT INTO events VALUES (0, 4, 'older: not read with safety_lag 0')")
    wait_until(lambda: dbs.pg_count("events") == 2, 60, "the row at the mark")
    time.sleep(2)
    assert sorted(dbs.dest.query("SELECT id FROM {}", "events")) == [(1,), (2,)]
    assert w.stop() == 0


@pytest.mark.destinations
@pytest.mark.parametrize("sync", ["incremental", "full_refresh"])
def test_a_kill_during_a_run_resumes_without_loss_or_duplicates(dbs, warp, tmp_path, sync):
    rows = 40_000
    dbs.sql("CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(64) NOT NULL)")
    for start in range(1, rows + 1, 10_000):
        dbs.many("INSERT INTO big VALUES (%s, %s)", [(i, f"value {i}") for i in range(start, start + 10_000)])
    table = "      - name: big\n" + (
        "        cursor_column: id\n        safety_lag: 0\n"
        if sync == "incremental"
        else "        sync: full_refresh\n"
    )
    config = batch_config(tmp_path, dbs.name, table, every="1h", extra="    snapshot_chunk_size: 500\n")
    state_dir = os.path.join(str(tmp_path), "state")
    w = warp(config)

    def partway() -> bool:
        tables, _ = (
            batch_state(state_dir, dbs.name) if os.path.exists(f"{state_dir}/state.db") else ({}, None)
        )
        state = tables.get("big")
        if sync == "incremental":
            return state is not None and 2000 <= state.rows_moved < rows
        beside = [t for t in dbs.dest.tables() if t.startswith("_warp_new_")]
        return bool(beside) and (dbs.dest.count(beside[0]) or 0) >= 2000

    wait_until(partway, 120, "the run to be part way", interval=0.05)
    w.kill()
    assert dbs.pg_count("big") in (None, 0) if sync == "full_refresh" else 0 < dbs.pg_count("big") < rows

    w = warp(config)  # an unfinished run starts again at once, whatever the schedule says
    wait_converged(dbs, w, 120)
    assert dbs.pg_count("big") == rows
    assert not [t for t in dbs.dest.tables() if t.startswith("_warp_new_")]
    tables, schedule = batch_state(state_dir, dbs.name)
    assert schedule is not None and schedule.run_status == "ok"
    if sync == "incremental":
        assert tables["big"].mark["cursor"] == rows
    assert w.stop() == 0


def test_a_full_refresh_swap_is_atomic_to_a_concurrent_reader(dbs, warp, tmp_path):
    rows = 20_000
    dbs.sql("CREATE TABLE snap (id INT PRIMARY KEY, v VARCHAR(64) NOT NULL)")
    dbs.many("INSERT INTO snap VALUES (%s, %s)", [(i, f"value {i}") for i in range(1, rows + 1)])
    config = batch_config(
        tmp_path,
        dbs.name,
        "      - name: snap\n        sync: full_refresh\n",
        every="0.2s",
        extra="    snapshot_chunk_size: 2000\n",
    )
    state_dir = os.path.join(str(tmp_path), "state")
    w = warp(config)
    wait_until(lambda: dbs.pg_count("snap") == rows, 180, "the first copy")
    first = runs_finished(state_dir, dbs.name, "snap")
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        conn = psycopg2.connect(PG_DSN)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(dbs.name, "snap")))
                    seen.append(cur.fetchone()[0])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        # three more complete refreshes while the reader counts
        wait_until(
            lambda: (runs_finished(state_dir, dbs.name, "snap") or 0) > (first or 0) + 0.1 and len(seen) > 50,
            180,  # generous: a loaded machine copies 20k rows slowly
            "refreshes under the reader",
        )
        time.sleep(3)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert seen and set(seen) == {rows}, f"a reader saw a partial table: {sorted(set(seen))[:5]}"
    assert w.stop() == 0


@pytest.mark.destinations
@pytest.mark.parametrize("sync", ["incremental", "full_refresh"])
def test_after_another_process_took_the_schema_over_a_run_writes_nothing_and_exits_2(
    dbs, warp, tmp_path, sync
):
    """Two batch processes (two machines, two state directories) cannot both write one schema into one
    destination: the one that started last takes it over there (the fence's epoch), and the other's next
    run writes nothing (no row, no copy swapped in) and stops with exit 2, which no supervisor restarts."""
    make_items(dbs, 10)
    table = "        cursor_column: updated_at\n" if sync == "incremental" else "        sync: full_refresh\n"
    config = batch_config(tmp_path, dbs.name, "      - name: items\n" + table, every="1s")
    state_dir = os.path.join(str(tmp_path), "state")
    w = warp(config)
    wait_until(lambda: runs_finished(state_dir, dbs.name, "items"), 60, "the first run")
    assert "writing as epoch" in w.output
    newer = dbs.dest.connector()
    try:  # as a batch process starting on another machine does
        newer.take_over(dbs.dest.schema, dbs.name)
    finally:
        newer.close()
    dbs.sql("UPDATE items SET v = 'after the takeover' WHERE id = 1")
    rc = w.wait(60)
    assert rc == 2, f"exit code {rc}:\n{w.output[-4000:]}"
    assert f"another writer took over schema '{dbs.name}'" in w.output, w.output[-4000:]
    assert dbs.dest.query("SELECT v FROM {} WHERE id = 1", "items") == [("v1",)]
    assert dbs.dest.tables() == ["items"]  # (no copy left beside it either)


def test_the_schedule_survives_restarts_without_double_runs(dbs, warp, tmp_path):
    make_items(dbs, 10)
    config = batch_config(
        tmp_path, dbs.name, "      - name: items\n        cursor_column: updated_at\n", every="1h"
    )
    state_dir = os.path.join(str(tmp_path), "state")
    w = warp(config)
    wait_until(lambda: runs_finished(state_dir, dbs.name, "items"), 60, "the first run")
    assert w.stop() == 0
    _, schedule = batch_state(state_dir, dbs.name)
    assert schedule is not None and schedule.run_status == "ok"
    first_start = schedule.run_started

    w = warp(config)
    wait_until(lambda: "next run 20" in w.output, 60, "start-up")
    time.sleep(2)
    assert w.stop() == 0
    _, schedule = batch_state(state_dir, dbs.name)
    assert schedule.run_started == first_start, "a run that is not due yet must not start at start-up"
    assert "batch run of" not in w.output

    # down for three periods: the missed runs are one run at start-up, not three
    store = StateStore(state_dir)
    with store._tx() as conn:
        conn.execute("UPDATE batch_schedule SET run_started = run_started - 3 * 3600 - 60")
    store.close()
    dbs.sql("UPDATE items SET v = 'while down' WHERE id = 1")
    w = warp(config)
    wait_until(lambda: "batch run of" in w.output, 60, "the missed run")
    time.sleep(2)
    assert w.stop() == 0
    assert w.output.count("batch run of") == 1
    assert dbs.dest.query("SELECT v FROM {} WHERE id = 1", "items") == [("while down",)]
    _, schedule = batch_state(state_dir, dbs.name)
    assert schedule.next_run == pytest.approx(schedule.run_started + 3600, abs=1)


@pytest.mark.destinations
def test_schema_changes_between_runs_evolve_or_recopy_the_destination(dbs, warp, tmp_path):
    make_items(dbs, 20)
    # rows last changed long before the safety lag: a run reads them only when it reads every row
    dbs.sql("UPDATE items SET updated_at = '2020-01-01 00:00:00'")
    config = batch_config(
        tmp_path, dbs.name, "      - name: items\n        cursor_column: updated_at\n        safety_lag: 1s\n"
    )
    w = warp(config)
    wait_converged(dbs, w, 60)

    # the source fills the new column of every row without moving their cursor
    dbs.sql("ALTER TABLE items ADD COLUMN qty INT NOT NULL DEFAULT 7")
    dbs.sql("UPDATE items SET qty = 9 WHERE id = 1")
    wait_until(lambda: "qty" in dbs.dest.columns("items"), 60, "the new column")
    wait_converged(dbs, w, 60)

    # a change no destination follows in place (a narrower type): the table is copied again
    dbs.sql("ALTER TABLE items MODIFY v VARCHAR(10) NOT NULL")
    dbs.sql("UPDATE items SET v = 'short' WHERE id = 2")
    wait_converged(dbs, w, 60)
    assert w.stop() == 0


def test_a_new_cursor_column_reads_every_row_again(dbs, warp, tmp_path):
    make_items(dbs, 20)
    items = "      - name: items\n        cursor_column: {}\n        safety_lag: 0\n"
    w = warp(batch_config(tmp_path, dbs.name, items.format("id"), every="1h"))
    wait_converged(dbs, w, 60)
    assert w.stop() == 0
    dbs.sql("UPDATE items SET v = 'changed, same id' WHERE id = 5")  # an id cursor does not see this
    w = warp(batch_config(tmp_path, dbs.name, items.format("updated_at"), every="0.5s"))
    wait_converged(dbs, w, 60)
    assert "cursor_column is now 'updated_at'" in w.output
    assert w.stop() == 0


def test_key_scan_deletes_rows_gone_from_the_source(dbs, warp, tmp_path):
    make_items(dbs, 100)
    config = batch_config(
        tmp_path,
        dbs.name,
        "      - name: items\n        cursor_column: updated_at\n        delete_detection: key_scan\n",
    )
    w = warp(config)
    wait_converged(dbs, w, 60)
    dbs.sql("DELETE FROM items WHERE id > 90")
    wait_converged(dbs, w, 60)
    assert dbs.pg_count("items") == 90
    tables, _ = batch_state(os.path.join(str(tmp_path), "state"), dbs.name)
    assert w.stop() == 0


def test_a_key_scan_that_matches_no_key_deletes_nothing_and_stops(dbs, warp, tmp_path):
    make_items(dbs, 30)
    table = "      - name: items\n        cursor_column: id\n        safety_lag: 0\n        delete_detection: key_scan\n"
    w = warp(batch_config(tmp_path, dbs.name, table, every="1h"))
    wait_converged(dbs, w, 60)
    assert w.stop() == 0
    # the next incremental read finds nothing (the row at the mark is gone), and the destination's keys no
    # longer match any of the source's, as keys read differently on the two sides would not
    dbs.sql("DELETE FROM items WHERE id = 30")
    dbs.pg_rows(f'UPDATE "{dbs.name}".items SET id = id + 100000')
    w = warp(batch_config(tmp_path, dbs.name, table, every="0.5s"))
    assert w.wait(60) == 1
    assert "key_scan found none of the source's 29 keys among the destination's 30 rows" in w.output
    assert dbs.pg_count("items") == 30, "nothing deleted"


def test_a_nullable_cursor_stops_the_schema_with_the_fix(dbs, warp, tmp_path):
    dbs.sql("CREATE TABLE loose (id INT PRIMARY KEY, changed DATETIME NULL)")
    dbs.sql("INSERT INTO loose VALUES (1, NULL)")
    config = batch_config(tmp_path, dbs.name, "      - name: loose\n        cursor_column: changed\n")
    w = warp(config)
    assert w.wait(60) == 1
    assert "cursor_column 'changed' may be NULL" in w.output and "NOT NULL" in w.output
    tables, schedule = batch_state(os.path.join(str(tmp_path), "state"), dbs.name)
    assert tables["loose"].run_status == "failed" and schedule.run_status == "failed"
    assert dbs.pg_count("loose") in (None, 0)


def test_sigterm_during_a_wait_stops_at_once(dbs, warp, tmp_path):
    make_items(dbs, 5)
    config = batch_config(
        tmp_path, dbs.name, "      - name: items\n        cursor_column: updated_at\n", every="1h"
    )
    state_dir = os.path.join(str(tmp_path), "state")
    w = warp(config)
    wait_until(lambda: runs_finished(state_dir, dbs.name, "items"), 60, "the first run")
    started = time.monotonic()
    assert w.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    assert converged(dbs) == []
