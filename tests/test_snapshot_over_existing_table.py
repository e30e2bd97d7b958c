"""A fresh snapshot over a destination table of another shape never destroys the rows it holds.

With a new state directory and other ``key_columns``, the table's copy is made
beside the live table and swapped in when complete; the live table keeps its
rows until then, whatever happens.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import psycopg2
import pymysql
import pytest
from conftest import Databases, Warp, wait_until, write_config
from test_replication import assert_converged, dest_primary_key, stop_cleanly

pytestmark = pytest.mark.destinations


class Watcher:
    """Counts the destination table's rows over and over, from its own connection; keeps the smallest."""

    def __init__(self, dbs: Databases, table: str):
        self.dest = type(dbs.dest)(dbs.dest.schema)  # a connection of its own, for its own thread
        self.table = table
        self.smallest: int | None = None
        self.counts = 0
        self.errors: list[str] = []  # reads that failed; they are not counted as rows seen
        self.died: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    n = int(self.dest.query("SELECT count(*) FROM {}", self.table)[0][0])
                except (psycopg2.errors.UndefinedTable, pymysql.err.ProgrammingError) as exc:
                    if isinstance(exc, pymysql.err.ProgrammingError) and exc.args[0] != 1146:
                        raise
                    n = 0  # a table that is gone holds no rows
                except (psycopg2.Error, pymysql.err.MySQLError) as exc:  # e.g. swapped away under the query
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.counts += 1
                self.smallest = n if self.smallest is None else min(self.smallest, n)
        except BaseException as exc:  # noqa: BLE001 - reported by __exit__, never lost with the thread
            self.died = exc

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.dest.close()
        assert self.died is None, f"the watcher stopped watching: {self.died!r}"


@pytest.fixture
def run(dbs: Databases, tmp_path: Any) -> Iterator[Any]:
    """Start cartridge-warp with a new state directory and the given table settings."""
    started: list[Warp] = []

    def start(label: str, table_settings: str) -> Warp:
        state_dir = str(tmp_path / f"state-{label}")
        os.makedirs(state_dir)
        cfg = write_config(
            tmp_path,
            "source: {connection_string: 'mysql://placeholder/x'}\n"
            f"destination: {{connection_string: '{dbs.dest.kind}://placeholder/x'}}\n"
            "max_batch_latency_ms: 50\n"
            f"schemas:\n  - name: {dbs.name}\n    snapshot_chunk_size: 50\n"
            f"    tables: [{{name: t{table_settings}}}]\n",
        )
        w = Warp(dbs, state_dir, cfg, [], {}).start()
        started.append(w)
        return w

    yield start
    for w in started:
        if w.alive():
            w.kill()


def test_other_key_columns_with_a_new_state_directory_keep_the_rows(dbs: Databases, run: Any) -> None:
    dbs.sql("CREATE TABLE t (id INT PRIMARY KEY, code VARCHAR(20) NOT NULL UNIQUE, v INT)")
    dbs.many("INSERT INTO t VALUES (%s, %s, %s)", [(i, f"c{i:04d}", i) for i in range(1000)])
    w = run("first", "")
    assert_converged(dbs, w)
    stop_cleanly(w)
    assert dest_primary_key(dbs, "t") == ["id"]
    with Watcher(dbs, "t") as watcher:
        w = run("second", ", key_columns: [code]")
        wait_until(lambda: dest_primary_key(dbs, "t") == ["code"] or not w.alive(), 120, "the new copy")
        assert w.alive(), w.output[-4000:]
        assert_converged(dbs, w)
    assert watcher.counts > 0
    assert watcher.smallest == 1000  # never emptied, not even for a moment
    assert dbs.dest.count("t") == 1000
    out = stop_cleanly(w)
    assert "holds rows of another shape" in out and "primary key is (id)" in out, out[-4000:]
    # the copy beside is gone: its name is the live table's now
    assert dbs.dest.tables() == ["t"]


def test_keyless_and_keyed_switch_both_ways(dbs: Databases, run: Any) -> None:
    dbs.sql("CREATE TABLE t (id INT NOT NULL, v VARCHAR(20))")  # no primary key
    dbs.many("INSERT INTO t VALUES (%s, %s)", [(i, f"v{i}") for i in range(600)])
    for label, settings, key in (
        ("keyed", ", key_columns: [id]", ["id"]),
        ("keyless", "", ["_warp_row_key"]),
        ("keyed-again", ", key_columns: [id]", ["id"]),
    ):
        with Watcher(dbs, "t") as watcher:
            w = run(label, settings)
            wait_until(lambda k=key, w=w: dest_primary_key(dbs, "t") == k or not w.alive(), 120, label)
            assert w.alive(), w.output[-4000:]
            assert_converged(dbs, w)
        # the stream goes on into the new table
        dbs.sql("UPDATE t SET v = %s WHERE id = 7", (label,))
        assert_converged(dbs, w)
        stop_cleanly(w)
        if label != "keyed":  # the first run creates the table
            assert watcher.smallest == 600, (label, watcher.smallest)
        assert dbs.dest.count("t") == 600
