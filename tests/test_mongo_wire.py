"""The MongoDB wire-protocol test server, seen through pymongo.

Every test talks to ``MongoTestServer`` the way an application would (``MongoClient(uri)``) and
checks what a pymongo user sees, so the change-stream source's integration tests can trust it to
behave like a single-node replica set.  The one exception is ``test_wire_checksum_and_op_query``,
which sends raw bytes because pymongo never sends a checksum.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import bson
import pymongo
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import monitoring
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from tests.mongo_wire import MongoTestServer

pytestmark = pytest.mark.mongodb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1024 * 1024


class Replies(monitoring.CommandListener):
    """Records command replies and failures, to see batches and retried errors."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []
        self.successes: list[monitoring.CommandSucceededEvent] = []
        self.failures: list[monitoring.CommandFailedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.successes.append(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.failures.append(event)

    def replies(self, name: str) -> list[dict[str, Any]]:
        return [e.reply for e in self.successes if e.command_name == name]


class Heartbeats(monitoring.ServerHeartbeatListener):
    """Whether each monitoring check was an awaited (streaming) hello."""

    def __init__(self) -> None:
        self.awaited: list[bool] = []

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        self.awaited.append(event.awaited)

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        pass


@pytest.fixture
def server() -> Iterator[MongoTestServer]:
    with MongoTestServer() as srv:
        yield srv


@pytest.fixture
def client(server: MongoTestServer) -> Iterator[pymongo.MongoClient]:
    with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10_000) as mongo:
        yield mongo


def take(stream: Any, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next ``count`` events of a change stream, failing after ``timeout`` seconds."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        assert time.monotonic() < deadline, f"got {len(events)} of {count} events: {events[-3:]}"
        event = stream.try_next()
        if event is not None:
            events.append(event)
    return events


def test_hello_reports_a_replica_set_primary(server: MongoTestServer, client: pymongo.MongoClient) -> None:
    hello = client.admin.command("hello")
    assert hello["isWritablePrimary"] is True and hello["secondary"] is False
    assert hello["setName"] == "rs0"
    assert hello["hosts"] == [f"127.0.0.1:{server.port}"] == [hello["me"]]
    assert hello["maxWireVersion"] == 21 and hello["maxBsonObjectSize"] == 16 * MB
    assert hello["maxMessageSizeBytes"] == 48_000_000 and hello["maxWriteBatchSize"] == 100_000
    assert {"topologyVersion", "electionId", "lastWrite", "$clusterTime", "operationTime"} <= set(hello)
    assert client.server_info()["version"] == "7.0.0"
    assert server.uri == f"mongodb://127.0.0.1:{server.port}/?replicaSet=rs0"
    assert client.primary == ("127.0.0.1", server.port)
    # pymongo's monitor streams: an awaitable hello is parked until maxAwaitTimeMS, not spun on.
    heartbeats = Heartbeats()
    with pymongo.MongoClient(server.uri, event_listeners=[heartbeats], heartbeatFrequencyMS=500) as other:
        other.admin.command("ping")
        time.sleep(1.2)
    assert any(heartbeats.awaited) and len(heartbeats.awaited) <= 6, heartbeats.awaited
    with pytest.raises(OperationFailure) as failure:
        client.admin.command("noSuchCommand")
    assert failure.value.code == 59 and failure.value.details["codeName"] == "CommandNotFound"
    with pytest.raises(OperationFailure) as failure:
        client.db.command({"find": "c", "limit": "ten"})
    assert failure.value.code == 14 and "find.limit" in str(failure.value)


def test_crud_round_trip(client: pymongo.MongoClient) -> None:
    coll = client.shop.items
    assert coll.insert_one({"_id": 1, "name": "pen", "qty": 5, "tags": ["a"]}).inserted_id == 1
    coll.insert_many([{"_id": i, "name": f"item{i}", "qty": i} for i in range(2, 6)])
    assert coll.find_one({"_id": 1}) == {"_id": 1, "name": "pen", "qty": 5, "tags": ["a"]}

    result = coll.update_one({"_id": 1}, {"$inc": {"qty": 2}, "$push": {"tags": "b"}})
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert coll.update_many({"qty": {"$gte": 4}}, {"$set": {"big": True}}).modified_count == 3
    upsert = coll.update_one({"_id": 9}, {"$set": {"name": "new"}}, upsert=True)
    assert upsert.upserted_id == 9 and upsert.matched_count == 0
    assert coll.replace_one({"_id": 2}, {"name": "replaced"}).modified_count == 1
    assert coll.find_one({"_id": 2}) == {"_id": 2, "name": "replaced"}
    pipeline_update = coll.update_one({"_id": 3}, [{"$set": {"double": {"$multiply": ["$qty", 2]}}}])
    assert pipeline_update.modified_count == 1 and coll.find_one({"_id": 3})["double"] == 6

    found = coll.find_one_and_update(
        {"big": True},
        {"$set": {"picked": 1}},
        sort=[("qty", pymongo.DESCENDING)],
        projection={"qty": 1},
        return_document=pymongo.ReturnDocument.AFTER,
    )
    assert found == {"_id": 1, "qty": 7}
    assert coll.find_one_and_delete({"_id": 5}) == {"_id": 5, "name": "item5", "qty": 5, "big": True}
    assert coll.find_one_and_replace({"_id": 404}, {"x": 1}) is None

    with pytest.raises(DuplicateKeyError) as duplicate:
        coll.insert_one({"_id": 1})
    assert duplicate.value.code == 11000
    with pytest.raises(BulkWriteError) as bulk:
        coll.insert_many([{"_id": 20}, {"_id": 1}, {"_id": 21}], ordered=False)
    assert bulk.value.details["nInserted"] == 2
    assert [(e["index"], e["code"]) for e in bulk.value.details["writeErrors"]] == [(1, 11000)]

    assert coll.delete_one({"name": "replaced"}).deleted_count == 1
    assert coll.delete_many({"_id": {"$gte": 20}}).deleted_count == 2
    assert coll.count_documents({"big": True}) == 2
    assert coll.estimated_document_count() == 4
    assert sorted(coll.distinct("qty")) == [3, 4, 7]
    totals = list(coll.aggregate([{"$group": {"_id": None, "qty": {"$sum": "$qty"}}}]))
    assert totals == [{"_id": None, "qty": 14}]

    coll.create_index([("name", 1)], unique=True, name="by_name")
    assert {ix["name"] for ix in coll.list_indexes()} == {"_id_", "by_name"}
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"name": "pen"})
    coll.drop_index("by_name")
    assert list(coll.index_information()) == ["_id_"]

    client.shop.create_collection("audit", changeStreamPreAndPostImages={"enabled": True})
    client.shop.command("collMod", "items", changeStreamPreAndPostImages={"enabled": True})
    options = {c["name"]: c["options"] for c in client.shop.list_collections()}
    assert options["items"] == {"changeStreamPreAndPostImages": {"enabled": True}}
    assert client.shop.list_collection_names(filter={"name": "audit"}) == ["audit"]
    coll.rename("goods")
    assert sorted(client.shop.list_collection_names()) == ["audit", "goods"]
    assert "shop" in client.list_database_names()
    client.shop.goods.drop()
    client.drop_database("shop")
    assert "shop" not in client.list_database_names()


def test_large_and_wide_documents(client: pymongo.MongoClient) -> None:
    coll = client.db.big
    big = {"_id": "big", "blob": "x" * (15 * MB)}
    coll.insert_one(big)
    assert coll.find_one({"_id": "big"}) == big
    coll.update_one({"_id": "big"}, {"$set": {"blob": "y" * (15 * MB)}})
    assert coll.find_one({"_id": "big"}, {"blob": 1})["blob"][:3] == "yyy"
    wide = {"_id": "wide", **{f"field_{i}": i for i in range(5000)}}
    coll.insert_one(wide)
    assert coll.find_one({"_id": "wide"}) == wide
    # Two 15 MB documents never share a batch: each comes back on its own.
    coll.insert_one({"_id": "big2", "blob": "z" * (15 * MB)})
    assert sorted(d["_id"] for d in coll.find({"_id": {"$in": ["big", "big2"]}})) == ["big", "big2"]


def test_bson_types_round_trip_exactly(client: pymongo.MongoClient) -> None:
    document = {
        "_id": 1,
        "int32": 7,
        "int64": Int64(5),
        "double": 1.5,
        "decimal": Decimal128("1.50"),
        "date": datetime.datetime(2024, 1, 2, 3, 4, 5, 123000),
        "binary": Binary(b"x", 0),
        "uuid": Binary(uuid.uuid4().bytes, 4),
        "regex": Regex("^a", "i"),
        "null": None,
        "min": MinKey(),
        "max": MaxKey(),
        "timestamp": Timestamp(5, 6),
        "oid": ObjectId(),
        "code": Code("x"),
        "bool": True,
        "nested": {"a": [1, {"b": 2}]},
    }
    raw_view = client.db.types.with_options(codec_options=CodecOptions(document_class=RawBSONDocument))
    with client.db.types.watch(max_await_time_ms=100) as stream:
        client.db.types.insert_one(document)
        event = take(stream, 1)[0]
    assert raw_view.find_one().raw == bson.encode(document)  # byte for byte, types included
    assert bson.encode(event["fullDocument"]) == bson.encode(document)


def test_cursor_batches(server: MongoTestServer) -> None:
    listener = Replies()
    with pymongo.MongoClient(server.uri, event_listeners=[listener]) as client:
        coll = client.db.many
        coll.insert_many([{"_id": i, "n": i % 7} for i in range(1000)])
        assert [d["_id"] for d in coll.find().sort("_id", pymongo.DESCENDING)] == list(range(999, -1, -1))
        first = listener.replies("find")[-1]["cursor"]
        assert len(first["firstBatch"]) == 101 and first["id"] != 0
        assert len(listener.replies("getMore")[-1]["cursor"]["nextBatch"]) == 899
        assert listener.replies("getMore")[-1]["cursor"]["id"] == 0

        assert len(list(coll.find({"n": 3}, batch_size=10))) == 143
        assert [d["_id"] for d in coll.find(skip=10, limit=5, sort=[("_id", 1)])] == [10, 11, 12, 13, 14]
        assert [d["_id"] for d in coll.find().sort("_id", 1).limit(-3)] == [0, 1, 2]
        assert listener.replies("find")[-1]["cursor"]["id"] == 0

        cursor = coll.find(batch_size=5)
        next(cursor)
        cursor.close()  # killCursors
        assert listener.replies("killCursors")[-1]["cursorsKilled"]
        assert len(list(coll.aggregate([{"$match": {"n": 0}}, {"$sort": {"_id": 1}}], batchSize=20))) == 143


def test_bson_type_order_and_type_matching_as_a_server_has_them(client: pymongo.MongoClient) -> None:
    coll = client.db.typed
    when = datetime.datetime(2026, 1, 1)
    coll.insert_many(
        [
            {"_id": "ts late", "v": Timestamp(200, 1)},
            {"_id": "ts", "v": Timestamp(100, 9)},
            {"_id": "ts early", "v": Timestamp(100, 2)},
            {"_id": "max", "v": MaxKey()},
            {"_id": "code", "v": Code("f()")},
            {"_id": "date", "v": when},
            {"_id": "oid", "v": ObjectId("0" * 24)},
            {"_id": "text", "v": "z"},
            {"_id": "number", "v": 5},
            {"_id": "null", "v": None},
            {"_id": "min", "v": MinKey()},
            {"_id": "array", "v": [Timestamp(1, 1)]},
        ]
    )
    coll.insert_one({"_id": "missing"})

    def ids(query: dict[str, Any], **options: Any) -> list[Any]:
        return [d["_id"] for d in coll.find(query, **options)]

    # the manual's comparison order: MinKey, null (and missing), numbers, strings, arrays (by their
    # smallest element when ascending), ObjectId, date, timestamp, JavaScript, MaxKey
    in_order = ids({"_id": {"$ne": "array"}}, sort=[("v", 1), ("_id", 1)])
    assert in_order == [
        "min", "missing", "null", "number", "text", "oid", "date", "ts early", "ts", "ts late", "code", "max"
    ]  # fmt: skip
    # timestamps compare by (seconds, increment); a range matches its bound's type only (no date, no code)
    assert ids({"v": {"$gte": Timestamp(100, 5)}}, sort=[("v", 1)]) == ["ts", "ts late"]
    assert ids({"v": {"$lt": Timestamp(100, 5)}}, sort=[("_id", 1)]) == ["array", "ts early"]
    timestamps = ["array", "ts", "ts early", "ts late"]  # an array matches by its elements
    assert ids({"v": {"$type": "timestamp"}}, sort=[("_id", 1)]) == timestamps
    assert ids({"v": {"$type": 17}}, sort=[("_id", 1)]) == timestamps
    assert ids({"v": {"$type": ["timestamp", "date"]}}, sort=[("_id", 1)]) == [
        "array",
        "date",
        *timestamps[1:],
    ]
    assert ids({"v": {"$type": "null"}}) == ["null"]  # not the missing field
    assert ids({"v": {"$type": "string"}}) == ["text"]  # code is not a string
    assert ids({"v": {"$type": "javascript"}}) == ["code"]
    assert ids({"v": {"$type": "minKey"}}) + ids({"v": {"$type": 127}}) == ["min", "max"]
    not_timestamp = {"v": {"$not": {"$type": "timestamp"}}}
    assert coll.count_documents(not_timestamp) == 9  # missing included
    for bad, message in (
        ("stamp", "Unknown type name alias: stamp"),
        (99, "Invalid numerical type code: 99"),
    ):
        with pytest.raises(OperationFailure) as failure:
            ids({"v": {"$type": bad}})
        assert failure.value.code == 2 and message in str(failure.value)


def test_insert_many_ten_thousand_seen_by_a_database_stream(client: pymongo.MongoClient) -> None:
    with client.bulk.watch(max_await_time_ms=100) as stream:
        result = client.bulk.docs.insert_many([{"_id": i, "v": "x" * 20} for i in range(10_000)])
        assert len(result.inserted_ids) == 10_000
        events = take(stream, 10_000, timeout=30)
    assert [e["documentKey"]["_id"] for e in events] == list(range(10_000))
    assert client.bulk.docs.count_documents({}) == 10_000
    times = [e["clusterTime"] for e in events]
    assert times == sorted(times) and len(set(times)) == 10_000


def test_collection_stream_reports_every_operation_then_invalidates(client: pymongo.MongoClient) -> None:
    coll = client.db.orders
    coll.insert_one({"_id": 0})
    with coll.watch(max_await_time_ms=100) as stream:
        coll.insert_one({"_id": 1, "a": 1, "b": {"c": 1}, "arr": [1, 2, 3]})
        coll.update_one({"_id": 1}, {"$set": {"a": 2, "b.c": 2}, "$unset": {"gone": ""}, "$push": {"arr": 4}})
        coll.update_one({"_id": 1}, {"$unset": {"a": ""}, "$pop": {"arr": 1}})
        coll.replace_one({"_id": 1}, {"z": 1})
        coll.update_many({}, {"$set": {"m": 1}})
        coll.delete_one({"_id": 1})
        client.db.other.insert_one({"_id": "not mine"})
        coll.rename("orders_renamed")
        events = take(stream, 9)
        assert stream.try_next() is None and not stream.alive
    assert [e["operationType"] for e in events] == [
        "insert",
        "update",
        "update",
        "replace",
        "update",
        "update",
        "delete",
        "rename",
        "invalidate",
    ]
    insert, update, update2, replace, many0, many1, delete, rename, invalidate = events
    assert insert["fullDocument"] == {"_id": 1, "a": 1, "b": {"c": 1}, "arr": [1, 2, 3]}
    assert insert["ns"] == {"db": "db", "coll": "orders"} and insert["documentKey"] == {"_id": 1}
    assert update["updateDescription"] == {
        "updatedFields": {"a": 2, "b.c": 2, "arr.3": 4},
        "removedFields": [],
        "truncatedArrays": [],
    }
    assert "fullDocument" not in update
    assert update2["updateDescription"] == {
        "updatedFields": {},
        "removedFields": ["a"],
        "truncatedArrays": [{"field": "arr", "newSize": 3}],
    }
    assert replace["fullDocument"] == {"_id": 1, "z": 1}
    assert {many0["documentKey"]["_id"], many1["documentKey"]["_id"]} == {0, 1}
    assert delete["documentKey"] == {"_id": 1} and "fullDocument" not in delete
    assert rename["to"] == {"db": "db", "coll": "orders_renamed"}
    assert set(invalidate) == {"_id", "operationType", "clusterTime", "wallTime"}
    assert invalidate["clusterTime"] == rename["clusterTime"]
    tokens = [e["_id"]["_data"] for e in events]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)

    # A drop invalidates a collection stream too.
    with client.db.doomed.watch(max_await_time_ms=100) as stream:
        client.db.doomed.insert_one({"_id": 1})
        client.db.doomed.drop()
        assert [e["operationType"] for e in take(stream, 3)] == ["insert", "drop", "invalidate"]


def test_database_and_cluster_streams(client: pymongo.MongoClient) -> None:
    db = client.shopdb
    with db.watch(max_await_time_ms=100) as db_stream, client.watch(max_await_time_ms=100) as all_stream:
        db.a.insert_one({"_id": 1})
        db.b.insert_one({"_id": 2})
        client.elsewhere.c.insert_one({"_id": 3})
        db.a.rename("a2")
        db.b.drop()
        client.drop_database("shopdb")
        events = take(db_stream, 7)
        assert [e["operationType"] for e in events] == [
            "insert",
            "insert",
            "rename",
            "drop",
            "drop",
            "dropDatabase",
            "invalidate",
        ]
        assert events[3]["ns"] == {"db": "shopdb", "coll": "b"}
        assert events[4]["ns"] == {"db": "shopdb", "coll": "a2"}
        assert events[5]["ns"] == {"db": "shopdb"}
        cluster = take(all_stream, 7)
        assert [e["ns"].get("coll") for e in cluster] == ["a", "b", "c", "a", "b", "a2", None]
        assert all_stream.try_next() is None and all_stream.alive  # cluster streams are not invalidated


def test_concurrent_writers_and_watchers(server: MongoTestServer, client: pymongo.MongoClient) -> None:
    per_writer = 150

    def write(k: int) -> None:
        with pymongo.MongoClient(server.uri) as writer:
            coll = writer.par[f"c{k}"]
            for i in range(per_writer):
                coll.insert_one({"_id": i})
                coll.update_one({"_id": i}, {"$set": {"k": k}})

    with (
        client.par.watch(max_await_time_ms=100) as everything,
        client.par.c0.watch(max_await_time_ms=100) as one,
    ):
        threads = [threading.Thread(target=write, args=(k,)) for k in range(3)]
        for thread in threads:
            thread.start()
        events = take(everything, 3 * 2 * per_writer, timeout=30)
        mine = take(one, 2 * per_writer, timeout=30)
        for thread in threads:
            thread.join()
    tokens = [e["_id"]["_data"] for e in events]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    expected = [(op, i) for i in range(per_writer) for op in ("insert", "update")]
    for k in range(3):
        per_collection = [
            (e["operationType"], e["documentKey"]["_id"]) for e in events if e["ns"]["coll"] == f"c{k}"
        ]
        assert per_collection == expected
    assert [(e["operationType"], e["documentKey"]["_id"]) for e in mine] == expected


def test_resume_after_start_after_and_start_at_operation_time(client: pymongo.MongoClient) -> None:
    coll = client.db.resume
    with coll.watch(max_await_time_ms=100) as stream:
        coll.insert_many([{"_id": i} for i in range(10)])
        first = take(stream, 4)
    later = list(range(4, 10))

    with coll.watch(resume_after=first[-1]["_id"], max_await_time_ms=100) as stream:
        assert [e["documentKey"]["_id"] for e in take(stream, 6)] == later
        assert stream.try_next() is None
    with coll.watch(start_after=first[-1]["_id"], max_await_time_ms=100) as stream:
        assert [e["documentKey"]["_id"] for e in take(stream, 6)] == later
    with coll.watch(start_at_operation_time=first[-1]["clusterTime"], max_await_time_ms=100) as stream:
        assert [e["documentKey"]["_id"] for e in take(stream, 7)] == [3, *later]

    # After an invalidate only startAfter may continue, into the recreated collection.
    with coll.watch(max_await_time_ms=100) as stream:
        coll.drop()
        invalidate = take(stream, 2)[-1]
    assert invalidate["operationType"] == "invalidate"
    coll.insert_one({"_id": "reborn"})
    with coll.watch(start_after=invalidate["_id"], max_await_time_ms=100) as stream:
        assert take(stream, 1)[0]["documentKey"] == {"_id": "reborn"}
    with pytest.raises(OperationFailure) as failure:
        coll.watch(resume_after=invalidate["_id"])
    assert failure.value.code == 260
    with pytest.raises(OperationFailure) as failure:
        coll.watch(resume_after={"_data": "not hex"})
    assert failure.value.code == 9


def test_full_document_lookup_and_images(client: pymongo.MongoClient) -> None:
    coll = client.db.lookup
    coll.insert_one({"_id": 1, "v": 0})
    with coll.watch(full_document="updateLookup", max_await_time_ms=100) as stream:
        coll.update_one({"_id": 1}, {"$set": {"v": 1}})
        coll.update_one({"_id": 1}, {"$set": {"v": 2}})
        # Looked up when the batch is built, not when written: both see the latest version.
        assert [e["fullDocument"] for e in take(stream, 2)] == [{"_id": 1, "v": 2}] * 2
        coll.update_one({"_id": 1}, {"$set": {"v": 3}})
        coll.delete_one({"_id": 1})
        update, delete = take(stream, 2)
        assert update["updateDescription"]["updatedFields"] == {"v": 3}
        assert update["fullDocument"] is None  # deleted before the event was read
        assert delete["operationType"] == "delete" and "fullDocument" not in delete

    client.db.create_collection("imaged", changeStreamPreAndPostImages={"enabled": True})
    imaged = client.db.imaged
    imaged.insert_one({"_id": 1, "v": 1})
    with imaged.watch(
        full_document="required", full_document_before_change="required", max_await_time_ms=100
    ) as stream:
        imaged.update_one({"_id": 1}, {"$set": {"v": 2}})
        imaged.replace_one({"_id": 1}, {"v": 3})
        imaged.delete_one({"_id": 1})
        update, replace, delete = take(stream, 3)
    assert (update["fullDocumentBeforeChange"], update["fullDocument"]) == (
        {"_id": 1, "v": 1},
        {"_id": 1, "v": 2},
    )
    assert (replace["fullDocumentBeforeChange"], replace["fullDocument"]) == (
        {"_id": 1, "v": 2},
        {"_id": 1, "v": 3},
    )
    assert delete["fullDocumentBeforeChange"] == {"_id": 1, "v": 3}

    plain = client.db.plain
    plain.insert_one({"_id": 1})
    with plain.watch(full_document="whenAvailable", full_document_before_change="whenAvailable") as stream:
        plain.update_one({"_id": 1}, {"$set": {"v": 1}})
        event = take(stream, 1)[0]
        assert event["fullDocument"] is None and event["fullDocumentBeforeChange"] is None
    with plain.watch(full_document_before_change="required") as stream:
        plain.delete_one({"_id": 1})
        with pytest.raises(OperationFailure) as failure:
            take(stream, 1)
    assert failure.value.code == 47


def test_pipeline_stages_filter_and_reshape_events(client: pymongo.MongoClient) -> None:
    coll = client.db.piped
    pipeline = [
        {"$match": {"operationType": "insert", "fullDocument.n": {"$gte": 3}}},
        {"$project": {"operationType": 1, "fullDocument.n": 1}},
        {"$unset": "fullDocument._id"},
    ]
    with coll.watch(pipeline, max_await_time_ms=100) as stream:
        coll.insert_many([{"_id": i, "n": i, "other": "x"} for i in range(6)])
        coll.update_one({"_id": 5}, {"$set": {"n": 50}})
        events = take(stream, 3)
        assert stream.try_next() is None
    assert [e["fullDocument"] for e in events] == [{"n": 3}, {"n": 4}, {"n": 5}]
    assert all(set(e) == {"_id", "operationType", "fullDocument"} for e in events)
    with coll.watch([{"$project": {"_id": 0}}], max_await_time_ms=100) as stream:
        coll.insert_one({"_id": "x"})
        with pytest.raises(OperationFailure) as failure:
            take(stream, 1)
    assert failure.value.code == 280
    with pytest.raises(OperationFailure):
        coll.watch([{"$group": {"_id": None}}])


def test_post_batch_resume_token_advances_while_idle(client: pymongo.MongoClient) -> None:
    quiet, busy = client.db.quiet, client.db.busy
    with quiet.watch(max_await_time_ms=50) as stream:
        assert stream.try_next() is None
        tokens = [stream.resume_token]
        for i in range(3):
            busy.insert_one({"_id": i})
            assert stream.try_next() is None
            tokens.append(stream.resume_token)
    assert all(t is not None for t in tokens)
    assert [t["_data"] for t in tokens] == sorted(t["_data"] for t in tokens) and tokens[0] != tokens[-1]
    quiet.insert_one({"_id": "after"})
    with quiet.watch(resume_after=tokens[-1], max_await_time_ms=50) as stream:
        assert take(stream, 1)[0]["documentKey"] == {"_id": "after"}
        assert stream.try_next() is None


def test_trimmed_oplog_loses_resume_points(server: MongoTestServer, client: pymongo.MongoClient) -> None:
    coll = client.db.trimmed
    with coll.watch(max_await_time_ms=50) as stream:
        coll.insert_many([{"_id": i} for i in range(5)])
        events = take(stream, 5)
    assert server.oplog_size == 5
    server.trim_oplog(keep=3)
    assert server.oplog_size == 3
    # Resuming needs the token's own event: after #2 (still retained) works, after #1 does not.
    with coll.watch(resume_after=events[2]["_id"], max_await_time_ms=50) as stream:
        assert [e["documentKey"]["_id"] for e in take(stream, 2)] == [3, 4]
    with pytest.raises(OperationFailure) as failure:
        coll.watch(resume_after=events[1]["_id"])
    assert failure.value.code == 286 and failure.value.details["codeName"] == "ChangeStreamHistoryLost"
    server.trim_oplog()
    for option in ({"resume_after": events[4]["_id"]}, {"start_at_operation_time": Timestamp(1, 1)}):
        with pytest.raises(OperationFailure) as failure:
            coll.watch(**option)
        assert failure.value.code == 286


def test_dropped_connections_resume_without_loss_or_duplicates(server: MongoTestServer) -> None:
    total = 300
    writing = threading.Event()

    def write() -> None:
        with pymongo.MongoClient(server.uri) as writer:
            for i in range(total):
                writer.db.flaky.insert_one({"_id": i})  # a retryable write: retried once after a drop
                time.sleep(0.002)
        writing.clear()

    def chaos() -> None:
        for _ in range(4):
            time.sleep(0.15)
            if not writing.is_set():
                return
            server.drop_connections()

    listener = Replies()
    client = pymongo.MongoClient(server.uri, event_listeners=[listener])
    with client, client.db.flaky.watch(max_await_time_ms=1000) as stream:
        writing.set()
        threads = [threading.Thread(target=write), threading.Thread(target=chaos)]
        for thread in threads:
            thread.start()
        seen = [e["documentKey"]["_id"] for e in take(stream, total, timeout=30)]
        for thread in threads:
            thread.join()
        # Now cut the connection under a getMore that is parked waiting for events.
        threading.Timer(0.2, server.drop_connections).start()
        assert stream.try_next() is None
        client.db.flaky.insert_one({"_id": total})
        seen += [e["documentKey"]["_id"] for e in take(stream, 1)]
        assert stream.try_next() is None
        assert seen == list(range(total + 1))
        assert client.db.flaky.count_documents({}) == total + 1
    resumes = [
        c
        for c in listener.commands
        if "aggregate" in c and "resumeAfter" in c["pipeline"][0].get("$changeStream", {})
    ]
    assert resumes  # the stream re-ran its aggregate from the last token, as the spec says


def test_step_down_is_survived_by_retryable_writes_reads_and_streams(server: MongoTestServer) -> None:
    listener = Replies()
    with pymongo.MongoClient(server.uri, event_listeners=[listener]) as client:
        coll = client.db.elections
        coll.insert_one({"_id": 0})
        server.step_down()
        coll.insert_one({"_id": 1})
        failure = listener.failures[-1]
        assert failure.command_name == "insert" and failure.failure["code"] == 10107
        assert "RetryableWriteError" in failure.failure["errorLabels"]
        assert coll.count_documents({}) == 2

        server.step_down()
        assert coll.find_one({"_id": 1}) == {"_id": 1}  # retryable read
        assert listener.failures[-1].command_name == "find"

        with coll.watch(max_await_time_ms=50) as stream:
            server.step_down()
            assert stream.try_next() is None  # the getMore fails, the stream resumes
            failure = listener.failures[-1]
            assert failure.command_name == "getMore"
            assert "ResumableChangeStreamError" in failure.failure["errorLabels"]
            coll.insert_one({"_id": 2})
            assert take(stream, 1)[0]["documentKey"] == {"_id": 2}


def test_events_over_16mb_fail_or_split(client: pymongo.MongoClient) -> None:
    coll = client.db.huge
    coll.insert_one({"_id": 1, "a": "a" * (8 * MB + MB // 2)})
    with coll.watch(full_document="updateLookup", max_await_time_ms=100) as stream:
        coll.update_one({"_id": 1}, {"$set": {"a": "b" * (8 * MB + MB // 2)}})
        with pytest.raises(OperationFailure) as failure:
            take(stream, 1)
    assert failure.value.code == 10334

    split = [{"$changeStreamSplitLargeEvent": {}}]
    with coll.watch(split, full_document="updateLookup", max_await_time_ms=100) as stream:
        coll.update_one({"_id": 1}, {"$set": {"a": "c" * (8 * MB + MB // 2)}})
        coll.insert_one({"_id": 2})
        first, second, small = take(stream, 3)
    assert first["splitEvent"] == {"fragment": 1, "of": 2} and second["splitEvent"] == {
        "fragment": 2,
        "of": 2,
    }
    # Smallest fields first: the event's context travels in fragment 1, one big field in each.
    assert first["operationType"] == "update" and first["documentKey"] == {"_id": 1}
    event = {
        k: v for fragment in (first, second) for k, v in fragment.items() if k not in ("_id", "splitEvent")
    }
    assert set(event) == {
        "operationType",
        "clusterTime",
        "wallTime",
        "ns",
        "documentKey",
        "updateDescription",
        "fullDocument",
    }
    assert event["updateDescription"]["updatedFields"]["a"][0] == event["fullDocument"]["a"][0] == "c"
    assert len(set(second) - {"_id", "splitEvent"}) == 1
    assert small["operationType"] == "insert" and "splitEvent" not in small
    assert first["_id"]["_data"] < second["_id"]["_data"] < small["_id"]["_data"]
    # Resuming from the first fragment yields the second fragment next, then the rest.
    with coll.watch(split, full_document="updateLookup", resume_after=first["_id"]) as stream:
        resumed = take(stream, 2)
    assert [e.get("splitEvent") for e in resumed] == [{"fragment": 2, "of": 2}, None]
    with pytest.raises(OperationFailure) as failure:
        coll.watch(full_document="updateLookup", resume_after=first["_id"])
    assert failure.value.code == 280


def _op_msg(command: dict[str, Any], sequences: dict[str, list[dict[str, Any]]], checksum: bool) -> bytes:
    from tests.mongo_wire.wire import crc32c

    body = b"\x00" + bson.encode(command)
    for name, docs in sequences.items():
        payload = name.encode() + b"\x00" + b"".join(bson.encode(d) for d in docs)
        body += b"\x01" + struct.pack("<i", 4 + len(payload)) + payload
    flags = struct.pack("<I", 1 if checksum else 0)
    length = 16 + 4 + len(body) + (4 if checksum else 0)
    message = struct.pack("<iiii", length, 7, 0, 2013) + flags + body
    return message + struct.pack("<I", crc32c(message)) if checksum else message


def _read_reply(sock: socket.socket) -> tuple[bytes, bytes]:
    header = sock.recv(16, socket.MSG_WAITALL)
    length, _, response_to, _ = struct.unpack("<iiii", header)
    assert response_to == 7
    return header, sock.recv(length - 16, socket.MSG_WAITALL)


def test_wire_checksum_and_op_query(server: MongoTestServer) -> None:
    from tests.mongo_wire.wire import crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        command = {"insert": "raw", "$db": "db"}
        sock.sendall(_op_msg(command, {"documents": [{"_id": 1}, {"_id": 2}]}, checksum=True))
        header, body = _read_reply(sock)
        assert struct.unpack_from("<i", header, 12)[0] == 2013
        assert struct.unpack_from("<I", body)[0] & 1  # checksumPresent, answering a checksummed request
        assert struct.unpack_from("<I", body, len(body) - 4)[0] == crc32c(header + body[:-4])
        assert bson.decode(body[5:-4])["n"] == 2

        query = b"\x00\x00\x00\x00admin.$cmd\x00" + struct.pack("<ii", 0, -1) + bson.encode({"isMaster": 1})
        sock.sendall(struct.pack("<iiii", 16 + len(query), 7, 0, 2004) + query)
        header, body = _read_reply(sock)
        assert struct.unpack_from("<i", header, 12)[0] == 1  # OP_REPLY
        assert bson.decode(body[20:])["ismaster"] is True

        bad = bytearray(_op_msg({"ping": 1, "$db": "admin"}, {}, checksum=True))
        bad[-1] ^= 0xFF
        sock.sendall(bytes(bad))
        assert sock.recv(16) == b""  # a corrupt message closes the connection


def test_module_runs_in_the_foreground_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo_wire", "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        uri = process.stdout.readline().strip() if process.stdout else ""
        assert uri.startswith("mongodb://127.0.0.1:") and uri.endswith("/?replicaSet=rs0")
        with pymongo.MongoClient(uri) as client:
            client.db.c.insert_one({"_id": 1})
            assert client.db.c.find_one() == {"_id": 1}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


def test_start_before_the_oplog_begins_is_history_lost(client: pymongo.MongoClient) -> None:
    """A new replica set's oplog starts at its initiation; an earlier start time is not in it."""
    db = client[f"db_{uuid.uuid4().hex[:8]}"]
    with pytest.raises(OperationFailure) as lost:
        with db.watch(start_at_operation_time=Timestamp(1, 1), max_await_time_ms=100) as stream:
            stream.try_next()
    assert lost.value.code == 286
    now = db.command("ping")["operationTime"]
    with db.watch(start_at_operation_time=now, max_await_time_ms=100) as stream:
        db["c"].insert_one({"_id": 1})
        change = stream.try_next() or stream.try_next()
    assert change is not None and change["operationType"] == "insert"
