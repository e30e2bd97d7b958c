"""The destination fence of streamed batches (docs/how-it-works.md, "Delivery guarantees").

A crash between a batch's destination commit and the state file's write used to replay the
batch at the next start.  PostgreSQL and MariaDB destinations now record each batch in the
same transactions as its rows (``_warp_checkpoints``), and the engine resumes from the newer
of the two records: these tests inject exactly that crash (WARP_FAULT_AFTER_DEST_COMMIT) and
check that nothing was applied twice.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from conftest import Databases, Warp, mysql_root, wait_converged, wait_until, write_config
from test_replication import STREAMING, assert_converged, stop_cleanly

from warpd.config import TableSettings
from warpd.connectors.base import FENCE_TABLE, Fence, SnapshotChunk, beside_plan
from warpd.engine.applier import DestinationPool, TableApplier, part_of
from warpd.engine.batch import FinalState
from warpd.errors import SupersededError
from warpd.state.migrations import MIGRATIONS
from warpd.state.store import STATE_FILE_NAME, StateStore
from warpd.types import Column, ColumnType, Kind, TableSchema

pytestmark = pytest.mark.destinations()


def _epoch(dbs: Databases, column: str) -> str:
    if dbs.dest.kind == "mysql":
        return f"unix_timestamp({column})"
    return f"extract(epoch FROM {column})"


def _synced(dbs: Databases, table: str, order: str) -> dict[Any, float]:
    """Each destination row's ``_warp_synced_at`` (seconds), by ``order``'s value."""
    rows = dbs.dest.query(f"SELECT {order}, {_epoch(dbs, '_warp_synced_at')} FROM {{}}", table)
    return {r[0]: float(r[1]) for r in rows}


def _dest_rows(dbs: Databases, table: str, columns: str) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in dbs.dest.query(f"SELECT {columns} FROM {{}}", table))


CONFIG = (
    "schemas:\n  - name: {name}\n    deletes: soft\n    metadata_columns: true\n"
    "    batch_size: 5\n    max_batch_latency_ms: 5000\n    default_max_parallel_streams: 3\n"
)


def _crash_inside_transaction(dbs: Databases, warp: Callable[..., Warp], tmp_path: Any, batches: int) -> Warp:
    """Replicate tables acct (keyed) and nokey (no key), then run one source transaction whose first batch
    (5 row changes of nokey reach batch_size) is cut inside it, with a crash right after the destination
    commit of batch ``batches``; returns the process (dying)."""
    dbs.sql("CREATE TABLE acct (id INT PRIMARY KEY, v VARCHAR(20))")
    dbs.sql("CREATE TABLE nokey (a INT, b VARCHAR(20))")  # no key: the row hash identifies a row
    dbs.many("INSERT INTO acct VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, 21)])
    config = write_config(tmp_path, CONFIG.format(name=dbs.name))
    w = _streaming(warp(config, env={"WARP_FAULT_AFTER_DEST_COMMIT": str(batches)}))

    # The first batch holds updates of acct (soft deletes, metadata columns) and inserts into the keyless
    # table; the second 5 more inserts; the transaction ends with changes of acct.
    def statements(cur: Any) -> None:
        cur.execute("UPDATE acct SET v = 'first' WHERE id <= 3")
        for i in range(5):
            cur.execute("INSERT INTO nokey VALUES (%s, 'x')", (i,))
        for i in range(5, 10):
            cur.execute("INSERT INTO nokey VALUES (%s, 'y')", (i,))
        cur.execute("UPDATE acct SET v = 'second' WHERE id BETWEEN 11 AND 15")
        cur.execute("DELETE FROM acct WHERE id = 20")

    _source_transaction(dbs, statements)
    return w


def _streaming(w: Warp) -> Warp:
    """``w`` once its snapshot is done and it streams."""
    wait_until(lambda: STREAMING in w.output or not w.alive(), 150, "the snapshot to finish")
    assert w.alive(), w.output[-4000:]
    return w


def _source_transaction(dbs: Databases, statements: Callable[[Any], None]) -> None:
    """Run ``statements(cursor)`` in one MariaDB transaction of the test's database."""
    conn = mysql_root(dbs.name)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            statements(cur)
            cur.execute("COMMIT")
    finally:
        conn.close()


@pytest.mark.parametrize("batches", [1, 2], ids=["first-batch", "second-batch"])
def test_crash_between_destination_commit_and_state_file_replays_nothing(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any, batches: int
) -> None:
    """``batches`` 1: the crash follows the first batch, cut inside a source transaction; 2: the state
    file records the first (8 row changes into the transaction) and the crash follows the second."""
    w = _crash_inside_transaction(dbs, warp, tmp_path, batches)
    config = os.path.join(str(tmp_path), "config.yaml")
    state_dir = w.cmd[w.cmd.index("--state-dir") + 1]

    rc = w.wait(120)
    assert rc == 137, f"exit code {rc}:\n{w.output[-4000:]}"
    # the crash came where intended: the destination holds the last batch, the state file does not
    store = StateStore(state_dir)
    try:
        assert store.checkpoint_mark(dbs.name) == ((0, {}) if batches == 1 else (1, {"acct": 3, "nokey": 5}))
    finally:
        store.close()
    fence = dbs.dest.query(
        "SELECT table_name, seq, skip, skip_tables FROM {} WHERE schema_name = %s AND table_name <> ''",
        FENCE_TABLE,
        args=(dbs.name,),
    )
    assert fence and max(r[1] for r in fence) == batches, fence
    last = [r for r in fence if r[1] == batches]
    assert {r[0] for r in last} == ({"acct", "nokey"} if batches == 1 else {"nokey"}), fence
    # the first batch ends 8 row changes into the transaction, the second 5 further
    assert {r[2] for r in last} == {8 + 5 * (batches - 1)}, fence
    # ... counted per table: 3 of acct, then 5 (and 5 more) of nokey
    counts = [dbs.dest.json(r[3]) for r in last]
    assert counts and all(c == {"acct": 3, "nokey": 5 * batches} for c in counts), fence
    applied_acct = _synced(dbs, "acct", "id")
    applied_nokey = _synced(dbs, "nokey", "a")
    assert sorted(applied_nokey) == list(range(5 * batches))
    assert [
        i
        for i in (1, 2, 3)
        if dbs.dest.query("SELECT v FROM {} WHERE id = %s", "acct", args=(i,))[0][0] == "first"
    ] == [1, 2, 3]

    w2 = warp(config)
    wait_until(lambda: STREAMING in w2.output or not w2.alive(), 150, "the restart")
    assert_converged(dbs, w2, ["acct", "nokey"], soft_delete=True)
    out = stop_cleanly(w2)

    # nothing of the batches applied before the crash was written again: its rows kept the time they were synced at
    after_acct = _synced(dbs, "acct", "id")
    after_nokey = _synced(dbs, "nokey", "a")
    for i in (1, 2, 3):
        assert after_acct[i] == applied_acct[i], i
    for a in range(5 * batches):
        assert after_nokey[a] == applied_nokey[a], a
    # and the rest of the transaction was applied once, after the crash
    assert _dest_rows(dbs, "nokey", "a, b") == [(i, "x" if i < 5 else "y") for i in range(10)]
    assert dbs.dest.count("nokey") == 10  # no duplicate row
    assert _dest_rows(dbs, "acct", "id, v, _warp_deleted_at IS NOT NULL")[:3] == [
        (1, "first", 0),
        (2, "first", 0),
        (3, "first", 0),
    ]
    deleted = dbs.dest.query("SELECT id FROM {} WHERE _warp_deleted_at IS NOT NULL", "acct")
    assert [r[0] for r in deleted] == [20]
    assert "rebuilding it from the stream" in out, out[-4000:]
    assert "applied again" not in out, out[-4000:]
    store = StateStore(state_dir)
    try:
        assert store.checkpoint_mark(dbs.name)[0] >= 2  # the rebuilt batch 1, then the rest
    finally:
        store.close()


def test_crash_between_the_parts_of_a_batch_applies_only_what_they_lack(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """A batch of a keyless table is written in 3 parts (3 transactions); the process dies right after the
    first part commits (WARP_FAULT_AFTER_PART_COMMIT; the others wait for it).  The restart rebuilds the
    batch and writes only the rows the fence does not show committed: every row once, and the rows of
    the committed part keep the time they were synced at."""
    rows = 1500
    dbs.sql("CREATE TABLE nokey (a INT, b VARCHAR(20))")
    config = write_config(
        tmp_path,
        f"schemas:\n  - name: {dbs.name}\n    metadata_columns: true\n"
        "    batch_size: 5000\n    max_batch_latency_ms: 3000\n    default_max_parallel_streams: 3\n",
    )
    w = _streaming(warp(config, env={"WARP_FAULT_AFTER_PART_COMMIT": "1"}))
    _source_transaction(
        dbs, lambda cur: cur.executemany("INSERT INTO nokey VALUES (%s, 'x')", [(i,) for i in range(rows)])
    )
    rc = w.wait(120)
    assert rc == 137, f"exit code {rc}:\n{w.output[-4000:]}"
    fence = dbs.dest.query(
        "SELECT part, parts, rows_done FROM {} WHERE schema_name = %s AND table_name = 'nokey'",
        FENCE_TABLE,
        args=(dbs.name,),
    )
    assert fence and {r[1] for r in fence} == {3}, fence
    applied = _synced(dbs, "nokey", "a")
    assert sum(r[2] for r in fence) == len(applied), (fence, len(applied))
    assert 0 < len(applied) < rows, f"the crash did not come between the parts: {len(applied)} rows, {fence}"

    w2 = warp(config)
    wait_until(lambda: STREAMING in w2.output or not w2.alive(), 150, "the restart")
    assert_converged(dbs, w2, ["nokey"])
    out = stop_cleanly(w2)
    assert _dest_rows(dbs, "nokey", "a, b") == [(i, "x") for i in range(rows)]  # each row once
    after = _synced(dbs, "nokey", "a")
    assert {a: after[a] for a in applied} == applied  # the committed part was not written again
    assert "rebuilding it from the stream" in out, out[-4000:]
    assert "applied again" not in out, out[-4000:]


@pytest.mark.parametrize("left_out", ["nokey", "acct"])
def test_resume_inside_a_transaction_under_new_table_filters_applies_each_change_once(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any, left_out: str
) -> None:
    """The state file holds a batch cut inside a source transaction (3 changes of acct and 5 of nokey
    into it) and the destination the next one; the restart leaves one of the two tables out
    (``table_blacklist``).  The changes held already are counted per table, so the other table's are
    passed over exactly: none lost (acct's updates after the cut, when nokey is left out: a single
    count of 8 passed over 8 changes of acct), none written twice (nokey's rows keep their sync time)."""
    w = _crash_inside_transaction(dbs, warp, tmp_path, 2)
    state_dir = w.cmd[w.cmd.index("--state-dir") + 1]
    rc = w.wait(120)
    assert rc == 137, f"exit code {rc}:\n{w.output[-4000:]}"
    store = StateStore(state_dir)
    try:
        assert store.checkpoint_mark(dbs.name) == (1, {"acct": 3, "nokey": 5})
    finally:
        store.close()
    kept = "acct" if left_out == "nokey" else "nokey"
    applied = _synced(dbs, "acct", "id") if kept == "acct" else _synced(dbs, "nokey", "a")

    config = write_config(tmp_path, CONFIG.format(name=dbs.name) + f"    table_blacklist: [{left_out}]\n")
    w2 = warp(config)
    wait_until(lambda: STREAMING in w2.output or not w2.alive(), 150, "the restart")
    assert w2.alive(), w2.output[-4000:]
    if kept == "nokey":
        dbs.sql("INSERT INTO nokey VALUES (10, 'z')")  # after the transaction: the stream reads on
    else:
        dbs.sql("UPDATE acct SET v = 'third' WHERE id = 19")
    assert_converged(dbs, w2, [kept], soft_delete=True)
    out = stop_cleanly(w2)

    after = _synced(dbs, "acct", "id") if kept == "acct" else _synced(dbs, "nokey", "a")
    if kept == "acct":
        rows = _dest_rows(dbs, "acct", "id, v, _warp_deleted_at IS NOT NULL")
        assert [r for r in rows if r[1] != f"v{r[0]}" or r[2]] == (
            [(i, "first", 0) for i in (1, 2, 3)]
            + [(i, "second", 0) for i in range(11, 16)]
            + [(19, "third", 0), (20, "v20", 1)]
        )
        for i in (1, 2, 3):  # held by the state file's batch: not written again
            assert after[i] == applied[i], i
    else:
        assert _dest_rows(dbs, "nokey", "a, b") == [(i, "x" if i < 5 else "y") for i in range(10)] + [
            (10, "z")
        ]
        for a in range(10):  # held by the state file's batch and the destination's: not written again
            assert after[a] == applied[a], a
    assert "applied again" not in out, out[-4000:]


def test_state_file_from_before_the_fence_opens(tmp_path: Any) -> None:
    """A state file written before checkpoints had a batch number opens: seq and skip default to 0."""
    path = os.path.join(str(tmp_path), STATE_FILE_NAME)
    old = len(MIGRATIONS) - 2  # (6: seq and skip; 7: skip per table)
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:old]:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {old:d}")
    conn.execute(
        "INSERT INTO checkpoints (schema_name, position, source_ts, updated_at) VALUES (?, ?, ?, ?)",
        ("shop", '{"file": "mariadb-bin.000003", "pos": 1234}', 1.0, 2.0),
    )
    conn.close()
    store = StateStore(str(tmp_path))
    try:
        assert store.checkpoint("shop") == {"file": "mariadb-bin.000003", "pos": 1234}
        assert store.checkpoint_mark("shop") == (0, {})
        store.save_checkpoint(
            "shop", {"file": "mariadb-bin.000003", "pos": 2000}, seq=4, skip={"a": 3, "b": 0}
        )
        assert store.checkpoint_mark("shop") == (4, {"a": 3})
        store.save_checkpoint("shop", {"file": "mariadb-bin.000003", "pos": 3000})  # keeps seq
        assert store.checkpoint_mark("shop") == (4, {})
    finally:
        store.close()


def test_state_file_with_a_total_count_opens(tmp_path: Any) -> None:
    """A checkpoint written while the row changes after its position were one total (state version 6)
    reads as that many changes of any table (``""``), as they were passed over then."""
    path = os.path.join(str(tmp_path), STATE_FILE_NAME)
    old = len(MIGRATIONS) - 1
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:old]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {old:d}")
    conn.execute(
        "INSERT INTO checkpoints (schema_name, position, source_ts, updated_at, seq, skip) VALUES (?, ?, ?, ?, ?, ?)",
        ("shop", '{"file": "mariadb-bin.000003", "pos": 1234}', 1.0, 2.0, 6, 3),
    )
    conn.close()
    store = StateStore(str(tmp_path))
    try:
        assert store.checkpoint_mark("shop") == (6, {"": 3})
    finally:
        store.close()


def test_fence_table_from_before_per_table_counts_gains_them(dbs: Databases) -> None:
    """A fence table created before ``skip_tables`` gets the column at the next start, and its rows read
    with their total as a count of any table."""
    dest = dbs.dest.connector()
    try:
        dest.read_fence(dbs.dest_schema, dbs.name)  # creates the table
        dbs.dest.query("ALTER TABLE {} DROP COLUMN skip_tables", FENCE_TABLE)
        dbs.dest.query(
            "INSERT INTO {} (schema_name, table_name, part, seq, position, skip, parts, rows_done, epoch) "
            "VALUES (%s, 'acct', 0, 3, %s, 5, 1, 2, 1)",
            FENCE_TABLE,
            args=(dbs.name, '{"pos": 1}'),
        )
        rows = dest.read_fence(dbs.dest_schema, dbs.name)
        assert [(r.table, r.seq, r.skip, dict(r.skip_tables)) for r in rows] == [("acct", 3, 5, {"": 5})]
        assert "skip_tables" in dbs.dest.columns(FENCE_TABLE)
    finally:
        dest.close()


def test_partition_is_the_same_in_every_process() -> None:
    """A batch rebuilt after a crash splits into the same parts: no per-process hash salt."""
    keys: list[Any] = [(1,), (2, "b"), ("é",), ("0f" * 16), (None, 3), (b"\x00\x01",)]
    here = [part_of(k, 7) for k in keys]
    code = f"from warpd.engine.applier import part_of\nprint([part_of(k, 7) for k in {keys!r}])\n"
    for seed in ("1", "2", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ).stdout
        assert out.strip() == repr(here), seed
    assert len(set(part_of((i,), 4) for i in range(100))) == 4


def _streaming_writer(dbs: Databases, warp: Callable[..., Warp]) -> Warp:
    """A writer of table ``t`` (ten rows copied) that streams and has applied one change (row 11)."""
    dbs.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
    dbs.many("INSERT INTO t VALUES (%s, %s)", [(i, "a") for i in range(1, 11)])
    first = warp()
    wait_until(lambda: STREAMING in first.output or not first.alive(), 150, "the first writer to stream")
    assert first.alive(), first.output[-4000:]
    dbs.sql("INSERT INTO t VALUES (11, 'first')")
    wait_until(lambda: dbs.dest.count("t") == 11, 60, "the first writer to apply a change")
    return first


def _take_over_in_destination(dbs: Databases) -> None:
    """Take the schema over directly in the destination, as a writer on another machine would."""
    newer = dbs.dest.connector()
    try:
        newer.take_over(dbs.dest_schema, dbs.name)
    finally:
        newer.close()


def test_a_second_writer_on_the_same_destination_stops_the_first(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """Two processes (two state directories) replicating one schema into one destination cannot
    interleave: the one that started last takes the schema over, the other stops with exit 2."""
    first = _streaming_writer(dbs, warp)

    other_state = str(tmp_path / "state-2")
    os.makedirs(other_state)
    # its own replica id: two replicas with one id evict each other at the source
    server_id = str(3_000_000_000 + int.from_bytes(os.urandom(3), "big"))
    second = Warp(dbs, other_state, None, [], {"CARTRIDGE_WARP_SOURCE__SERVER_ID": server_id}).start()
    try:
        wait_until(
            lambda: STREAMING in second.output or not second.alive(), 150, "the second writer to stream"
        )
        assert second.alive(), second.output[-4000:]
        dbs.sql("INSERT INTO t VALUES (12, 'both')")
        rc = first.wait(120)
        assert rc == 2, f"exit code {rc}:\n{first.output[-4000:]}"
        assert f"another writer took over schema '{dbs.name}'" in first.output, first.output[-4000:]
        assert "this process stops" in first.output
        wait_converged(dbs, second, 120, ["t"])
        dbs.sql("UPDATE t SET v = 'second' WHERE id = 1")
        wait_converged(dbs, second, 120, ["t"])
    finally:
        if second.alive():
            second.stop()
    assert "another writer" not in second.output


def test_an_older_writer_applies_no_schema_change_or_truncate_after_a_takeover(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    """DDL and TRUNCATE check the writer's epoch too: a process another one took the schema over from
    (here the takeover is made directly in the destination, as a writer on another machine would) stops
    at the source's next ALTER with exit 2, and neither it nor the TRUNCATE after it reaches the
    destination (they used to: the rows the newer writer had streamed were emptied)."""
    first = _streaming_writer(dbs, warp)
    columns = dbs.dest.columns("t")

    _take_over_in_destination(dbs)
    dbs.sql("ALTER TABLE t ADD COLUMN w INT")
    dbs.sql("TRUNCATE TABLE t")
    dbs.sql("INSERT INTO t VALUES (12, 'after', 1)")  # (a batch: an unfenced writer stops there)
    rc = first.wait(120)
    assert rc == 2, f"exit code {rc}:\n{first.output[-4000:]}"
    assert f"another writer took over schema '{dbs.name}'" in first.output, first.output[-4000:]
    assert dbs.dest.count("t") == 11
    assert dbs.dest.columns("t") == columns


def test_an_older_writer_creates_no_table_after_a_takeover(dbs: Databases, warp: Callable[..., Warp]) -> None:
    """Creating a destination table checks the writer's epoch too: a process another one took the
    schema over from stops at the source's next CREATE TABLE with exit 2, and the table it would have
    created (empty, and never filled by the newer writer's rows) is not made."""
    first = _streaming_writer(dbs, warp)
    _take_over_in_destination(dbs)
    dbs.sql("CREATE TABLE u (id INT PRIMARY KEY, v VARCHAR(20))")
    dbs.sql("INSERT INTO u VALUES (1, 'x')")
    rc = first.wait(120)
    assert rc == 2, f"exit code {rc}:\n{first.output[-4000:]}"
    assert f"another writer took over schema '{dbs.name}'" in first.output, first.output[-4000:]
    assert dbs.dest.count("u") is None
    assert dbs.dest.count("t") == 11


def test_rows_done_skips_committed_items_per_part_and_an_old_epoch_writes_nothing(dbs: Databases) -> None:
    """What the rebuilt batch relies on, against the real destination: each part's transaction records
    how many of its items are committed; ``done`` passes over them; a stale epoch commits nothing."""
    big = ColumnType(Kind.INT, bits=64)
    shape = TableSchema(
        "parts",
        (Column("id", big, False, "bigint"), Column("v", ColumnType(Kind.TEXT), True, "text")),
        ("id",),
    )
    dest = dbs.dest.connector()
    factory = lambda: dbs.dest.connector()  # noqa: E731 - one connection per worker thread
    pool = DestinationPool(factory, dest.capabilities)
    plan = dest.plan(shape, dbs.dest_schema, soft_delete=False, metadata=False)
    dest.prepare(plan)
    epoch = dest.take_over(dbs.dest_schema, dbs.name)
    letters: list[Any] = []
    applier = TableApplier(
        dbs.name,
        plan,
        TableSettings(max_parallel_streams=3),
        pool,
        lambda *args: letters.append(args),
        lambda: False,
    )
    try:
        states = [FinalState({"id": i, "v": f"v{i}"}, False, "insert", None, None) for i in range(1, 31)]
        parts: dict[int, list[int]] = {}
        for st in states:
            parts.setdefault(part_of(applier.key_of(st.row), 3), []).append(st.row["id"])
        assert len(parts) == 3
        fence = Fence(
            table="parts",
            part=0,
            seq=7,
            position={"pos": 1},
            skip=2,
            parts=3,
            rows_done=0,
            epoch=epoch,
            where=dbs.dest_schema,
            schema=dbs.name,
        )
        applier.apply(states, fence, {0: 2, 1: len(parts[1])})  # part 0: two done; part 1: all done
        written = {r[0] for r in dbs.dest.query("SELECT id FROM {}", "parts")}
        assert written == set(parts[0][2:]) | set(parts[2])
        rows = {r.part: r for r in dest.read_fence(dbs.dest_schema, dbs.name) if r.table == "parts"}
        assert {p: (r.seq, r.rows_done, r.parts, r.skip) for p, r in rows.items()} == {
            0: (7, len(parts[0]), 3, 2),
            2: (7, len(parts[2]), 3, 2),
        }
        assert dict(rows[0].position) == {"pos": 1}

        newer = dest.take_over(dbs.dest_schema, dbs.name)
        assert newer == epoch + 1
        more = [FinalState({"id": i, "v": "late"}, False, "insert", None, None) for i in range(100, 110)]
        with pytest.raises(SupersededError, match=f"another writer took over schema '{dbs.name}'"):
            applier.apply(more, replace(fence, seq=8))
        assert {r[0] for r in dbs.dest.query("SELECT id FROM {}", "parts")} == written
        # snapshot chunks too: the old writer's copy commits nothing, on the direct path (new keys) and the
        # merging one (a key there already), and the guard records no fence row
        before = dest.read_fence(dbs.dest_schema, dbs.name)
        applier.guard = Fence.guard(dbs.dest_schema, dbs.name, epoch)
        for ids in ([200, 201], [parts[2][0], 202]):
            chunk = SnapshotChunk("parts", [{"id": i, "v": "copied"} for i in ids], None)
            with pytest.raises(SupersededError, match="this process stops"):
                applier.copy_snapshot(chunk)
        assert {r[0] for r in dbs.dest.query("SELECT id FROM {}", "parts")} == written
        assert not dbs.dest.query("SELECT id FROM {} WHERE v = 'copied'", "parts")
        # ... while the writer of the current epoch copies (and still records no fence row)
        applier.guard = Fence.guard(dbs.dest_schema, dbs.name, newer)
        assert applier.copy_snapshot(SnapshotChunk("parts", [{"id": 300, "v": "copied"}], None)) == 1
        assert dbs.dest.query("SELECT v FROM {} WHERE id = 300", "parts") == [("copied",)]
        assert dest.read_fence(dbs.dest_schema, dbs.name) == [
            replace(r, epoch=newer) if not r.table else r for r in before
        ]
        # DDL and TRUNCATE: the old writer's are refused before they run, the current one's run
        old, current = Fence.guard(dbs.dest_schema, dbs.name, epoch), applier.guard
        wider = TableSchema("parts", (*shape.columns, Column("w", big, True, "bigint")), ("id",))
        wider_plan = dest.plan(wider, dbs.dest_schema, soft_delete=False, metadata=False)
        rows_now = dbs.dest.count("parts")
        for refused in (
            lambda: dest.truncate(plan, fence=old),
            lambda: dest.evolve(plan, wider_plan, fence=old),
            lambda: dest.drop(plan, fence=old),
        ):
            with pytest.raises(SupersededError, match="this process stops"):
                refused()
        assert dbs.dest.count("parts") == rows_now
        assert "w" not in dbs.dest.columns("parts")
        dest.evolve(plan, wider_plan, fence=current)
        assert "w" in dbs.dest.columns("parts")
        dest.truncate(wider_plan, fence=current)
        assert dbs.dest.count("parts") == 0
        # creating a table and swapping a complete copy in over the live table: likewise (an old
        # writer's copy swapped in would replace the rows the current writer streamed since)
        other = dest.plan(
            replace(shape, name="parts_other"), dbs.dest_schema, soft_delete=False, metadata=False
        )
        with pytest.raises(SupersededError, match="this process stops"):
            dest.prepare(other, fence=old)
        assert dbs.dest.count("parts_other") is None
        dest.write(wider_plan, [dest.encode(wider_plan, {"id": 1, "v": "live", "w": None}, "insert", None)])
        beside = beside_plan(wider_plan)
        dest.prepare(beside, fence=current)
        dest.write(
            beside, [dest.encode(beside, {"id": 2, "v": "copy", "w": 5}, "snapshot", None)], direct=True
        )
        with pytest.raises(SupersededError, match="this process stops"):
            dest.swap_in(beside, wider_plan, fence=old)
        assert dbs.dest.query("SELECT id, v FROM {}", "parts") == [(1, "live")]
        assert dest.table_exists(beside)
        dest.swap_in(beside, wider_plan, fence=current)
        assert dbs.dest.query("SELECT id, v, w FROM {}", "parts") == [(2, "copy", 5)]
        assert not dest.table_exists(beside)
        assert not letters
    finally:
        applier.close()
        pool.close()
        dest.close()


def test_a_superseded_writer_repairs_nothing(dbs: Databases) -> None:
    """Repairs (verify --repair handed to the running process, scheduled verifies) write through an
    applier of their own: it checks the writer's epoch too, so a process another one took the schema
    over from repairs nothing (dead-letter replays take the runner's guard the same way)."""
    from warpd.connectors.mysql.source import MySQLSource
    from warpd.engine.repair import repair_keys

    dbs.sql("CREATE TABLE r (id INT PRIMARY KEY, v VARCHAR(20))")
    dbs.many("INSERT INTO r VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, 4)])
    source = MySQLSource(dbs.source_uri, dbs.name, server_id=998)
    dest = dbs.dest.connector()
    pool = DestinationPool(lambda: dbs.dest.connector(), dest.capabilities)
    try:
        shape = source.describe("r")
        plan = dest.plan(shape, dbs.dest_schema, soft_delete=False, metadata=False)
        dest.prepare(plan)
        old = Fence.guard(dbs.dest_schema, dbs.name, dest.take_over(dbs.dest_schema, dbs.name))
        current = Fence.guard(dbs.dest_schema, dbs.name, dest.take_over(dbs.dest_schema, dbs.name))
        keys = [("1",), ("2",)]
        with pytest.raises(SupersededError, match="this process stops"):
            repair_keys(dbs.name, source, pool, plan, TableSettings(), keys, fence=old)
        assert dbs.dest.count("r") == 0
        assert repair_keys(dbs.name, source, pool, plan, TableSettings(), keys, fence=current) == 2
        assert _dest_rows(dbs, "r", "id, v") == [(1, "v1"), (2, "v2")]
    finally:
        pool.close()
        dest.close()
        source.close()


def _take_over_together(dests: list[Any], where: str) -> tuple[list[int], list[BaseException]]:
    """Each destination takes over its own schema (s0, s1, ...) in ``where``, all released at once."""
    barrier = threading.Barrier(len(dests))
    epochs: list[int] = []
    errors: list[BaseException] = []

    def start(dest: Any, schema: str) -> None:
        barrier.wait()
        try:
            epochs.append(dest.take_over(where, schema))
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(d, f"s{i}")) for i, d in enumerate(dests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return epochs, errors


def test_processes_starting_at_once_all_find_the_fence(dbs: Databases) -> None:
    """Four schema processes taking over at the same moment, in a destination schema none of them created
    yet, all get their epoch: PostgreSQL's ``CREATE ... IF NOT EXISTS`` loses such races with a unique
    violation of its catalogue (it failed about two starts in three here before it was retried)."""
    for round_ in range(5):
        where = f"{dbs.dest_schema}_start{round_}"
        dests = [dbs.dest.connector() for _ in range(4)]
        try:
            epochs, errors = _take_over_together(dests, where)
        finally:
            for d in dests:
                d.close()
            if dbs.dest.kind == "mysql":
                dbs.dest.query(f"DROP DATABASE IF EXISTS `{where}`")
            else:
                dbs.dest.query(f'DROP SCHEMA IF EXISTS "{where}" CASCADE')
        assert not errors, errors
        assert epochs == [1, 1, 1, 1]
