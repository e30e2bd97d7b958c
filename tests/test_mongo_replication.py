"""MongoDB -> PostgreSQL and MongoDB -> MySQL/MariaDB end to end: snapshot, change streams, evolution, faults.

Each test runs ``cartridge-warp --mode single`` as a subprocess against the
MongoDB back ends of :mod:`tests.mongo_support` (the wire-protocol test server
always; a real replica set when one is available) and each destination kind
of :mod:`tests.destinations` (``[postgresql]``, ``[mysql]``), and checks the
rows a user would query.
"""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from conftest import Warp, wait_matching, wait_stopped, wait_until, write_config
from lifeline import tied_to_this_process

from tests.bigquery_support import documented_name, valid_column_name
from tests.mongo_support import (
    Backend,
    MongoDatabases,
    backend,
    dest_rows,
    json_value,
    mongo_converged,
)
from warpd.state.store import StateStore

pytestmark = [pytest.mark.mongodb, pytest.mark.destinations(bigquery=True)]

# The tests that exercise the source (resume tokens, large events, lost positions, elections) run
# against PostgreSQL and MySQL only (``destinations`` without bigquery): each BigQuery merge costs the
# emulator about a second, and what they check does not depend on the destination.
SOURCE_ONLY = pytest.mark.destinations


@pytest.fixture(scope="module", params=["wire", "replica-set"])
def mongo_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from backend(request.param, request)


@pytest.fixture
def mdb(mongo_backend: Backend, destination_kind: str) -> Iterator[MongoDatabases]:
    m = MongoDatabases(mongo_backend, destination_kind)
    try:
        yield m
    finally:
        m.drop()


@pytest.fixture
def state_dir(tmp_path: Any) -> str:
    path = str(tmp_path / "state")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture
def mwarp(mdb: MongoDatabases, state_dir: str) -> Iterator[Callable[..., Warp]]:
    started: list[Warp] = []

    def make(config: str | None = None, extra: list[str] | None = None, start: bool = True) -> Warp:
        w = Warp(mdb, state_dir, config, extra or [], {})  # type: ignore[arg-type]  # same attributes
        started.append(w)
        return w.start() if start else w

    yield make
    for w in started:
        if w.alive():
            w.kill()


def config(tmp_path: Any, body: str = "", latency_ms: int = 50) -> str:
    return write_config(
        tmp_path,
        "source: {connection_string: 'mongodb://placeholder/x'}\n"
        "destination: {connection_string: 'postgresql://placeholder/x'}\n"
        f"max_batch_latency_ms: {latency_ms}\n"
        "retry: {max_attempts: 5, initial_delay_seconds: 0.2, max_delay_seconds: 1}\n" + body,
    )


def wait_mongo(m: MongoDatabases, w: Warp | None, state_dir: str, timeout: float = 60, **kwargs: Any) -> None:
    """Wait until every collection equals its destination table (tests/mongo_support.py), while ``w`` runs."""
    # any error counts as "not yet": e.g. the table is being created or evolved right now
    wait_matching(lambda: mongo_converged(m, state_dir, **kwargs), w, timeout, passing=(Exception,))


def rows(
    m: MongoDatabases, table: str, *columns: str, order: str = "_id", where: str = ""
) -> list[tuple[Any, ...]]:
    """The destination's rows of ``table`` (these columns, in ``_id`` order)."""
    return dest_rows(m, table, *columns, order=order, where=where)


def sha1_hex(name: str) -> str:
    """The first 8 hex digits of the SHA-1 of ``name`` (the renaming rule of docs/type-mapping.md)."""
    import hashlib

    return hashlib.sha1(name.encode()).hexdigest()[:8]


def checkpoint(state_dir: str, name: str) -> dict[str, Any] | None:
    store = StateStore(state_dir)
    try:
        return store.checkpoint(name)
    finally:
        store.close()


# -- snapshot and stream -----------------------------------------------------


def test_snapshot_then_stream_while_another_thread_writes(mdb, mwarp, state_dir, tmp_path):
    coll = mdb.db["orders"]
    coll.insert_many(
        [{"_id": i, "sku": f"sku-{i}", "qty": i % 7, "price": Decimal128("9.99")} for i in range(3000)]
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        rnd = random.Random(7)
        n = 3000
        try:
            while not stop.is_set():
                op = rnd.random()
                if op < 0.5:
                    coll.insert_one({"_id": n, "sku": f"new-{n}", "qty": rnd.randint(0, 9)})
                    n += 1
                elif op < 0.8:
                    coll.update_one(
                        {"_id": rnd.randrange(n)}, {"$inc": {"qty": 1}, "$set": {"note": "touched"}}
                    )
                else:
                    coll.delete_one({"_id": rnd.randrange(n)})
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    w = mwarp(config(tmp_path, "snapshot_chunk_size: 200\n"))
    try:
        wait_until(lambda: (mdb.pg_count("orders") or 0) > 0, 60, "the snapshot to start")
        time.sleep(2)  # writes during and after the snapshot
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    # BigQuery: one merge per chunk and flush, about a second each on the emulator
    wait_mongo(mdb, w, state_dir, timeout=240 if mdb.dest.kind == "bigquery" else 60)
    # the columns a user queries: the new field became a column, the decimal stayed exact
    # (Decimal128 has 34 digits: PostgreSQL numeric, BigQuery BIGNUMERIC; MySQL its exact text,
    # docs/type-mapping.md)
    exact = Decimal("9.99") if mdb.dest.kind in ("postgresql", "bigquery") else "9.99"
    assert rows(mdb, "orders", "_id", "price")[0] == (0, exact)
    assert "note" in mdb.dest.columns("orders")
    assert w.stop() == 0


def test_restart_resumes_from_the_resume_token(mdb, mwarp, state_dir, tmp_path):
    mdb.db["users"].insert_many([{"_id": ObjectId(), "name": f"u{i}"} for i in range(50)])
    cfg = config(tmp_path)
    w = mwarp(cfg)
    wait_mongo(mdb, w, state_dir)
    mdb.db["users"].insert_one({"_id": ObjectId(), "name": "while running"})
    wait_mongo(mdb, w, state_dir)
    assert w.stop() == 0
    stored = checkpoint(state_dir, mdb.name)
    assert stored is not None and "token" in stored, stored  # a resume token, not the start time
    # changes while stopped
    mdb.db["users"].insert_one({"_id": ObjectId(), "name": "while stopped"})
    mdb.db["users"].update_many({}, {"$set": {"active": True}})
    mdb.db["users"].delete_one({"name": "u0"})
    w2 = mwarp(cfg)
    wait_mongo(mdb, w2, state_dir)
    assert w2.stop() == 0
    assert "streaming changes from {'token'" in w2.output
    assert "tables to copy" not in w2.output  # resumed, not copied again
    assert mdb.pg_count("users") == 51  # 50 + one while running + one while stopped - u0


def test_kill_9_in_the_middle_of_a_batch_loses_nothing(mdb, mwarp, state_dir, tmp_path):
    coll = mdb.db["events"]
    coll.insert_many([{"_id": i, "v": 0} for i in range(500)])
    cfg = config(tmp_path, "batch_size: 300\n", latency_ms=400)
    w = mwarp(cfg)
    wait_mongo(mdb, w, state_dir)
    stop = threading.Event()

    # BigQuery (the emulator: about a second per merge) is given a writer it can keep up with
    pause = 0.3 if mdb.dest.kind == "bigquery" else 0.01

    def writer() -> None:
        n = 500
        while not stop.is_set():
            coll.insert_many([{"_id": n + k, "v": k} for k in range(50)])
            coll.update_many({"_id": {"$lt": 200}}, {"$inc": {"v": 1}})
            coll.delete_many({"_id": {"$gte": n, "$lt": n + 5}})
            n += 50
            time.sleep(pause)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        for _ in range(3):
            time.sleep(random.uniform(0.5, 1.2))
            w.kill()
            w = mwarp(cfg)
    finally:
        stop.set()
        thread.join()
    wait_mongo(mdb, w, state_dir, timeout=240 if mdb.dest.kind == "bigquery" else 90)
    assert w.stop() == 0


@SOURCE_ONLY
def test_destination_connections_cut_mid_stream_are_ridden_out(mdb, mwarp, state_dir, tmp_path):
    """The destination ends cartridge-warp's sessions (a restart, a failover, a proxy) while changes stream."""
    coll = mdb.db["ledger"]
    coll.insert_many([{"_id": i, "v": 0} for i in range(300)])
    w = mwarp(config(tmp_path, "batch_size: 50\n"))
    wait_mongo(mdb, w, state_dir)
    assert w.proc is not None
    stop = threading.Event()

    def writer() -> None:
        n = 300
        while not stop.is_set():
            coll.insert_many([{"_id": n + k, "v": k} for k in range(20)])
            coll.update_many({"_id": {"$lt": 100}}, {"$inc": {"v": 1}})
            coll.delete_many({"_id": {"$gte": n, "$lt": n + 3}})
            n += 20
            time.sleep(0.01)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    ended = 0
    try:
        for _ in range(4):
            time.sleep(0.7)
            ended += mdb.dest.kill_sessions(w.proc.pid)
    finally:
        stop.set()
        thread.join()
    assert ended >= 1  # the sessions were there to end
    wait_mongo(mdb, w, state_dir, timeout=90)
    assert w.alive()
    assert "reconnecting" in w.output or "retry" in w.output
    assert w.stop() == 0


@SOURCE_ONLY
def test_checkpoint_advances_while_the_writer_never_pauses(mdb, mwarp, state_dir, tmp_path):
    """The checkpoint is the last applied change's resume token, not only an idle stream's token."""
    coll = mdb.db["busy"]
    coll.insert_many([{"_id": i, "v": i} for i in range(100)])
    # metadata columns: _warp_synced_at tells which rows the restart wrote again
    cfg = config(tmp_path, "batch_size: 100\nmetadata_columns: true\n", latency_ms=200)
    w = mwarp(cfg)
    wait_mongo(mdb, w, state_dir)
    stop = threading.Event()
    written = [100]

    def writer() -> None:  # inserts only, never pausing: every row is written once at the source
        while not stop.is_set():
            n = written[0]
            coll.insert_many([{"_id": n + k, "v": n + k} for k in range(10)])
            written[0] = n + 10

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        seen: set[str] = set()

        def advanced() -> bool:
            seen.add(repr(checkpoint(state_dir, mdb.name)))
            return len(seen) >= 5 and (mdb.pg_count("busy") or 0) >= 2000

        wait_until(advanced, 120, "the checkpoint to move while the writer runs")
        assert thread.is_alive()
        w.kill()
    finally:
        stop.set()
        thread.join()
    present = {r[0] for r in rows(mdb, "busy", "_id")}
    killed_at = mdb.dest.query("SELECT CURRENT_TIMESTAMP(6)")[0][0]  # the destination's clock (UTC for MySQL)
    w2 = mwarp(cfg)
    wait_mongo(mdb, w2, state_dir, timeout=120)
    assert w2.stop() == 0
    assert mdb.pg_count("busy") == written[0]
    rewritten = [
        r[0] for r in rows(mdb, "busy", "_id", "_warp_synced_at") if r[0] in present and r[1] > killed_at
    ]
    # at most the batch whose commit the kill beat to the state file (batch_size 100)
    assert len(rewritten) <= 100, f"{len(rewritten)} of {len(present)} rows were replayed"


# -- documents ------------------------------------------------------------------


@SOURCE_ONLY
def test_document_with_5000_fields(mdb, mwarp, state_dir, tmp_path):
    wide = {"_id": 1, **{f"field_{i:04d}": i for i in range(5000)}}
    mdb.db["wide"].insert_one(wide)
    w = mwarp(config(tmp_path, "max_columns: 300\n"))
    wait_mongo(mdb, w, state_dir)
    mdb.db["wide"].insert_one({"_id": 2, **{f"field_{i:04d}": -i for i in range(5000)}})
    wait_mongo(mdb, w, state_dir)
    # max_columns counts _id: field_0000..field_0298 are columns, the rest is in _warp_extra
    got = [
        (*r[:3], json_value(mdb, r[3]))
        for r in rows(mdb, "wide", "_id", "field_0000", "field_0298", "_warp_extra")
    ]
    assert got[0][:3] == (1, 0, 298)
    assert got[0][3]["field_4999"] == 4999 and got[1][3]["field_0299"] == -299
    assert len(got[1][3]) == 5000 - 299
    assert w.stop() == 0


@SOURCE_ONLY
def test_fifteen_megabyte_document(mdb, mwarp, state_dir, tmp_path):
    big = "x" * (15 * 1024 * 1024)
    mdb.db["blobs"].insert_one({"_id": "snap", "body": big})
    w = mwarp(config(tmp_path))
    wait_mongo(mdb, w, state_dir)
    mdb.db["blobs"].insert_one({"_id": "streamed", "body": big + "y"})
    mdb.db["blobs"].update_one({"_id": "snap"}, {"$set": {"body": "small now"}})
    wait_mongo(mdb, w, state_dir, timeout=90)
    got = dict(mdb.dest.query("SELECT _id, char_length(body) FROM {}", "blobs"))
    assert got == {"snap": 9, "streamed": len(big) + 1}
    assert w.stop() == 0


def test_update_whose_document_was_deleted_before_the_lookup(mdb, mwarp, state_dir, tmp_path):
    coll = mdb.db["items"]
    coll.insert_many([{"_id": i, "v": "old"} for i in range(5)])
    cfg = config(tmp_path)
    w = mwarp(cfg)
    wait_mongo(mdb, w, state_dir)
    assert w.stop() == 0
    # while stopped: by the time the stream looks these updates up, the documents are gone
    coll.update_one({"_id": 1}, {"$set": {"v": "new"}})
    coll.update_one({"_id": 2}, {"$set": {"v": "new"}})
    coll.delete_one({"_id": 1})
    coll.delete_one({"_id": 2})
    coll.insert_one({"_id": 2, "v": "reborn"})
    coll.update_one({"_id": 3}, {"$set": {"v": "new"}})
    w2 = mwarp(cfg)
    wait_mongo(mdb, w2, state_dir)
    assert rows(mdb, "items", "_id", "v") == [(0, "old"), (2, "reborn"), (3, "new"), (4, "old")]
    assert w2.alive()
    assert w2.stop() == 0


def test_one_field_with_different_types_widens_the_column(mdb, mwarp, state_dir, tmp_path):
    coll = mdb.db["mixed"]
    coll.insert_one({"_id": 1, "v": 7})  # int32 -> integer
    w = mwarp(config(tmp_path))
    wait_mongo(mdb, w, state_dir)
    coll.insert_one({"_id": 2, "v": Int64(2**40)})  # -> bigint
    wait_mongo(mdb, w, state_dir)
    coll.insert_one({"_id": 3, "v": 2.5})  # int64 and double -> numeric
    wait_mongo(mdb, w, state_dir)
    coll.insert_one({"_id": 4, "v": "text"})  # -> jsonb
    coll.insert_one({"_id": 5, "v": {"nested": [1, 2]}})
    wait_mongo(mdb, w, state_dir)
    # PostgreSQL jsonb; MySQL json (MariaDB's catalogue says longtext: JSON is its alias)
    json_types = {"postgresql": ("jsonb",), "mysql": ("json", "longtext"), "bigquery": ("json",)}[
        mdb.dest.kind
    ]
    assert dict(mdb.dest.column_types("mixed"))["v"] in json_types
    got = [json_value(mdb, r[0]) for r in rows(mdb, "mixed", "v")]
    assert got == [7, 2**40, 2.5, "text", {"nested": [1, 2]}]
    # every widening is a schema version in the state file, with the source position
    store = StateStore(state_dir)
    try:
        history = [h for h in store.schema_history(mdb.name, "mixed") if h["change"] == "evolve"]
    finally:
        store.close()
    widened = []
    for h in history:
        v = next(c for c in h["columns"] if c["name"] == "v")
        step = (v["kind"], v["bits"])
        if not widened or widened[-1] != step:
            widened.append(step)
    assert widened == [("int", 64), ("decimal", None), ("json", None)], history
    assert all(h["position"] for h in history)
    assert w.stop() == 0


@pytest.mark.parametrize("deletes", ["hard", "soft"])
def test_deletes(mdb, mwarp, state_dir, tmp_path, deletes):
    coll = mdb.db["carts"]
    coll.insert_many([{"_id": i, "n": i} for i in range(10)])
    w = mwarp(config(tmp_path, f"deletes: {deletes}\n"))
    wait_mongo(mdb, w, state_dir, soft_delete=deletes == "soft")
    coll.delete_many({"_id": {"$lt": 4}})
    wait_mongo(mdb, w, state_dir, soft_delete=deletes == "soft")
    total = mdb.pg_count("carts")
    if deletes == "hard":
        assert total == 6
    else:
        assert total == 10
        marked = rows(mdb, "carts", "_id", where="_warp_deleted_at IS NOT NULL")
        assert [r[0] for r in marked] == [0, 1, 2, 3]
    assert w.stop() == 0


def test_hostile_field_and_collection_names(mdb, mwarp, state_dir, tmp_path):
    long_a = "é" * 40 + "a"
    long_b = "é" * 40 + "b"
    doc = {
        "_id": 1,
        "a.b": 1,
        "meta": {"$price": 2, "x.y": 3},  # $ is allowed below the top level (MongoDB 5.0+)
        "with space": 3,
        "select": 4,
        "Ünïcødé": 5,
        long_a: 6,
        long_b: 7,
        'quote"d': 8,
        "a__b": 9,
        "a": {"b": 10},
    }
    coll_name = 'order "lines"; drop table x'
    mdb.db[coll_name].insert_one(doc)
    # names MySQL cannot hold as they are (docs/type-mapping.md, "Names"): renamed there, kept in PostgreSQL
    mdb.db["notes "].insert_one({"_id": 1, "tag🚀": "rocket", "note ": "n"})
    w = mwarp(config(tmp_path, "flatten_depth: 1\n"))
    wait_mongo(mdb, w, state_dir, flatten_depth=1)
    mdb.db[coll_name].insert_one({**doc, "_id": 2, "select": 40})
    wait_mongo(mdb, w, state_dir, flatten_depth=1)
    if mdb.dest.kind == "bigquery":  # letters, digits and underscores only (docs/bigquery.md, "Names")
        cols = mdb.dest.columns(documented_name(coll_name))
        assert all(valid_column_name(c) for c in cols) and len({c.lower() for c in cols}) == len(cols), cols
        assert (
            "select" in cols
            and documented_name("with space") in cols
            and documented_name("meta__x.y") in cols
        )
        assert mdb.dest.tables() == sorted([documented_name(coll_name), documented_name("notes ")])
        notes = documented_name("notes ")
        tag, note = documented_name("tag🚀"), documented_name("note ")
        assert mdb.dest.columns(notes) == ["_id", tag, note]
        assert mdb.dest.query(f"SELECT _id, {tag}, {note} FROM {{}}", notes) == [(1, "rocket", "n")]
        assert w.stop() == 0
        return
    cols = mdb.dest.columns(coll_name)
    for name in ("a.b", "meta__$price", "meta__x.y", "with space", "select", "Ünïcødé", 'quote"d', "a__b"):
        assert name in cols
    # PostgreSQL names hold 63 bytes, MySQL's 64 characters and ignore case
    if mdb.dest.kind == "postgresql":
        assert len(set(cols)) == len(cols) and all(len(c.encode()) <= 63 for c in cols)
    else:
        assert len({c.lower() for c in cols}) == len(cols) and all(len(c) <= 64 for c in cols)
        assert long_a in cols and long_b in cols  # under 64 characters: kept whole
    notes = [t for t in mdb.dest.tables() if t.startswith("notes")]
    expected = ["notes "] if mdb.dest.kind == "postgresql" else ["notes_" + sha1_hex("notes ")]
    assert notes == expected
    names = mdb.dest.columns(notes[0])
    if mdb.dest.kind == "postgresql":
        assert names == ["_id", "tag🚀", "note "]
    else:
        assert names == ["_id", "tag__" + sha1_hex("tag🚀"), "note_" + sha1_hex("note ")]
    assert mdb.dest.query("SELECT * FROM {}", notes[0]) == [(1, "rocket", "n")]
    assert w.stop() == 0


# -- checkpoints and lost positions --------------------------------------------------


@SOURCE_ONLY
def test_quiet_collection_checkpoint_advances(mdb, mwarp, state_dir, tmp_path):
    mdb.db["quiet"].insert_one({"_id": 1})
    cfg = config(tmp_path)
    w = mwarp(cfg)
    wait_mongo(mdb, w, state_dir)
    first = checkpoint(state_dir, mdb.name)
    # writes elsewhere in the cluster move its clock; this database stays quiet
    other = mdb.client[mdb.name + "_other"]
    try:
        for i in range(20):
            other["noise"].insert_one({"i": i})
            time.sleep(0.1)
        wait_until(lambda: checkpoint(state_dir, mdb.name) != first, 30, "the checkpoint to advance")
        time.sleep(1.5)
        assert w.stop() == 0
        if mdb.backend.is_wire:
            # the old position is gone from the oplog; the advanced one still resumes
            mdb.backend.server.trim_oplog(keep=1)
    finally:
        mdb.client.drop_database(mdb.name + "_other")
    mdb.db["quiet"].insert_one({"_id": 2})
    w2 = mwarp(cfg)
    wait_mongo(mdb, w2, state_dir)
    assert "ChangeStreamHistoryLost" not in w2.output
    assert w2.stop() == 0


def _lose_position(m: MongoDatabases, state_dir: str) -> None:
    if m.backend.is_wire:
        m.db["filler"].insert_many([{"i": i} for i in range(5)])
        m.backend.server.trim_oplog(keep=1)
        m.db["filler"].drop()
    else:  # a real oplog never reaches back to 1970
        store = StateStore(state_dir)
        try:
            store.save_checkpoint(m.name, {"cluster_time": [1, 1]})
        finally:
            store.close()


@SOURCE_ONLY
def test_position_lost_fails_with_the_remedy(mdb, mwarp, state_dir, tmp_path):
    mdb.db["t"].insert_one({"_id": 1})
    cfg = config(tmp_path)
    w = mwarp(cfg)
    wait_mongo(mdb, w, state_dir)
    assert w.stop() == 0
    mdb.db["t"].insert_one({"_id": 2})
    _lose_position(mdb, state_dir)
    w2 = mwarp(cfg)
    assert w2.wait(60) == 1
    out = w2.output
    assert "oplog" in out and "on_position_lost: resnapshot" in out, out[-3000:]
    assert "Traceback" not in out


@SOURCE_ONLY
def test_position_lost_resnapshot_copies_again(mdb, mwarp, state_dir, tmp_path):
    mdb.db["t"].insert_one({"_id": 1})
    cfg = config(tmp_path, "on_position_lost: resnapshot\n")
    w = mwarp(cfg)
    wait_mongo(mdb, w, state_dir)
    assert w.stop() == 0
    mdb.db["t"].insert_many([{"_id": 2}, {"_id": 3, "late": True}])
    mdb.db["t"].delete_one({"_id": 1})
    _lose_position(mdb, state_dir)
    w2 = mwarp(cfg)
    wait_mongo(mdb, w2, state_dir)
    assert [r[0] for r in rows(mdb, "t", "_id")] == [2, 3]
    assert "copied again" in w2.output
    assert w2.stop() == 0


# -- the wire test server's fault hooks ---------------------------------------------


@SOURCE_ONLY
def test_dropped_connections_and_elections_resume_without_loss(mdb, mwarp, state_dir, tmp_path):
    if not mdb.backend.is_wire:
        pytest.skip("needs the wire test server's fault hooks (drop_connections, step_down)")
    coll = mdb.db["ledger"]
    coll.insert_many([{"_id": i, "amount": i} for i in range(100)])
    w = mwarp(config(tmp_path))
    wait_mongo(mdb, w, state_dir)
    from pymongo.errors import AutoReconnect

    def retried(fn: Callable[[], Any]) -> None:
        # this test's own client sees the dropped connections too (multi-document writes are not
        # retryable writes); whether or not the attempt landed, the destination must follow the source
        for _ in range(5):
            try:
                fn()
                return
            except AutoReconnect:
                time.sleep(0.2)
        raise AssertionError("the test client could not write")

    for round_ in range(3):
        retried(
            lambda r=round_: coll.insert_many([{"_id": 1000 * (r + 1) + k, "amount": k} for k in range(20)])
        )
        mdb.backend.server.drop_connections()
        retried(lambda: coll.update_many({}, {"$inc": {"amount": 1}}))
        mdb.backend.server.step_down(times=2)
        retried(lambda r=round_: coll.delete_many({"_id": {"$lt": 5 * (r + 1)}}))
    wait_mongo(mdb, w, state_dir, timeout=90)
    assert w.stop() == 0


def test_the_seed_quick_start_command(mongo_backend, tmp_path):
    """The README's quick start, verbatim: MongoDB on localhost:27017, PostgreSQL database warehouse."""
    import subprocess
    import sys

    import psycopg2
    import pymongo

    if not mongo_backend.is_wire:
        pytest.skip("the quick start names localhost:27017, which the wire test server takes here")
    from tests.mongo_wire import MongoTestServer

    try:
        server = MongoTestServer(port=27017).start()
    except OSError:
        pytest.skip("port 27017 is taken on this machine")
    admin = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = 'warehouse'")
        if not cur.fetchone():
            cur.execute("CREATE DATABASE warehouse")
    admin.close()
    ecommerce = pymongo.MongoClient(server.uri)["ecommerce"]
    ecommerce["products"].insert_many(
        [{"_id": i, "name": f"p{i}", "price": Decimal128("1.25")} for i in range(10)]
    )
    ecommerce["orders"].insert_one({"_id": ObjectId(), "lines": [{"sku": "p1", "qty": 2}]})
    ecommerce["temp_tables"].insert_one({"_id": 1})  # not in the whitelist
    quickstart_yaml = os.path.join(
        os.path.dirname(os.path.dirname(__file__)), "etc", "cartridge-warp", "mongodb-quickstart.yaml"
    )
    work = str(tmp_path)
    with open(os.path.join(work, "config.yaml"), "w") as f, open(quickstart_yaml) as src:
        f.write(src.read().replace("port: 8080", f"port: {_free_port()}"))
    env = {**os.environ, "CARTRIDGE_WARP_STATE_DIR": os.path.join(work, "state")}
    proc = subprocess.Popen(
        tied_to_this_process(
            [
                sys.executable,
                "-m",
                "warpd",
                "--mode",
                "single",
                "--source",
                "mongodb://localhost:27017/ecommerce",
                "--destination",
                "postgresql://localhost:5432/warehouse",
                "--schema",
                "products",
                "--config",
                "config.yaml",
            ]
        ),
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wh = psycopg2.connect("postgresql://localhost:5432/warehouse")
    wh.autocommit = True
    try:

        def copied() -> bool:
            with wh.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'products' "
                    "AND table_name <> '_warp_checkpoints'"  # the fence of streamed batches
                )
                if cur.fetchone()[0] < 2:
                    return False
                cur.execute("SELECT count(*) FROM products.products")
                return cur.fetchone()[0] == 10

        wait_until(copied, 60, "the quick start to copy the products")
        ecommerce["products"].insert_one({"_id": 10, "name": "p10", "price": Decimal128("2.50")})

        def streamed() -> bool:
            with wh.cursor() as cur:
                cur.execute('SELECT price FROM products.products WHERE "_id" = 10')
                return cur.fetchone() == (Decimal("2.50"),)

        wait_until(streamed, 60, "the new product to arrive")
        with wh.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'products' "
                "AND table_name <> '_warp_checkpoints' ORDER BY 1"
            )
            assert [r[0] for r in cur.fetchall()] == ["orders", "products"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
        with wh.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS products CASCADE")
        wh.close()
        server.stop()
    assert proc.returncode == 0, out[-3000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("split", ["auto", "false"])
@SOURCE_ONLY
def test_change_event_over_16_mb(mdb, mwarp, state_dir, tmp_path, split):
    """A 15 MB document plus a 6 MB update description: split into fragments, or the documented fallback."""
    coll = mdb.db["large"]
    coll.insert_one({"_id": 1, "a": "a" * (9 * 1024 * 1024)})
    w = mwarp(config_with_source(tmp_path, f"split_large_events: {split}"))
    wait_mongo(mdb, w, state_dir)
    coll.update_one({"_id": 1}, {"$set": {"b": "b" * (6 * 1024 * 1024)}})
    coll.insert_one({"_id": 2, "after": "the large event"})
    wait_mongo(mdb, w, state_dir, timeout=90)
    got = mdb.dest.query("SELECT _id, char_length(a), char_length(b) FROM {} ORDER BY 1", "large")
    assert got == [(1, 9 * 1024 * 1024, 6 * 1024 * 1024), (2, None, None)]
    if split == "false":
        assert "could not be streamed whole" in w.output
    assert w.stop() == 0


def config_with_source(tmp_path: Any, source_options: str, body: str = "") -> str:
    return write_config(
        tmp_path,
        f"source: {{connection_string: 'mongodb://placeholder/x', {source_options}}}\n"
        "destination: {connection_string: 'postgresql://placeholder/x'}\n"
        "max_batch_latency_ms: 50\n"
        "retry: {max_attempts: 5, initial_delay_seconds: 0.2, max_delay_seconds: 1}\n" + body,
    )


@SOURCE_ONLY
def test_post_images_when_the_collection_has_them(mdb, mwarp, state_dir, tmp_path):
    mdb.db.create_collection("audited")
    mdb.db.command("collMod", "audited", changeStreamPreAndPostImages={"enabled": True})
    coll = mdb.db["audited"]
    coll.insert_many([{"_id": i, "state": "new"} for i in range(5)])
    w = mwarp(
        config_with_source(
            tmp_path, "full_document: whenAvailable, full_document_before_change: whenAvailable"
        )
    )
    wait_mongo(mdb, w, state_dir)
    coll.update_many({"_id": {"$lt": 3}}, {"$set": {"state": "paid"}})
    coll.delete_one({"_id": 4})
    wait_mongo(mdb, w, state_dir)
    assert [r[0] for r in rows(mdb, "audited", "state")] == ["paid", "paid", "paid", "new"]
    assert w.stop() == 0


def test_value_the_destination_cannot_store_goes_to_dead_letters(mdb, mwarp, state_dir, tmp_path):
    """PostgreSQL text cannot hold NUL, MySQL's DOUBLE cannot hold NaN: that row is dead-lettered, the rest goes on."""
    coll = mdb.db["notes"]
    coll.insert_one({"_id": 1, "text": "fine", "x": 1.5})
    w = mwarp(config(tmp_path))
    wait_mongo(mdb, w, state_dir)
    coll.insert_one({"_id": 2, "text": "nul \x00 inside", "x": 2.5})
    coll.insert_one({"_id": 3, "text": "after", "x": float("nan")})
    coll.insert_one({"_id": 4, "text": "last", "x": 4.5})
    if mdb.dest.kind == "bigquery":  # STRING holds NUL and FLOAT64 NaN; BIGNUMERIC holds no NaN
        coll.insert_one({"_id": 5, "text": "nan decimal", "d": Decimal128("NaN")})
        coll.insert_one({"_id": 6, "text": "final", "x": 6.5})
    refused, why = {"postgresql": (2, ("NUL", "0x00")), "mysql": (3, ("NaN",)), "bigquery": (5, ("NaN",))}[
        mdb.dest.kind
    ]
    total = 5 if mdb.dest.kind == "bigquery" else 3
    wait_until(
        lambda: mdb.pg_count("notes") == total and _dead_letters(state_dir, mdb.name), 30, "the dead letter"
    )
    letters = _dead_letters(state_dir, mdb.name)
    assert [(d.table, d.row.get("_id")) for d in letters] == [("notes", refused)]
    assert any(word in letters[0].reason for word in why), letters[0].reason
    ids = (1, 2, 3, 4, 5, 6) if mdb.dest.kind == "bigquery" else (1, 2, 3, 4)
    assert [r[0] for r in rows(mdb, "notes", "_id")] == [i for i in ids if i != refused]
    if mdb.dest.kind == "bigquery":  # both held exactly
        assert mdb.dest.query("SELECT text FROM {} WHERE _id = 2", "notes") == [("nul \x00 inside",)]
        assert math.isnan(mdb.dest.query("SELECT x FROM {} WHERE _id = 3", "notes")[0][0])
    elif mdb.dest.kind == "mysql":  # MySQL text holds NUL: stored exactly
        assert mdb.dest.query("SELECT text FROM {} WHERE _id = 2", "notes") == [("nul \x00 inside",)]
    else:  # PostgreSQL's double precision holds NaN
        assert math.isnan(mdb.dest.query("SELECT x FROM {} WHERE _id = 3", "notes")[0][0])
    assert w.alive()
    assert w.stop() == 0


# the doubles whose plain decimal is long (1 and 300 zeros, 0.000...5), the extremes, and ones with
# 17 significant digits; each arrives as the same double, nested or not
EXTREME_DOUBLES = [
    1e300,
    1e-300,
    5e-324,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    2.2250738585072014e-308,
    -1e300,
    1e20,
    0.1 + 0.2,
]


def _same_numbers(got: Any, expected: Any) -> bool:
    """``got`` (a JSON value read back) holds ``expected``: each double as the same double (a
    destination may read 1e300 back as the integer 10**300, PostgreSQL's jsonb does), each integer
    exactly, everything else equal."""
    if isinstance(expected, float):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and float(got) == expected
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and got.keys() == expected.keys()
            and all(_same_numbers(got[k], v) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(got) == len(expected)
            and all(_same_numbers(g, e) for g, e in zip(got, expected, strict=True))
        )
    if isinstance(expected, int) and not isinstance(expected, bool):  # Int64 too: exact, not a double
        return type(got) is int and got == expected
    return type(got) is type(expected) and got == expected


def test_extreme_doubles_inside_documents_and_arrays_arrive_exact(mdb, mwarp, state_dir, tmp_path):
    """A double nested in an embedded document or an array is JSON at the destination, and must not be
    dead-lettered for its spelling: BigQuery got 1e300 as 1 and 300 zeros, which PARSE_JSON refused
    (docs/bigquery.md, "Type mapping").  Integers and Decimal128 beside it stay exact."""
    coll = mdb.db["measures"]

    def doc(i: int, v: float) -> dict[str, Any]:
        return {
            "_id": i,
            "x": v,  # a FLOAT column
            "sub": {"v": v, "deeper": {"w": -v, "n": Int64(2**63 - 1)}},
            "arr": [v, {"k": v}, Int64(-(2**63)), 2**31 - 1, Decimal128("1E+300")],
            "y": v,  # a FLOAT column until a string arrives: then JSON, these doubles converted
        }

    docs = [doc(i, v) for i, v in enumerate(EXTREME_DOUBLES)]
    coll.insert_many(docs[:5])  # copied by the snapshot
    w = mwarp(config(tmp_path))
    wait_mongo(mdb, w, state_dir)
    coll.insert_many(docs[5:])  # streamed
    coll.insert_one({"_id": 99, "y": "text"})
    wait_until(
        lambda: mdb.pg_count("measures") == len(docs) + 1 or _dead_letters(state_dir, mdb.name),
        120,
        "every document",
    )
    assert [(d.row.get("_id"), d.reason) for d in _dead_letters(state_dir, mdb.name)] == []
    wait_mongo(mdb, w, state_dir)
    got = rows(mdb, "measures", "_id", "x", "sub", "arr", "y")
    assert [r[0] for r in got] == [*range(len(docs)), 99]
    for (_id, x, sub, arr, y), expected in zip(got, docs, strict=False):
        assert x == expected["x"], (_id, x)
        assert _same_numbers(json_value(mdb, sub), expected["sub"]), (_id, sub)
        decimal = {"$numberDecimal": "1E+300"}  # Extended JSON: exact, not a double
        arr_expected = [*expected["arr"][:2], -(2**63), 2**31 - 1, decimal]
        assert _same_numbers(json_value(mdb, arr), arr_expected), (_id, arr)
        assert _same_numbers(json_value(mdb, y), expected["y"]), (_id, y)
    assert json_value(mdb, got[-1][4]) == "text"
    assert w.stop() == 0


def test_null_id_documents_go_to_dead_letters_in_snapshot_and_stream(mdb, mwarp, state_dir, tmp_path):
    """MongoDB allows one document with _id null per collection; a primary key cannot hold it."""
    mdb.db["a"].insert_many([{"_id": None, "v": "snapshot"}, {"_id": 1, "v": "x"}])
    w = mwarp(config(tmp_path))
    wait_until(lambda: mdb.pg_count("a") == 1, 60, "the copy of the storable document")
    mdb.db["b"].insert_one({"_id": 1})
    mdb.db["b"].insert_one({"_id": None, "v": "streamed"})
    mdb.db["b"].insert_one({"_id": 2})
    # (a collection created while streaming is copied, and the stream then replays its inserts: the
    # same document may be refused twice, once from each: MongoDB has no precedes() to skip the replay)
    wait_until(lambda: mdb.pg_count("b") == 2 and len(_dead_letters(state_dir, mdb.name)) >= 2, 60, "both")
    letters = sorted(_dead_letters(state_dir, mdb.name), key=lambda d: d.table)
    assert sorted({(d.table, d.row.get("v")) for d in letters}) == [("a", "snapshot"), ("b", "streamed")]
    assert all("_id" in d.reason for d in letters), [d.reason for d in letters]
    assert w.alive()
    assert w.stop() == 0


@SOURCE_ONLY
def test_row_over_the_destination_row_size_limit_goes_to_dead_letters(mdb, mwarp, state_dir, tmp_path):
    """Short strings in many columns: over PostgreSQL's 8,160 bytes (after TOAST) or InnoDB's 8,126."""
    # PostgreSQL: 500 values of 41 bytes (random: it compresses before it refuses) leave 9 KB of TOAST
    # pointers and short values; MySQL: 250 values of 40 bytes, which InnoDB always keeps in the row
    fields, make = (
        (500, lambda: os.urandom(20).hex() + "z")
        if mdb.dest.kind == "postgresql"
        else (250, lambda: "x" * 40)
    )
    coll = mdb.db["wide"]
    coll.insert_one({"_id": 1, **{f"f{i:03d}": "s" for i in range(fields)}})
    w = mwarp(config(tmp_path, "max_columns: 600\n"))
    wait_mongo(mdb, w, state_dir)
    coll.insert_one({"_id": 2, **{f"f{i:03d}": make() for i in range(fields)}})
    coll.insert_one({"_id": 3, "f000": "after"})
    wait_until(
        lambda: mdb.pg_count("wide") == 2 and _dead_letters(state_dir, mdb.name), 60, "the dead letter"
    )
    letters = _dead_letters(state_dir, mdb.name)
    assert [(d.table, d.row.get("_id")) for d in letters] == [("wide", 2)]
    assert "too big" in letters[0].reason or "too large" in letters[0].reason, letters[0].reason
    assert rows(mdb, "wide", "_id", "f000") == [(1, "s"), (3, "after")]
    assert w.alive()
    assert w.stop() == 0


def test_more_text_columns_than_the_destination_can_create_stop_with_the_remedy(
    mdb, mwarp, state_dir, tmp_path
):
    """500 string fields and max_columns 600: PostgreSQL holds 1,600 columns, InnoDB about 400 TEXT ones."""
    mdb.db["wide"].insert_one({"_id": 1, **{f"f{i:03d}": "s" for i in range(500)}})
    w = mwarp(config(tmp_path, "max_columns: 600\n"))
    if mdb.dest.kind in ("postgresql", "bigquery"):  # 1,600 and 10,000 columns
        wait_mongo(mdb, w, state_dir)
        assert len(mdb.dest.columns("wide")) == 501
        assert w.stop() == 0
        return
    assert w.wait(60) == 1
    out = w.output
    assert "refused CREATE TABLE" in out and "lower max_columns" in out, out[-3000:]
    assert "internal error" not in out and "Traceback" not in out
    assert mdb.dest.count("wide") is None  # nothing half-made


def _dead_letters(state_dir: str, name: str) -> list[Any]:
    store = StateStore(state_dir)
    try:
        return store.dead_letters(name)
    finally:
        store.close()


def test_srv_uri_with_credentials_and_tls_is_accepted_and_never_printed(tmp_path):
    """The seed's production form: mongodb+srv:// with a password and TLS options."""
    import subprocess
    import sys

    uri = "mongodb+srv://warp:s3cr3t-pw@cluster0.example.invalid/prod?tls=true&authSource=admin&connectTimeoutMS=2000"
    cfg = write_config(
        tmp_path,
        "source: {connection_string: 'mongodb://placeholder/x'}\n"
        "destination: {connection_string: 'postgresql://localhost/warehouse'}\n"
        "retry: {max_attempts: 2, initial_delay_seconds: 0.1, max_delay_seconds: 0.2}\n"
        "schemas: [{name: prod}]\n",
    )
    env = {**os.environ, "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING": uri}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    check = subprocess.run(
        [sys.executable, "-m", "warpd", "--config", cfg, "--validate-config"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert "mongodb+srv://warp:***@cluster0.example.invalid/prod" in check.stdout
    run = subprocess.run(
        [sys.executable, "-m", "warpd", "--config", cfg, "--state-dir", str(tmp_path / "state")],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "s3cr3t-pw" not in out
    assert "cluster0.example.invalid" in out and "Traceback" not in out


def test_new_renamed_dropped_collections_and_drop_database(mdb, mwarp, state_dir, tmp_path):
    mdb.db["a"].insert_many([{"_id": i, "v": i} for i in range(5)])
    mdb.db["b"].insert_many([{"_id": i} for i in range(3)])
    w = mwarp(config(tmp_path))
    wait_mongo(mdb, w, state_dir)
    mdb.db["c"].insert_many([{"_id": i, "new": True} for i in range(4)])  # created while streaming
    mdb.db["a"].rename("a2")  # rename within the database
    mdb.db["a2"].insert_one({"_id": 99, "v": 99})
    mdb.db["b"].drop()
    wait_mongo(mdb, w, state_dir)

    def tables() -> list[str]:
        return mdb.dest.tables()

    wait_until(lambda: tables() == ["a2", "c"], 30, "a renamed, b dropped, c created")
    assert [r[0] for r in rows(mdb, "a2", "_id")] == [0, 1, 2, 3, 4, 99]
    mdb.client.drop_database(mdb.name)
    wait_until(lambda: tables() == [], 30, "dropDatabase to drop every table")
    mdb.db["d"].insert_one({"_id": 1, "after": "dropDatabase"})  # the stream goes on after the invalidate
    wait_mongo(mdb, w, state_dir)
    assert tables() == ["d"]
    assert w.stop() == 0


def test_whitelist_and_metadata_columns_per_collection(mdb, mwarp, state_dir, tmp_path):
    for name in ("kept", "audited", "skipped"):
        mdb.db[name].insert_many([{"_id": i} for i in range(3)])
    body = (
        "schemas:\n"
        f"  - name: {mdb.name}\n"
        "    table_blacklist: [skipped]\n"
        "    tables:\n"
        "      - {name: audited, metadata_columns: true, batch_size: 2, max_parallel_streams: 3}\n"
    )
    w = mwarp(config(tmp_path, body))
    wait_until(lambda: mdb.pg_count("audited") == 3 and mdb.pg_count("kept") == 3, 60, "the copies")
    mdb.db["audited"].update_one({"_id": 1}, {"$set": {"x": 1}})
    mdb.db["audited"].insert_one({"_id": 7})
    mdb.db["skipped"].insert_one({"_id": 9})

    def ops() -> list[tuple[Any, ...]]:
        return [
            (i, op, ts is not None)
            for i, op, ts in rows(mdb, "audited", "_id", "_warp_op", "_warp_source_ts")
        ]

    wait_until(lambda: len(ops()) == 4 and ops()[1][1] == "update", 30, "the streamed changes")
    assert ops() == [(0, "snapshot", False), (1, "update", True), (2, "snapshot", False), (7, "insert", True)]
    assert mdb.pg_count("skipped") is None
    assert "_warp_op" not in mdb.dest.columns("kept")
    assert w.stop() == 0


def test_snapshot_of_mixed_id_types_in_small_chunks(mdb, mwarp, state_dir, tmp_path):
    """_ids of several BSON types: the keyset copy walks each type bracket and misses none."""
    import uuid as uuid_

    ids: list[Any] = [*range(7), *(f"s{i}" for i in range(7)), *(ObjectId() for _ in range(7))]
    ids += [Binary.from_uuid(uuid_.uuid4()) for _ in range(3)] + [{"k": i} for i in range(3)]
    mdb.db["mixed_ids"].insert_many([{"_id": i, "n": n} for n, i in enumerate(ids)])
    w = mwarp(config(tmp_path, "snapshot_chunk_size: 4\n"))
    wait_mongo(mdb, w, state_dir)
    assert mdb.pg_count("mixed_ids") == len(ids)
    assert w.stop() == 0


def test_id_widened_into_json_while_streaming_stays_the_primary_key(mdb, mwarp, state_dir, tmp_path):
    """_id int -> string and document ids: one key column still (MySQL: exact JSON text, docs/type-mapping.md)."""
    coll = mdb.db["keys"]
    coll.insert_many([{"_id": i, "n": i} for i in range(3)])
    w = mwarp(config(tmp_path))
    wait_mongo(mdb, w, state_dir)
    coll.insert_one({"_id": "s", "n": 10})
    coll.insert_one({"_id": {"k": 1}, "n": 11})
    wait_mongo(mdb, w, state_dir)
    coll.update_one({"_id": 1}, {"$set": {"n": 100}})  # after the conversion, the key still matches
    coll.delete_one({"_id": "s"})
    coll.insert_one({"_id": {"b": 1, "a": 2}, "n": 12})
    wait_mongo(mdb, w, state_dir)

    def shown(value: Any) -> str:  # BigQuery promises no order of an object's keys: compared sorted
        if mdb.dest.kind == "bigquery" and isinstance(value, dict):
            value = dict(sorted(value.items()))
        return repr(value)

    got = sorted((shown(mdb.dest.json(i)), n) for i, n in mdb.dest.query("SELECT _id, n FROM {}", "keys"))
    # MySQL keeps the key's JSON text as MongoDB wrote it; jsonb orders an object's keys
    last = "{'b': 1, 'a': 2}" if mdb.dest.kind == "mysql" else "{'a': 2, 'b': 1}"
    assert got == sorted([("0", 0), ("1", 100), ("2", 2), ("{'k': 1}", 11), (last, 12)]), got
    if mdb.dest.kind == "bigquery":  # no primary key: the merge keeps _id unique; JSON cannot cluster
        assert dict(mdb.dest.column_types("keys"))["_id"] == "json"
        for doc in ({"_id": "x" * 800, "n": 13}, {"_id": "after", "n": 14}):
            coll.insert_one(doc)
        wait_mongo(mdb, w, state_dir)
        assert mdb.pg_count("keys") == 7
        assert w.stop() == 0
        return
    key = mdb.dest.query(
        "SELECT kcu.column_name FROM information_schema.table_constraints tc "
        "JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name "
        "AND kcu.table_schema = tc.table_schema AND kcu.table_name = tc.table_name "
        "WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = %s AND tc.table_name = 'keys'",
        args=(mdb.dest_schema,),
    )
    assert [r[0] for r in key] == ["_id"]
    # an _id longer than an indexable key: PostgreSQL keeps it, MySQL refuses it whole (never cut)
    long_id = "x" * 800
    coll.insert_one({"_id": long_id, "n": 13})
    coll.insert_one({"_id": "after", "n": 14})
    if mdb.dest.kind == "mysql":
        assert dict(mdb.dest.column_types("keys"))["_id"] == "varchar"
        wait_until(lambda: _dead_letters(state_dir, mdb.name), 30, "the dead letter")
        wait_until(lambda: mdb.pg_count("keys") == 6, 30, "the row after it")
        letters = _dead_letters(state_dir, mdb.name)
        assert [(d.table, d.row.get("n")) for d in letters] == [("keys", 13)]
        assert "'_id'" in letters[0].reason and "does not fit" in letters[0].reason, letters[0].reason
        assert not mdb.dest.query("SELECT 1 FROM {} WHERE n = 13", "keys")
    else:
        wait_mongo(mdb, w, state_dir)
        assert mdb.pg_count("keys") == 7
    assert w.alive()
    assert w.stop() == 0


@SOURCE_ONLY
def test_drop_and_rename_that_raced_a_copy_settle_by_what_exists_now(mdb):
    """A copy made after a drop/rename event (the event replays later) must not hide the event's effect.

    Checked on the events the source hands the engine (a race with a copy is not reproducible end
    to end): each is what the engine then does to the destination.
    """
    from bson import Timestamp

    from warpd.connectors.base import SchemaOpKind
    from warpd.connectors.mongodb.source import MongoSource

    mdb.db["recreated"].insert_one({"_id": 1})
    mdb.db["renamed_to"].insert_one({"_id": 1})
    source = MongoSource(mdb.source_uri, mdb.name, mdb.name, {})
    try:
        shape = source.describe("recreated")
        later = (2**31 - 1, 0)  # every copy below happened after the events
        source.copied_at.update({"gone": later, "recreated": later, "renamed_from": later})
        tables = {name: shape for name in ("gone", "recreated", "renamed_from")}

        def events(op: str, coll: str, **extra: Any) -> list[tuple[str, str]]:
            change = {"_id": {"_data": "00"}, "operationType": op, "clusterTime": Timestamp(1, 1)}
            change.update(ns={"db": mdb.name, "coll": coll}, **extra)
            out = source.change_events(change, {"token": None}, {"token": None}, tables, lambda _t: True)
            return [(e.kind.value, e.table) for e in out if hasattr(e, "kind")]

        # dropped and never re-created: the copy found nothing, so the drop still applies
        assert events("drop", "gone") == [("drop_table", "gone")]
        # dropped, re-created and copied after: the copy is the truth, nothing to do
        assert events("drop", "recreated") == []
        # renamed while its copy ran: the old table goes, the new one is copied
        to = {"db": mdb.name, "coll": "renamed_to"}
        assert events("rename", "renamed_from", to=to) == [
            (SchemaOpKind.DROP_TABLE.value, "renamed_from"),
            (SchemaOpKind.RESYNC_TABLE.value, "renamed_to"),
        ]
    finally:
        source.close()


@SOURCE_ONLY
def test_large_documents_bound_snapshot_chunks_and_stream_batches_by_bytes(mdb, mwarp, state_dir, tmp_path):
    """snapshot_chunk_size and batch_size count documents; 10 MB documents must not fill memory."""
    from warpd.connectors.mongodb.source import CHUNK_BYTES, MongoSource

    blob = "x" * (10 * 1024 * 1024)
    for i in range(10):
        mdb.db["big"].insert_one({"_id": i, "blob": blob})
    source = MongoSource(mdb.source_uri, mdb.name, mdb.name, {})
    try:
        sizes = [len(c.rows) for c in source.snapshot(source.describe("big"), None, 20_000)]
    finally:
        source.close()
    assert sum(sizes) == 10
    assert max(sizes) <= CHUNK_BYTES // len(blob) + 1, sizes  # about 64 MB a chunk, not all ten

    # streaming: batch_size 1000 and a minute of batch latency, yet the first ~64 MB apply at once
    w = mwarp(config(tmp_path, "batch_size: 1000\n", latency_ms=60_000))
    wait_until(lambda: mdb.pg_count("big") == 10, 60, "the copy")
    for i in range(10, 20):
        mdb.db["big"].insert_one({"_id": i, "blob": blob})
    wait_until(
        lambda: (mdb.pg_count("big") or 0) >= 16, 40, "a batch cut by its size, long before the latency"
    )
    assert w.stop() == 0


@SOURCE_ONLY
def test_snapshot_stopped_midway_resumes_at_its_last_chunk(mdb, mwarp, state_dir, tmp_path):
    mdb.db["many"].insert_many([{"_id": ObjectId(), "i": i, "pad": "p" * 200} for i in range(10_000)])
    cfg = config(tmp_path, "snapshot_chunk_size: 500\n")
    w = mwarp(cfg)

    def progress() -> int:
        store = StateStore(state_dir)
        try:
            prog = store.snapshot_progress(mdb.name).get("many")
            return prog.rows_copied if prog is not None else 0
        finally:
            store.close()

    wait_until(lambda: progress() >= 1_000, 60, "part of the copy")
    assert w.stop() == 0
    stopped_at = progress()
    assert 0 < stopped_at < 10_000, stopped_at
    w2 = mwarp(cfg)
    wait_mongo(mdb, w2, state_dir, timeout=120)
    assert w2.stop() == 0
    # the second run copied only what was left: "done, 10,000 rows (N in ...)" with N = the rest
    assert f"done, 10,000 rows ({10_000 - stopped_at:,} in" in w2.output, w2.output[-2000:]


@SOURCE_ONLY
def test_position_lost_while_streaming_resnapshots_without_a_restart(mdb, mwarp, state_dir, tmp_path):
    if not mdb.backend.is_wire:
        pytest.skip("needs the wire test server's trim_oplog")
    mdb.db["t"].insert_many([{"_id": i} for i in range(5)])
    w = mwarp(config(tmp_path, "on_position_lost: resnapshot\n"))
    wait_mongo(mdb, w, state_dir)
    assert w.proc is not None
    w.proc.send_signal(signal.SIGSTOP)  # the process falls behind (a long pause, a slow destination) ...
    try:
        wait_stopped(w.proc.pid)
        time.sleep(1.0)  # a getMore already waiting on the server returns (empty) before the writes below
        mdb.db["t"].insert_one({"_id": 5})
        mdb.db["t"].delete_one({"_id": 0})
        mdb.db["t"].insert_one({"_id": 6})
        mdb.backend.server.trim_oplog(keep=1)  # ... and the oplog rolls over changes it has not read
    finally:
        w.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: "copied again" in w.output, 60, "the schema to be copied again")
    wait_mongo(mdb, w, state_dir)
    assert [r[0] for r in rows(mdb, "t", "_id")] == [1, 2, 3, 4, 5, 6]
    assert w.alive()
    assert w.stop() == 0
