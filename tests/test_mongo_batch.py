"""mode: batch with a MongoDB source (docs/batch-mode.md, "MongoDB"): incremental runs by a date, an
ObjectId or a timestamp ``cursor_field``, the safety lag, documents without a usable cursor value, a kill in
the middle of a run, full refreshes and key scans that drop deleted documents; against the wire test
server and PostgreSQL. Fields that need a wider column past the sample run against PostgreSQL and MariaDB
too, and against the SQLite example plugin, which cannot widen a column into JSON in place."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from bson.timestamp import Timestamp
from conftest import ROOT, Warp, wait_until
from test_connector_plugin import install
from test_mongo_replication import config, config_with_source, wait_mongo

from tests.mongo_support import Backend, MongoDatabases, backend, dest_rows, json_value
from warpd.errors import FatalError
from warpd.state.store import StateStore

pytestmark = pytest.mark.mongodb

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
S0 = int(T0.timestamp())


@pytest.fixture(scope="module")
def mongo_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from backend("wire", request)


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

    def make(path: str) -> Warp:
        w = Warp(mdb, state_dir, path, [], {})  # type: ignore[arg-type]  # same attributes
        started.append(w)
        return w.start()

    yield make
    for w in started:
        if w.alive():
            w.kill()


def batch(
    tmp_path: Any, name: str, tables: str, every: str = "0.5s", extra: str = "", source: str = ""
) -> str:
    if source:
        return config_with_source(
            tmp_path,
            source,
            f"schemas:\n  - name: {name}\n    mode: batch\n    schedule: {{every: {every}}}\n{extra}"
            f"    tables:\n{tables}",
        )
    return config(
        tmp_path,
        f"schemas:\n  - name: {name}\n    mode: batch\n    schedule: {{every: {every}}}\n{extra}"
        f"    tables:\n{tables}",
    )


def marks(state_dir: str, schema: str) -> dict[str, Any]:
    if not os.path.exists(os.path.join(state_dir, "state.db")):
        return {}
    try:
        store = StateStore(state_dir, read_only=True)
    except FatalError:  # the process is still creating it (its migrations not all applied)
        return {}
    try:
        return store.batch_tables(schema)
    finally:
        store.close()


def sync_now(state_dir: str, schema: str, table: str) -> dict[str, Any]:
    """Run ``table`` now, as ``warpctl sync SCHEMA.TABLE`` asks a running schema (a request in its state
    file), and return the run's result (``message``, ``rows`` moved)."""
    store = StateStore(state_dir)
    try:
        request = store.add_request(schema, "sync", {"table": table})

        def taken() -> bool:
            req = store.request(request)
            return req is not None and req.status != "pending"

        wait_until(taken, 30, f"the requested run of {table}")
        done = store.request(request)
    finally:
        store.close()
    assert done is not None and done.status == "done", done
    assert done.result is not None
    return done.result


def oid(second: int, n: int = 0) -> ObjectId:
    """An ObjectId made in ``second`` (Unix time), ``n`` in its other eight bytes."""
    return ObjectId(second.to_bytes(4, "big") + n.to_bytes(8, "big"))


def ids(m: MongoDatabases, table: str) -> list[Any]:
    return [r[0] for r in dest_rows(m, table, "_id")]


INCREMENTAL = "      - name: items\n        cursor_field: updated_at\n        safety_lag: 1h\n"


def test_incremental_by_a_date_cursor_field_follows_inserts_and_updates(mdb, mwarp, state_dir, tmp_path):
    items = mdb.db["items"]
    items.insert_many(
        [{"_id": i, "v": f"v{i}", "updated_at": T0 + dt.timedelta(seconds=i)} for i in range(300)]
    )
    w = mwarp(batch(tmp_path, mdb.name, INCREMENTAL, extra="    snapshot_chunk_size: 64\n"))
    wait_mongo(mdb, w, state_dir, 30)
    # each run reads again from the mark minus the lag (all of it here), so the mark is a date of this data
    mark = marks(state_dir, mdb.name)["items"].mark
    assert mark["column"] == "updated_at" and mark["cursor"]["$date"].startswith("2026-01-01T12:0")
    assert "replica set" not in w.output  # a batch schema takes no change-stream position

    later = T0 + dt.timedelta(hours=2)
    items.update_many({"_id": {"$lt": 10}}, {"$set": {"v": "changed", "updated_at": later}})
    # a new field in an updated document: the destination table gets the column
    items.insert_one({"_id": 1000, "v": "new", "qty": 7, "updated_at": later})
    wait_mongo(mdb, w, state_dir, 30)
    rows = dest_rows(mdb, "items", "_id", "v", "qty", where='"_id" < 10 OR "_id" = 1000')
    assert rows == [*((i, "changed", None) for i in range(10)), (1000, "new", 7)]
    assert w.stop() == 0


def test_a_late_write_within_the_safety_lag_is_picked_up_and_one_older_is_not(
    mdb, mwarp, state_dir, tmp_path
):
    items = mdb.db["items"]
    items.insert_one({"_id": 1, "v": "first", "updated_at": T0})
    w = mwarp(batch(tmp_path, mdb.name, INCREMENTAL))
    wait_until(lambda: mdb.pg_count("items") == 1, 30, "the first run")
    items.insert_one({"_id": 2, "v": "late", "updated_at": T0 - dt.timedelta(minutes=30)})
    items.insert_one({"_id": 3, "v": "too late", "updated_at": T0 - dt.timedelta(minutes=90)})
    wait_until(lambda: mdb.pg_count("items") == 2, 30, "the late document")
    time.sleep(1.5)  # more runs
    assert ids(mdb, "items") == [1, 2]
    assert w.stop() == 0


def test_documents_without_a_date_in_the_cursor_field_stop_the_run_with_the_fix(
    mdb, mwarp, state_dir, tmp_path
):
    items = mdb.db["items"]
    items.insert_many([{"_id": i, "updated_at": T0} for i in range(5)])
    w = mwarp(batch(tmp_path, mdb.name, INCREMENTAL))
    wait_mongo(mdb, w, state_dir, 30)
    # written after the shape was known (dates): a string is refused by the count, like a missing field
    items.insert_many([{"_id": 10}, {"_id": 11, "updated_at": None}, {"_id": 12, "updated_at": "2026-01-01"}])
    assert w.wait(30) == 1
    assert "3 document(s) have no date in cursor_field 'updated_at'" in w.output
    assert "e.g. _id 10, 11, 12" in w.output and "sync: full_refresh" in w.output
    state = marks(state_dir, mdb.name)["items"]
    assert state.run_status == "failed"
    assert mdb.pg_count("items") == 5, "nothing more is written while documents would be skipped"

    # the documents fixed, the next start syncs them all
    items.update_many({"_id": {"$gte": 10}}, {"$set": {"updated_at": T0}})
    w = mwarp(batch(tmp_path, mdb.name, INCREMENTAL))
    wait_mongo(mdb, w, state_dir, 30)
    assert w.stop() == 0


def test_mixed_bson_types_in_the_cursor_field_are_refused(mdb, mwarp, state_dir, tmp_path):
    mdb.db["items"].insert_many([{"_id": 1, "updated_at": T0}, {"_id": 2, "updated_at": "2026-01-01"}])
    w = mwarp(batch(tmp_path, mdb.name, INCREMENTAL, every="1h"))
    assert w.wait(30) == 1
    assert "cursor_field 'updated_at' holds values of several BSON types (date, string)" in w.output


def test_a_kill_during_a_run_resumes_without_loss_or_duplicates(mdb, mwarp, state_dir, tmp_path):
    rows = 2000
    mdb.db["items"].insert_many(
        [{"_id": i, "v": f"value {i}", "updated_at": T0 + dt.timedelta(milliseconds=i)} for i in range(rows)]
    )
    path = batch(tmp_path, mdb.name, INCREMENTAL, every="1h", extra="    snapshot_chunk_size: 50\n")
    w = mwarp(path)

    def partway() -> bool:
        state = marks(state_dir, mdb.name).get("items")
        return state is not None and 300 <= state.rows_moved < rows

    wait_until(partway, 30, "the run to be part way", interval=0.02)
    w.kill()
    assert 0 < (mdb.pg_count("items") or 0) < rows
    w = mwarp(path)  # the unfinished run starts again at once
    wait_mongo(mdb, w, state_dir, 30)
    assert mdb.pg_count("items") == rows  # the key is _id: no duplicate can exist, and none is missing
    assert marks(state_dir, mdb.name)["items"].mark["cursor"] == {"$date": "2026-01-01T12:00:01.999Z"}
    assert w.stop() == 0


def test_a_full_refresh_drops_deleted_documents_and_takes_new_fields(mdb, mwarp, state_dir, tmp_path):
    ref = mdb.db["ref"]
    ref.insert_many([{"_id": f"c{i}", "label": f"label {i}"} for i in range(50)])
    w = mwarp(batch(tmp_path, mdb.name, "      - name: ref\n        sync: full_refresh\n"))
    wait_mongo(mdb, w, state_dir, 30)
    ref.delete_many({"_id": {"$in": ["c1", "c2"]}})
    ref.update_one({"_id": "c3"}, {"$set": {"label": "relabelled", "extra": 1.5}})
    wait_mongo(mdb, w, state_dir, 30)
    assert mdb.pg_count("ref") == 48
    assert dest_rows(mdb, "ref", "label", "extra", where="\"_id\" = 'c3'") == [("relabelled", 1.5)]
    # (a stop during a refresh leaves its unfinished copy beside the table until the next start drops it)
    assert w.stop() == 0


def test_documents_sharing_a_cursor_value_across_id_types_are_all_read(mdb, mwarp, state_dir, tmp_path):
    # one cursor value for all, _ids of two BSON types: chunks end inside the group of equal values, where
    # an {_id: {$gt: x}} range would only see x's own type
    docs = [{"_id": i, "v": "n", "updated_at": T0} for i in range(40)]
    docs += [{"_id": f"s{i:03}", "v": "s", "updated_at": T0} for i in range(40)]
    docs += [{"_id": 1000 + i, "v": "later", "updated_at": T0 + dt.timedelta(seconds=1)} for i in range(5)]
    mdb.db["items"].insert_many(docs)
    w = mwarp(batch(tmp_path, mdb.name, INCREMENTAL, every="1h", extra="    snapshot_chunk_size: 16\n"))
    wait_until(lambda: mdb.pg_count("items") == 85, 30, "every document")
    wait_mongo(mdb, w, state_dir, 30)
    assert w.stop() == 0


def test_an_object_id_cursor_reads_new_documents_and_again_those_within_the_lag(
    mdb, mwarp, state_dir, tmp_path
):
    events = mdb.db["events"]
    first = [oid(S0 + i, i) for i in range(5)]
    events.insert_many([{"_id": o, "v": "first"} for o in first])
    by_id = "      - name: events\n        cursor_field: _id\n        safety_lag: 1h\n"
    w = mwarp(batch(tmp_path, mdb.name, by_id, every="1h"))  # one run at start; the others asked for
    wait_mongo(mdb, w, state_dir, 30)
    assert marks(state_dir, mdb.name)["events"].mark["cursor"] == {"$oid": str(first[-1])}

    # ObjectIds are made by clients: one made before the mark may be inserted after the run read past it
    late, too_late, new = oid(S0 - 1800, 1), oid(S0 - 5400, 1), oid(S0 + 3600, 1)
    events.insert_many(
        [{"_id": late, "v": "late"}, {"_id": too_late, "v": "too late"}, {"_id": new, "v": "new"}]
    )
    events.update_one({"_id": first[0]}, {"$set": {"v": "changed"}})  # within the lag: read again
    assert sync_now(state_dir, mdb.name, "events")["rows"] == 7  # the first five again, late and new
    assert dest_rows(mdb, "events", "_id", "v") == [
        (str(late), "late"),
        (str(first[0]), "changed"),
        *((str(o), "first") for o in first[1:]),
        (str(new), "new"),
    ]

    # the mark is now new's second; an hour back is the very second of first[0], the lowest ObjectId of
    # which it is: read again, late is not
    events.update_many({}, {"$set": {"v": "again"}})
    assert sync_now(state_dir, mdb.name, "events")["rows"] == 6
    assert dest_rows(mdb, "events", "_id", "v") == [
        (str(late), "late"),
        *((str(o), "again") for o in first),
        (str(new), "again"),
    ]
    assert mdb.pg_count("events") == 7
    assert w.stop() == 0


def test_a_timestamp_cursor_counts_a_fractional_lag_back_in_whole_seconds(mdb, mwarp, state_dir, tmp_path):
    events = mdb.db["events"]
    events.insert_many([{"_id": i, "v": "first", "ts": Timestamp(S0 + i, 1)} for i in range(5)])
    by_ts = "      - name: events\n        cursor_field: ts\n        safety_lag: 1.5s\n"
    w = mwarp(batch(tmp_path, mdb.name, by_ts, every="1h"))
    wait_mongo(mdb, w, state_dir, 30)
    assert marks(state_dir, mdb.name)["events"].mark["cursor"] == {"$timestamp": {"t": S0 + 4, "i": 1}}

    # 1.5 seconds before a mark in second S0+4 may fall in second S0+2: the run reads from its start
    events.insert_many(
        [
            {"_id": 10, "v": "new", "ts": Timestamp(S0 + 10, 1)},
            {"_id": 11, "v": "late", "ts": Timestamp(S0 + 2, 7)},
            {"_id": 12, "v": "too late", "ts": Timestamp(S0 + 1, 9)},
            {"_id": 13, "v": "below the mark by its increment", "ts": Timestamp(S0 + 4, 0)},
        ]
    )
    events.update_many({"_id": {"$in": [1, 2]}}, {"$set": {"v": "changed"}})
    assert sync_now(state_dir, mdb.name, "events")["rows"] == 6  # 2, 3, 4, 10, 11 and 13
    assert dest_rows(mdb, "events", "_id", "v") == [
        (0, "first"),
        (1, "first"),  # second S0+1: outside the lag
        (2, "changed"),
        (3, "first"),
        (4, "first"),
        (10, "new"),
        (11, "late"),
        (13, "below the mark by its increment"),
    ]
    assert w.stop() == 0


def test_a_key_scan_deletes_the_documents_gone_from_the_collection(mdb, mwarp, state_dir, tmp_path):
    items = mdb.db["items"]
    # ObjectId _ids (the usual kind), one document older than the lag: a key scan reads them all
    items.insert_many([{"v": i, "updated_at": T0 + dt.timedelta(seconds=i)} for i in range(20)])
    items.insert_one({"v": -1, "updated_at": T0 - dt.timedelta(hours=2)})
    scanned = INCREMENTAL + "        delete_detection: key_scan\n"
    w = mwarp(batch(tmp_path, mdb.name, scanned, every="1h"))
    wait_mongo(mdb, w, state_dir, 30)
    assert mdb.pg_count("items") == 21

    gone = [d["_id"] for d in items.find({"v": {"$in": [-1, 3, 7, 19]}})]
    assert items.delete_many({"_id": {"$in": gone}}).deleted_count == 4
    kept = items.insert_one({"v": 100, "updated_at": T0 + dt.timedelta(minutes=5)}).inserted_id
    sync_now(state_dir, mdb.name, "items")
    state = marks(state_dir, mdb.name)["items"]
    assert state.run_status == "ok" and state.deleted == 4
    remaining = sorted(str(d["_id"]) for d in items.find({}, {"_id": 1}))
    assert str(kept) in remaining and len(remaining) == 18
    assert [r[0] for r in dest_rows(mdb, "items", "_id")] == remaining
    assert "key scan deleted 4 rows gone from the source" in w.output

    # nothing more gone: the next scan deletes nothing
    sync_now(state_dir, mdb.name, "items")
    assert marks(state_dir, mdb.name)["items"].deleted == 0
    assert mdb.pg_count("items") == 18
    assert w.stop() == 0


def test_a_key_scan_deletes_by_keys_of_several_bson_types_and_sub_documents(mdb, mwarp, state_dir, tmp_path):
    # _ids of several types make a jsonb _id column, read back parsed: deleted by their JSON text again
    keys: list[Any] = [1, 2.5, "a", {"k": 1, "j": [1, "x"]}, {"j": 2, "k": 1}, oid(S0, 1), oid(S0, 2)]
    items = mdb.db["items"]
    items.insert_many([{"_id": k, "updated_at": T0 + dt.timedelta(seconds=i)} for i, k in enumerate(keys)])
    scanned = INCREMENTAL + "        delete_detection: key_scan\n"
    w = mwarp(batch(tmp_path, mdb.name, scanned, every="1h"))
    wait_mongo(mdb, w, state_dir, 30)
    assert mdb.pg_count("items") == len(keys)

    items.delete_many({"_id": {"$in": [2.5, {"k": 1, "j": [1, "x"]}, oid(S0, 2)]}})
    sync_now(state_dir, mdb.name, "items")
    state = marks(state_dir, mdb.name)["items"]
    assert state.run_status == "ok" and state.deleted == 3
    assert sorted(map(repr, (r[0] for r in dest_rows(mdb, "items", "_id")))) == sorted(
        map(repr, [1, "a", {"j": 2, "k": 1}, str(oid(S0, 1))])
    )
    wait_mongo(mdb, w, state_dir, 30)  # the same documents on both sides, none dead-lettered
    assert "dead-letter" not in w.output
    assert w.stop() == 0


def test_nan_or_infinity_in_a_number_cursor_field_stops_the_run(mdb, mwarp, state_dir, tmp_path):
    # NaN matches no range query, and an Infinity mark would leave every later finite value below the
    # floor: either would be skipped while the mark advances, so the run is refused instead
    items = mdb.db["items"]
    items.insert_many([{"_id": i, "seq": float(i)} for i in range(5)])
    tables = "      - name: items\n        sync: incremental\n        cursor_field: seq\n"
    w = mwarp(batch(tmp_path, mdb.name, tables))
    wait_mongo(mdb, w, state_dir, 30)
    items.insert_many([{"_id": 10, "seq": float("nan")}, {"_id": 11, "seq": float("inf")}])
    assert w.wait(30) == 1
    assert "2 document(s) have no number in cursor_field 'seq'" in w.output
    assert "e.g. _id 10, 11" in w.output
    assert mdb.pg_count("items") == 5


def history(state_dir: str, schema: str) -> list[tuple[str, dict[str, str]]]:
    """Each recorded shape of ``schema``'s tables: the change, and each column's type."""
    store = StateStore(state_dir, read_only=True)
    try:
        return [
            (v["change"], {c["name"]: c["kind"] for c in v["columns"]}) for v in store.schema_history(schema)
        ]
    finally:
        store.close()


# the first 45 documents (past a sample of 10) hold an integer in v; then an object, later a string
WIDENED_LATE: list[dict[str, Any]] = [{"_id": i, "v": i * 10, "label": f"l{i}"} for i in range(60)]
WIDENED_LATE[45]["v"] = {"a": 1, "b": [1, "x"]}
WIDENED_LATE[52]["v"] = "text"


def full_refresh(tmp_path: Any, name: str, every: str) -> str:
    tables = "      - name: items\n        sync: full_refresh\n"
    return batch(tmp_path, name, tables, every, "    snapshot_chunk_size: 8\n", "sample_size: 10")


def run_ended(state_dir: str, schema: str, w: Warp) -> Callable[[], bool]:
    def ended() -> bool:
        state = marks(state_dir, schema).get("items")
        return not w.alive() or (state is not None and state.run_status in ("ok", "failed"))

    return ended


@pytest.mark.destinations
def test_a_full_refresh_widening_into_json_past_the_sample_finishes_and_stays_wide(
    mdb, mwarp, state_dir, tmp_path
):
    """A field the sample saw as an integer holds an object and a string further on: the run finishes with
    every document (v as JSON), and the runs after it start from that shape, not from a new sample
    (docs/batch-mode.md, "MongoDB")."""
    mdb.db["items"].insert_many(WIDENED_LATE)
    w = mwarp(full_refresh(tmp_path, mdb.name, "1h"))
    wait_until(run_ended(state_dir, mdb.name, w), 60, "the first run to end")
    assert marks(state_dir, mdb.name)["items"].run_status == "ok", w.output[-3000:]
    got = {r[0]: (json_value(mdb, r[1]), r[2]) for r in dest_rows(mdb, "items", "_id", "v", "label")}
    assert got == {d["_id"]: (d["v"], d["label"]) for d in WIDENED_LATE}
    assert not [t for t in mdb.dest.tables() if t.startswith("_warp_new_")]
    assert w.stop() == 0
    versions = history(state_dir, mdb.name)
    assert versions[-1][1]["v"] == "json"

    # the runs after it: the copy is made in the wide shape at once, and no narrower shape is recorded
    mdb.db["items"].insert_one({"_id": 100, "v": 7, "label": "later"})
    w = mwarp(full_refresh(tmp_path, mdb.name, "0.5s"))
    wait_until(lambda: mdb.pg_count("items") == 61 or not w.alive(), 60, "the second run")
    wait_mongo(mdb, w, state_dir, 30)
    assert w.stop() == 0
    got = {r[0]: json_value(mdb, r[1]) for r in dest_rows(mdb, "items", "_id", "v")}
    assert got == {**{d["_id"]: d["v"] for d in WIDENED_LATE}, 100: 7}
    assert history(state_dir, mdb.name) == versions
    assert "<v as JSON>" not in w.output  # nothing converted: v was JSON from the start of each copy
    assert "warpctl resync" not in w.output


class IntoSQLite:
    """``cartridge-warp`` from the test's MongoDB database into the SQLite example plugin (no JSON widening)."""

    def __init__(self, mdb: MongoDatabases, state_dir: str, tmp_path: Any):
        self.mdb, self.state_dir, self.tmp_path = mdb, state_dir, tmp_path
        self.site = tmp_path / "site"
        self.site.mkdir()
        install(self.site)
        self.db_file = tmp_path / "x.db"
        self.started: list[Warp] = []

    def start(self, config: str) -> Warp:
        w = Warp(self.mdb, self.state_dir, config, [], {"PYTHONPATH": f"{ROOT}:{self.site}"})
        w.cmd[w.cmd.index(self.mdb.dest_uri)] = f"sqlite://{self.db_file}"
        self.started.append(w)
        return w.start()

    def rows(self) -> dict[Any, Any]:
        """``_id`` -> (v, label) of the items table; asserts no unfinished copy is left beside it."""
        if not Path(self.db_file).exists():
            return {}
        with sqlite3.connect(self.db_file) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if names != [f"{self.mdb.name}__items"]:
                return {"tables": names}
            found = conn.execute(f'SELECT "_id", "v", "label" FROM "{self.mdb.name}__items"').fetchall()
        # v is an INTEGER column until it widens, then JSON text
        return {r[0]: (json.loads(r[1]) if isinstance(r[1], str) else r[1], r[2]) for r in found}

    def kill_all(self) -> None:
        for w in self.started:
            if w.alive():
                w.kill()


@pytest.fixture
def into_sqlite(mdb: MongoDatabases, state_dir: str, tmp_path: Any) -> Iterator[IntoSQLite]:
    target = IntoSQLite(mdb, state_dir, tmp_path)
    yield target
    target.kill_all()


def test_a_full_refresh_into_a_destination_without_json_widening_copies_again_in_the_wider_shape(
    mdb, state_dir, tmp_path, into_sqlite
):
    """The SQLite example plugin cannot convert stored values into JSON (json_widening false): the copy
    beside the live table starts again with v as JSON instead of stopping, and the runs after it start
    from that shape; the live table is replaced only by a complete copy."""
    mdb.db["items"].insert_many(WIDENED_LATE)
    want = {d["_id"]: (d["v"], d["label"]) for d in WIDENED_LATE}
    w = into_sqlite.start(full_refresh(tmp_path, mdb.name, "1h"))
    wait_until(run_ended(state_dir, mdb.name, w), 60, "the first run to end")
    assert marks(state_dir, mdb.name)["items"].run_status == "ok", w.output[-3000:]
    assert w.stop() == 0
    assert into_sqlite.rows() == want
    assert "column(s) 'v' need JSON, and the SQLite destination cannot convert" in w.output
    assert "copying it again from the start in the wider shape" in w.output
    assert "warpctl resync" not in w.output
    versions = history(state_dir, mdb.name)
    assert versions[-1][1]["v"] == "json"

    mdb.db["items"].update_one({"_id": 3}, {"$set": {"v": {"c": 3}}})
    want[3] = ({"c": 3}, "l3")
    w = into_sqlite.start(full_refresh(tmp_path, mdb.name, "0.5s"))
    wait_until(lambda: into_sqlite.rows() == want, 60, "the second run")
    assert w.stop() == 0
    assert "copying it again" not in w.output
    assert history(state_dir, mdb.name) == versions


def test_an_incremental_run_into_a_destination_without_json_widening_copies_the_table_again(
    mdb, state_dir, tmp_path, into_sqlite
):
    """An incremental run whose rows need JSON where the destination cannot convert stored values copies
    the table again beside the live one in the wider shape (what warpctl resync does for a stream, which
    batch schemas have no use for), and goes on from there."""
    docs = [dict(d, updated_at=T0 + dt.timedelta(seconds=d["_id"])) for d in WIDENED_LATE]
    mdb.db["items"].insert_many(docs[:40])
    tables = "      - name: items\n        cursor_field: updated_at\n        safety_lag: 0\n"
    config = batch(tmp_path, mdb.name, tables, "0.5s", "    snapshot_chunk_size: 8\n", "sample_size: 10")
    w = into_sqlite.start(config)
    want = {d["_id"]: (d["v"], d["label"]) for d in WIDENED_LATE}
    wait_until(lambda: into_sqlite.rows() == {i: want[i] for i in range(40)}, 60, "the first run")
    mdb.db["items"].insert_many(docs[40:])
    wait_until(lambda: into_sqlite.rows() == want or not w.alive(), 60, "the later documents")
    assert w.alive(), w.output[-3000:]
    assert into_sqlite.rows() == want
    assert w.stop() == 0
    assert "column(s) 'v' need JSON, and the SQLite destination cannot convert" in w.output
    assert "warpctl resync" not in w.output
    assert history(state_dir, mdb.name)[-1][1]["v"] == "json"
