#!/usr/bin/env python3
"""Benchmark: cartridge-warp MongoDB -> PostgreSQL, synthetic and through the wire test server, against raw COPY.

What it does (``make bench-mongo`` runs it with the defaults, in about two and a half minutes; this is not a test):

1. waits (``--quiet-wait``) for an idle machine, then generates ``--docs`` small documents (nine fields:
   ObjectId or int ``_id``, two strings, an int32, a double, a Decimal128, a date, a bool and a small
   embedded document holding an array) and ``--events`` change events over them (inserts, updates,
   deletes: 2 : 7 : 1), each encoded once as BSON in memory (not timed);
2. **raw (a)**: PostgreSQL ``COPY ... FROM STDIN`` of the rows cartridge-warp writes for those documents
   (mapped with ``DocumentMapper``, encoded with the plan's COPY encoders) into a table with
   cartridge-warp's DDL (``make_plan`` / ``create_table_sql``), one transaction; only COPY and commit
   are timed.  **raw (d)**: the same documents decoded from BSON, fitted, mapped and COPY-encoded in one
   thread with no database at all: the Python cost of one document, per step;
3. **synthetic**: runs :class:`warpd.engine.runner.SchemaRunner` in this process with a source that is
   MongoDB's own connector minus the server: :class:`SyntheticMongoSource` subclasses ``MongoSource``
   and replaces only the reads.  Its snapshot decodes the pre-encoded documents (``bson.decode_all``
   with the connector's codec options, as pymongo decodes a reply) and maps each chunk as
   ``MongoSource.snapshot`` does (``fit`` every document, then ``row``); its stream decodes
   pre-encoded change events (``fullDocument`` as ``updateLookup`` returns it) in batches of 1,000 and
   hands each to ``MongoSource.change_events``, the connector's own conversion, with a ``Heartbeat`` after
   each batch.  It is registered as source type ``mongodb`` in this process only (the configuration
   schema's ``type`` enum has no other name for it), with the configuration's defaults.  Timed:
   snapshot documents/s (first chunk read -> table marked copied) and streaming events/s (first
   event -> the last batch committed), each next to raw COPY, with wall-clock seconds per stage
   (decode, map, the engine's flush, COPY-line encoding, PostgreSQL round trips);
4. **wire**: starts ``python -m tests.mongo_wire`` in its own process (so the server does not share a
   GIL with anything measured), inserts ``--wire-docs`` documents with ``insert_many`` (timed: the
   server's ingest rate), reads them back with pymongo alone as the snapshot does (keyset queries of
   20,000 in ``_id`` order, the connector's codec options: the server's read ceiling), runs
   ``python -m warpd --mode single --source mongodb://127.0.0.1:P/warp_bench_mongo?replicaSet=rs0 ...``
   and times the snapshot until the state file marks the collection done.  With it streaming, writes
   ``--wire-changes`` changes (``update_many`` over ``_id`` ranges and ``insert_many``, 1,000 documents
   a call, 4 : 1) and a marker, and times from the first write until the marker is in PostgreSQL and
   the table's checksum equals the test server's (taken after the writes; the marker's apply worker
   may commit before the other's); then reads that change-stream range with pymongo alone (``fullDocument: updateLookup``, as the
   connector) for the server's change-stream ceiling.  Catch-up (skip with ``--no-catch-up``): stops
   the process, writes as many changes again, restarts it on the same state directory and times
   until everything has arrived (marker and checksum), which the server's write rate no longer limits;
5. **the OLTP shape** (skip with ``--skip-oltp``; ``--skip-bulk`` measures only this), reported apart
   from the figures above, which are the bulk shape.  Documents like an e-commerce ``orders`` row
   (``_id``, ``user_id``, ``product_id``, ``status``, ``quantity``, Decimal128 ``price``, ``note``
   string or null, ``created_at`` / ``updated_at`` dates, an embedded ``payload`` {src, tags, n}),
   and single-document changes: updates that ``$set`` four fields (``status``, ``quantity``,
   ``note``, ``updated_at``), inserts and deletes, 20 : 5 : 2, each its own event, resume token and
   transaction.  **Synthetic** (``OltpSource``): ``--oltp-docs`` orders copied, then
   ``--oltp-events`` change events (default 270,000: 200k updates, 50k inserts, 20k deletes), each
   encoded on its own and decoded one at a time as the connector decodes what ``try_next``
   returns, with ``updatedFields`` and ``fullDocument`` as ``updateLookup`` gives them; timed as
   the bulk stream (events/s, process CPU, CPU seconds per 1,000 events).  **Wire**: a test server
   of its own with ``--oltp-wire-docs`` orders; with warp streaming, ``--oltp-wire-changes``
   ``update_one({_id}, {$set: ...})`` / ``insert_one`` / ``delete_one`` calls back to back and a
   marker, timed from the first write until the marker is in PostgreSQL; pymongo alone then reads
   that change-stream range (``start_after`` the token taken before the burst, ``updateLookup``).
   Catch-up: stop warp, the same writes again, restart, time until the marker arrives; pymongo
   alone reads that range from warp's checkpoint.  Warp's CPU seconds per 1,000 events for both
   (catch-up: from the 'streaming' log line on).  The test server's ``update_one`` and
   ``delete_one`` scan the collection (mongomock), a few hundred calls a second with 1,000 orders,
   so the live figure is the server's write rate; the catch-up is not limited by it;
6. verifies row count and a checksum over seven columns (the orders: eight) on both sides of every
   run (the synthetic source's expected final state; the test server's collection), prints the
   figures (and JSON with ``--json``), and drops the databases and schemas (``--keep`` keeps the
   PostgreSQL schemas and the state directories; the test server's data lives in its memory and
   goes with it).

Every timed phase also records the share of the machine that was busy and the CPU seconds of the
process doing the work.  The header names the machine and the commit measured.  On a small shared VM
absolute rates vary by +-15 % between runs (more while anything else runs); the ratios within one run
are steadier.

``--profile DIR`` runs the synthetic parts (bulk and OLTP) under cProfile in every thread (main, snapshot writer, apply
workers), writes one ``.pstats`` file per phase to DIR and prints the shares of busy time (waits on
queues and locks left out).  cProfile makes Python calls about three times slower here, so a profiled
run's rates are low: read its shares, and the stage timers of an unprofiled run for seconds.

``--gc-threshold N`` is an experiment: ``gc.set_threshold(N, 10, 10)`` in this process for the synthetic
part (Python's default first threshold is 700), to measure what the cyclic garbage collector costs
the engine.

Needs PostgreSQL on 127.0.0.1:5432 (user warp/warp, database warp_test; scripts/setup-databases.sh).
Warp's own settings can be varied with ``CARTRIDGE_WARP_*`` variables (docs/configuration.md); both the
in-process runner and the child process read them.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as _dt
import gc
import hashlib
import io
import json
import math
import os
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from decimal import Decimal
from typing import Any

import bson
import psycopg2
from bson import json_util
from bson.decimal128 import Decimal128
from bson.objectid import ObjectId
from bson.timestamp import Timestamp
from common import (  # the checkout's warpd, first on sys.path (see common.py)
    ROOT,
    CpuWindow,
    add_output_options,
    host_facts,
    package_version,
    process_cpu,
    ratio,
    report_tail,
    say,
    wait_for_quiet,
    warpd_revision,
)
from pg_common import pg_facts
from pg_common import raw_copy as pg_raw_copy
from psycopg2 import sql

from warpd.connectors.base import Event, Heartbeat, Position, SnapshotChunk
from warpd.connectors.mongodb.mapping import DocumentMapper
from warpd.connectors.mongodb.source import CODEC_OPTIONS, MongoSource
from warpd.connectors.postgresql.destination import TablePlan, make_plan
from warpd.state.store import StateStore
from warpd.types import TableSchema

DB = "warp_bench_mongo"  # MongoDB database, PostgreSQL schema and cartridge-warp schema of the wire run
SYN = "warp_bench_mongo_syn"  # PostgreSQL schema and cartridge-warp schema of the synthetic run
RAW_SCHEMA = "warp_bench_mongo_raw"  # PostgreSQL schema of the raw COPY measurement
COLL = "bench"
OLTP_DB = "warp_bench_mongo_oltp"  # the OLTP shape through the wire server: MongoDB db, PG and warp schema
OLTP_SYN = "warp_bench_mongo_oltp_syn"  # the OLTP shape, synthetic: PostgreSQL and cartridge-warp schema
OLTP_COLL = "orders"
PG_DSN = "postgresql://warp:warp@127.0.0.1:5432/warp_test"

AIM_APPLY_DOCS = 20_000  # issue 3, point 7: applying at least 20,000 small documents/s
STATE_POLL = 0.2  # seconds between state-file polls (snapshot)
MARKER_POLL = 0.02  # seconds between destination polls (streaming)
EVENT_BATCH = 1_000  # change events decoded at a time, like one getMore reply
WIRE_WRITE_BATCH = 1_000  # documents per insert_many / update_many of the wire burst
READ_CHUNK = 20_000  # the default snapshot_chunk_size, for the pymongo-alone read

EPOCH = _dt.datetime(2020, 1, 1, tzinfo=_dt.UTC)
_TOKEN_TAIL = "2B022C0100296E5A1004" + "A1B2C3D4E5F60718293A4B5C6D7E8F90" * 3 + "04"  # real tokens: ~120 hex


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------- the documents
class Docs:
    """The generated documents: ``doc(i, v)`` is document ``i`` after ``v`` updates."""

    def __init__(self, id_type: str):
        self.id_type = id_type

    def id_of(self, i: int) -> Any:
        if self.id_type == "int":
            return i
        return ObjectId(b"\x5e\x0b\xe1\x00" + i.to_bytes(8, "big"))  # sorts like i

    def doc(self, i: int, v: int = 0) -> dict[str, Any]:
        return {
            "_id": self.id_of(i),
            "sku": f"SKU-{i:09d}",
            "name": f"product {i} rev {v}",
            "qty": (i * 31 + v) % 100_000,
            "price": Decimal128(f"{i % 100_000}.{i % 100:02d}"),
            "score": i / 7.0 + v,
            "created": EPOCH + _dt.timedelta(seconds=i, milliseconds=i % 1000),
            "active": (i + v) % 3 != 0,
            "attrs": {"color": ("red", "green", "blue")[i % 3], "size": i % 50, "tags": ["a", f"t{i % 13}"]},
        }


def checksum_text(doc: Mapping[str, Any]) -> str:
    """What CHECKSUM_SQL hashes for one row, computed from the document."""
    price = doc["price"].to_decimal() if isinstance(doc["price"], Decimal128) else Decimal(doc["price"])
    created = doc["created"]
    if created.tzinfo is None:
        created = created.replace(tzinfo=_dt.UTC)
    return "|".join(
        (
            str(doc["_id"]),
            doc["sku"],
            doc["name"],
            str(int(doc["qty"])),
            str(price),
            "t" if doc["active"] else "f",
            str(math.floor(created.timestamp())),
        )
    )


def checksum(texts: Iterator[str]) -> dict[str, int]:
    rows = total = 0
    for text in texts:
        rows += 1
        total += int(hashlib.md5(text.encode("utf-8")).hexdigest()[:8], 16)
    return {"rows": rows, "checksum": total}


CHECKSUM_SQL = sql.SQL(
    "SELECT count(*), sum(('x' || left(md5(concat_ws('|', \"_id\", sku, name, qty, price, active, "
    "floor(extract(epoch FROM created))::bigint)), 8))::bit(32)::bigint) FROM {}"
)


def pg_checksum(schema: str) -> dict[str, int]:
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(CHECKSUM_SQL.format(sql.Identifier(schema, COLL)))
        count, total = cur.fetchone()
    conn.close()
    return {"rows": int(count), "checksum": int(total or 0)}


class Workload:
    """The synthetic source's data: snapshot documents and change events, BSON-encoded once.

    Event ``j`` is, by ``j % 10``: 0 or 5 an insert of a new document, 9 a delete of one of the
    highest ``_id``\\ s, anything else an update (new fields values, ``fullDocument`` as
    ``updateLookup`` gives it) of a document no delete touches.
    """

    coll = COLL

    def __init__(self, docs: Docs, count: int, events: int):
        if events // 10 + 1 >= count // 2:
            raise BenchError("--events / 10 must stay below half of --docs (deletes take the top ids)")
        self._encode_snapshot(docs, count, events)
        self.event_batches: list[bytes] = []
        updatable = count - (events // 10 + 1)
        next_new, next_delete = count, count - 1
        batch = bytearray()
        for j in range(events):
            kind = j % 10
            token = {"_data": f"82{self.t0 + j // 1000:08X}{j % 1000 + 1:08X}{_TOKEN_TAIL}"}
            ct = Timestamp(self.t0 + j // 1000, j % 1000 + 1)
            change: dict[str, Any] = {
                "_id": token,
                "clusterTime": ct,
                "wallTime": _dt.datetime.fromtimestamp(ct.time, _dt.UTC),
                "ns": {"db": SYN, "coll": COLL},
            }
            if kind in (0, 5):
                i, next_new = next_new, next_new + 1
                self.versions[i] = 0
                doc = docs.doc(i)
                change |= {"operationType": "insert", "fullDocument": doc, "documentKey": {"_id": doc["_id"]}}
                self.ops["insert"] += 1
            elif kind == 9:
                i, next_delete = next_delete, next_delete - 1
                del self.versions[i]
                self.deleted.add(i)
                change |= {"operationType": "delete", "documentKey": {"_id": docs.id_of(i)}}
                self.ops["delete"] += 1
            else:
                i = (j * 7919) % updatable
                self.versions[i] += 1
                doc = docs.doc(i, self.versions[i])
                change |= {
                    "operationType": "update",
                    "documentKey": {"_id": doc["_id"]},
                    "updateDescription": {
                        "updatedFields": {k: doc[k] for k in ("name", "qty", "score", "active")},
                        "removedFields": [],
                        "truncatedArrays": [],
                    },
                    "fullDocument": doc,
                }
                self.ops["update"] += 1
            batch += bson.encode(change)
            if (j + 1) % EVENT_BATCH == 0 or j == events - 1:
                self.event_batches.append(bytes(batch))
                batch = bytearray()
        self.last_token = token if events else None

    def _encode_snapshot(self, docs: Docs, count: int, events: int) -> None:
        self.docs = docs
        self.count = count
        self.events = events
        self.t0 = int(time.time()) - 3600
        buf = bytearray()
        self.offsets = [0]
        for i in range(count):
            buf += bson.encode(docs.doc(i))
            self.offsets.append(len(buf))
        self.snapshot_bson = bytes(buf)
        self.versions: dict[int, int] = dict.fromkeys(range(count), 0)
        self.deleted: set[int] = set()
        self.ops = {"insert": 0, "update": 0, "delete": 0}

    def chunk(self, start: int, size: int) -> list[dict[str, Any]]:
        """Documents ``start`` .. ``start + size - 1``, decoded from BSON as pymongo decodes a reply."""
        end = min(self.count, start + size)
        return bson.decode_all(self.snapshot_bson[self.offsets[start] : self.offsets[end]], CODEC_OPTIONS)

    def expected(self) -> dict[str, int]:
        """Count and checksum of the collection after every event."""
        return checksum(checksum_text(self.docs.doc(i, v)) for i, v in self.versions.items())

    def pg_checksum(self, schema: str) -> dict[str, int]:
        return pg_checksum(schema)


# --------------------------------------------------------------------------- the OLTP shape
ORDER_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
ORDER_UPDATED = ("status", "quantity", "note", "updated_at")  # what one application update $sets
OLTP_MIX = (20, 5, 2)  # updates : inserts : deletes, as 200k : 50k : 20k
_OLTP_INSERTS = frozenset((2, 7, 12, 17, 22))  # j % 27 -> an insert_one ...
_OLTP_DELETES = frozenset((9, 24))  # ... a delete_one; anything else an update_one


def oltp_kind(j: int) -> str:
    """The kind of the OLTP stream's ``j``-th change: 20 updates, 5 inserts and 2 deletes in 27."""
    r = j % sum(OLTP_MIX)
    return "insert" if r in _OLTP_INSERTS else "delete" if r in _OLTP_DELETES else "update"


def oltp_mix(changes: int) -> dict[str, int]:
    ops = {"insert": 0, "update": 0, "delete": 0}
    for j in range(changes):
        ops[oltp_kind(j)] += 1
    return ops


class Orders(Docs):
    """An e-commerce ``orders`` collection: ``doc(i, v)`` is order ``i`` after ``v`` updates.

    An update changes only :data:`ORDER_UPDATED` (``status``, ``quantity``, ``note``,
    ``updated_at``), so ``{"$set": fields(i, v)}`` on ``doc(i, v - 1)`` gives ``doc(i, v)``.
    """

    def fields(self, i: int, v: int) -> dict[str, Any]:
        return {
            "status": ORDER_STATUSES[(i + v) % len(ORDER_STATUSES)],
            "quantity": 1 + (i + v) % 9,
            "note": (f"gift {i}" if i % 4 == 0 else None)
            if v == 0
            else (None if v % 3 == 0 else f"note {v}"),
            "updated_at": EPOCH + _dt.timedelta(seconds=i + 60 * v, milliseconds=i % 1000),
        }

    def doc(self, i: int, v: int = 0) -> dict[str, Any]:
        return {
            "_id": self.id_of(i),
            "user_id": (i * 7919) % 50_000,
            "product_id": (i * 31) % 5_000,
            "price": Decimal128(f"{i % 5_000 + 1}.{i % 100:02d}"),
            "created_at": EPOCH + _dt.timedelta(seconds=i, milliseconds=i % 1000),
            "payload": {"src": ("web", "app", "pos")[i % 3], "tags": ["o", f"t{i % 7}"], "n": i % 10},
        } | self.fields(i, v)


def order_checksum_text(doc: Mapping[str, Any]) -> str:
    """What ORDERS_CHECKSUM_SQL hashes for one row (concat_ws skips a null ``note``)."""
    price = doc["price"].to_decimal() if isinstance(doc["price"], Decimal128) else Decimal(doc["price"])
    updated = doc["updated_at"]
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=_dt.UTC)
    parts = [str(doc["_id"]), str(doc["user_id"]), str(doc["product_id"]), doc["status"]]
    parts += [str(int(doc["quantity"])), str(price)]
    if doc["note"] is not None:
        parts.append(doc["note"])
    parts.append(str(math.floor(updated.timestamp())))
    return "|".join(parts)


ORDERS_CHECKSUM_SQL = sql.SQL(
    "SELECT count(*), sum(('x' || left(md5(concat_ws('|', \"_id\", user_id, product_id, status, quantity, "
    "price, note, floor(extract(epoch FROM updated_at))::bigint)), 8))::bit(32)::bigint) FROM {}"
)


def pg_orders_checksum(schema: str) -> dict[str, int]:
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(ORDERS_CHECKSUM_SQL.format(sql.Identifier(schema, OLTP_COLL)))
        count, total = cur.fetchone()
    conn.close()
    return {"rows": int(count), "checksum": int(total or 0)}


class OltpWorkload(Workload):
    """The OLTP shape for the synthetic source: ``count`` orders, then ``events`` single-document changes.

    Each change event is encoded on its own (``raw_events``), with its own resume token and cluster
    time, as a change stream delivers the changes of single-document writes: each its own
    transaction.  Event ``j`` is :func:`oltp_kind`: an update (``updatedFields`` the four fields an
    application ``$set``\\ s, ``fullDocument`` as ``updateLookup`` returns it) of an order no delete
    touches, an insert of a new order, or a delete of one of the highest ``_id``\\ s.
    """

    coll = OLTP_COLL

    def __init__(self, docs: Orders, count: int, events: int):
        ops = oltp_mix(events)
        if ops["delete"] + 1 >= count // 2:
            raise BenchError(
                "the OLTP stream's deletes must stay below half of --oltp-docs (they take the top ids)"
            )
        self._encode_snapshot(docs, count, events)
        self.orders = docs
        self.raw_events: list[bytes] = []
        updatable = count - (ops["delete"] + 1)
        next_new, next_delete = count, count - 1
        token: dict[str, str] | None = None
        for j in range(events):
            kind = oltp_kind(j)
            token = {"_data": f"82{self.t0 + j // 1000:08X}{j % 1000 + 1:08X}{_TOKEN_TAIL}"}
            ct = Timestamp(self.t0 + j // 1000, j % 1000 + 1)
            change: dict[str, Any] = {
                "_id": token,
                "operationType": kind,
                "clusterTime": ct,
                "wallTime": _dt.datetime.fromtimestamp(ct.time, _dt.UTC),
                "ns": {"db": OLTP_SYN, "coll": OLTP_COLL},
            }
            if kind == "insert":
                i, next_new = next_new, next_new + 1
                self.versions[i] = 0
                doc = docs.doc(i)
                change |= {"fullDocument": doc, "documentKey": {"_id": doc["_id"]}}
            elif kind == "delete":
                i, next_delete = next_delete, next_delete - 1
                del self.versions[i]
                self.deleted.add(i)
                change |= {"documentKey": {"_id": docs.id_of(i)}}
            else:
                i = (j * 7919) % updatable
                self.versions[i] += 1
                doc = docs.doc(i, self.versions[i])
                change |= {
                    "documentKey": {"_id": doc["_id"]},
                    "updateDescription": {
                        "updatedFields": {k: doc[k] for k in ORDER_UPDATED},
                        "removedFields": [],
                        "truncatedArrays": [],
                    },
                    "fullDocument": doc,
                }
            self.ops[kind] += 1
            self.raw_events.append(bson.encode(change))
        self.last_token = token

    def expected(self) -> dict[str, int]:
        return checksum(order_checksum_text(self.orders.doc(i, v)) for i, v in self.versions.items())

    def pg_checksum(self, schema: str) -> dict[str, int]:
        return pg_orders_checksum(schema)


# --------------------------------------------------------------------------- the synthetic source
class Timers:
    """Wall-clock seconds per stage, summed over calls and threads; cheap enough to leave on."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._undo: list[tuple[type, str, Any]] = []

    def add(self, stage: str, seconds: float, calls: int = 1) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
            self.calls[stage] = self.calls.get(stage, 0) + calls

    def wrap(self, cls: type, method: str, stage: Callable[[], str]) -> None:
        """Time every call of ``cls.method`` (per-batch methods only: the wrapper costs about 1 us)."""
        original = cls.__dict__[method]
        timers, clock = self, time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return original(*args, **kwargs)
            finally:
                timers.add(stage(), clock() - t0)

        setattr(cls, method, timed)
        self._undo.append((cls, method, original))

    def unwrap(self) -> None:
        while self._undo:
            cls, method, original = self._undo.pop()
            setattr(cls, method, original)

    def table(self, prefix: str, wall: float) -> list[tuple[str, float, float, int]]:
        """(stage, seconds, share of ``wall``, calls) of the stages named ``prefix...``."""
        return [
            (k.removeprefix(prefix), round(v, 3), round(100 * v / wall, 1), self.calls[k])
            for k, v in self.seconds.items()
            if k.startswith(prefix)
        ]


class SyntheticMongoSource(MongoSource):
    """MongoDB's connector with the server replaced by pre-encoded documents and change events.

    Everything between the decoded BSON and the engine is the connector's own code: the snapshot maps
    each chunk as ``MongoSource.snapshot`` does, and every change event goes through
    ``MongoSource.change_events``.  ``on_phase`` is called with "snapshot", "snapshot done", "stream" and
    "stream done" as the engine gets there.
    """

    def __init__(
        self,
        uri: str,
        database: str,
        schema_name: str,
        options: Mapping[str, Any] | None,
        workload: Workload,
        on_phase: Callable[[str], None],
        timers: Timers,
    ):
        super().__init__(uri, database, schema_name, options)
        self.workload = workload
        self.timers = timers
        self.on_phase = on_phase
        self.finished = False  # every event has been handed to the engine

    def check_prerequisites(self) -> None:
        self._split_supported = False

    def check_position(self, position: Position) -> None:
        pass

    def current_position(self) -> Position:
        return {"cluster_time": [self.workload.t0, 0]}

    def list_tables(self) -> list[str]:
        return [self.workload.coll]

    def table_exists(self, table: str) -> bool:
        return table == self.workload.coll

    def describe(self, table: str, key_columns: tuple[str, ...] | None = None) -> TableSchema:
        mapper = self.mapper(table)
        docs = self.workload.chunk(0, self.sample_size)
        shape = mapper.initial_shape(docs[0]["_id"] if docs else None)
        for doc in docs:
            shape = mapper.fit(shape, doc)
        return shape

    def estimate_rows(self, table: str) -> int:
        return self.workload.count

    def snapshot(
        self,
        schema: TableSchema,
        resume_after: Mapping[str, Any] | None,
        chunk_size: int,
        bulk_format: str | None = None,
    ) -> Iterator[SnapshotChunk]:
        if resume_after is not None:
            raise BenchError("the synthetic source cannot resume a snapshot")
        self.on_phase("snapshot")
        table, mapper, shape = schema.name, self.mapper(schema.name), schema
        start = 0
        clock, timers = time.perf_counter, self.timers
        while start < self.workload.count:
            t0 = clock()
            docs = self.workload.chunk(start, chunk_size)
            t1 = clock()
            start += len(docs)
            before = shape
            for doc in docs:
                shape = mapper.fit(shape, doc)
            rows = [mapper.row(shape, doc) for doc in docs]
            last = docs[-1]["_id"]
            resume_after = {"_id": json_util.dumps(last, json_options=json_util.CANONICAL_JSON_OPTIONS)}
            timers.add("snapshot: decode BSON (main thread)", t1 - t0)
            timers.add("snapshot: fit + row (main thread)", clock() - t1)
            yield SnapshotChunk(table, rows, resume_after, schema=shape if shape is not before else None)
        yield SnapshotChunk(table, [], resume_after, done=True)

    def table_copied(self, table: str, position: Position | None = None) -> Position:
        self.on_phase("snapshot done")
        return super().table_copied(table, position)

    def stream(
        self,
        start: Position,
        tables: MutableMapping[str, TableSchema],
        included: Callable[[str], bool],
        key_override: Callable[[str], tuple[str, ...] | None],
        skipped: Callable[[str], bool] = lambda _t: False,
    ) -> Iterator[Event]:
        if self.finished:
            raise BenchError("the synthetic stream was reopened (an error in the engine?)")
        self.on_phase("stream")
        position: Position = start
        clock, timers = time.perf_counter, self.timers
        for batch in self.workload.event_batches:
            t0 = clock()
            changes = bson.decode_all(batch, CODEC_OPTIONS)
            timers.add("stream: decode BSON (main thread)", clock() - t0)
            for change in changes:
                before, position = position, {"token": change["_id"]}
                t0 = clock()
                events = list(self.change_events(change, before, position, tables, included))
                timers.add("stream: MongoSource.change_events: fit + row (main thread)", clock() - t0)
                yield from events
            yield Heartbeat(position)  # the batch's postBatchResumeToken
        self.finished = True
        self.on_phase("stream done")
        yield Heartbeat(position)
        raise BenchError("the engine did not stop after the last event")

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class OltpSource(SyntheticMongoSource):
    """:class:`SyntheticMongoSource` streaming :class:`OltpWorkload`'s events one at a time.

    Each event is decoded on its own with the connector's codec options and handed to
    ``MongoSource.change_events`` with its BSON size, as ``MongoSource.stream`` does with what
    ``try_next`` returns; no ``Heartbeat`` until the end (a change stream that is behind returns full
    batches, so ``try_next`` does not come back empty until it has caught up).
    """

    def stream(
        self,
        start: Position,
        tables: MutableMapping[str, TableSchema],
        included: Callable[[str], bool],
        key_override: Callable[[str], tuple[str, ...] | None],
        skipped: Callable[[str], bool] = lambda _t: False,
    ) -> Iterator[Event]:
        if self.finished:
            raise BenchError("the synthetic stream was reopened (an error in the engine?)")
        workload = self.workload
        assert isinstance(workload, OltpWorkload)
        self.on_phase("stream")
        position: Position = start
        clock, timers, decode = time.perf_counter, self.timers, bson.decode
        decode_s = convert_s = 0.0
        n = 0
        for raw in workload.raw_events:
            t0 = clock()
            change = decode(raw, codec_options=CODEC_OPTIONS)
            t1 = clock()
            before, position = position, {"token": change["_id"]}
            events = list(self.change_events(change, before, position, tables, included, len(raw)))
            decode_s += t1 - t0
            convert_s += clock() - t1
            n += 1
            if n == EVENT_BATCH:  # the stage timers take a lock: add them up a batch at a time
                timers.add("stream: decode BSON, one event a call (main thread)", decode_s, n)
                timers.add("stream: MongoSource.change_events: fit + row (main thread)", convert_s, n)
                decode_s = convert_s = 0.0
                n = 0
            yield from events
        if n:
            timers.add("stream: decode BSON, one event a call (main thread)", decode_s, n)
            timers.add("stream: MongoSource.change_events: fit + row (main thread)", convert_s, n)
        self.finished = True
        self.on_phase("stream done")
        yield Heartbeat(position)
        raise BenchError("the engine did not stop after the last event")


# --------------------------------------------------------------------------- profiling
class ThreadProfiles:
    """cProfile in every thread, by phase.

    The main thread switches to a fresh profile at each phase change; the other threads are profiled
    whole and belong to the phase their name says: the snapshot writer (``snapshot-*``) lives in the
    snapshot only, the apply workers (``apply-*``) start with the stream.
    """

    # builtins in which a thread blocks, GIL released: waiting, not work
    WAITS = ("_queue.SimpleQueue' objects>", "'acquire' of '_thread.lock' objects>", "time.sleep>")

    def __init__(self) -> None:
        self.phase = "start"
        self.profiles: list[tuple[str, str, cProfile.Profile]] = []  # (phase, thread, profile)
        self._main: cProfile.Profile | None = None
        self._orig_run = threading.Thread.run
        self._lock = threading.Lock()

    def _add(self, phase: str, thread: str, prof: cProfile.Profile) -> None:
        with self._lock:
            self.profiles.append((phase, thread, prof))

    def start(self) -> None:
        profiles, orig = self, self._orig_run

        def run(thread: threading.Thread) -> None:
            prof = cProfile.Profile()
            name = thread.name
            phase = (
                "snapshot"
                if name.startswith("snapshot-")
                else "stream"
                if name.startswith("apply-")
                else None
            )
            profiles._add(phase or profiles.phase, name, prof)
            prof.enable()
            try:
                orig(thread)
            finally:
                prof.disable()

        threading.Thread.run = run  # type: ignore[method-assign]
        self.switch("start")

    def switch(self, phase: str) -> None:
        if self._main is not None:
            self._main.disable()
        self.phase = phase
        self._main = cProfile.Profile()
        self._add(phase, "MainThread", self._main)
        self._main.enable()

    def stop(self) -> None:
        if self._main is not None:
            self._main.disable()
            self._main = None
        threading.Thread.run = self._orig_run  # type: ignore[method-assign]

    @staticmethod
    def _name(func: tuple[str, int, str]) -> str:
        file, _line, fn = func
        for marker in ("/site-packages/", "/lib/python3.11/"):
            if marker in file:
                return f"{file.split(marker, 1)[1]}:{fn}"
        return f"{file[len(ROOT) + 1 :] if file.startswith(ROOT + '/') else file}:{fn}"

    def report(self, out_dir: str, prefix: str = "synthetic", top: int = 18) -> dict[str, Any]:
        """Per phase: busy seconds per thread, and self / inclusive shares of the busy time."""
        os.makedirs(out_dir, exist_ok=True)
        out: dict[str, Any] = {}
        for phase in ("snapshot", "stream"):
            threads: dict[str, list[float]] = {}  # thread -> [busy, waiting]
            merged: pstats.Stats | None = None
            for prof_phase, name, prof in self.profiles:
                if prof_phase != phase:
                    continue
                prof.create_stats()
                if not prof.stats:  # type: ignore[attr-defined]
                    continue
                st = pstats.Stats(prof)
                waited = sum(
                    v[2]
                    for k, v in st.stats.items()  # type: ignore[attr-defined]
                    if k[0] == "~" and k[2].endswith(self.WAITS)
                )
                label = name.rsplit("_", 1)[0] if name.startswith("apply-") else name
                acc = threads.setdefault(label, [0.0, 0.0])
                acc[0] += st.total_tt - waited  # type: ignore[attr-defined]
                acc[1] += waited
                if merged is None:
                    merged = st
                else:
                    merged.add(st)
            if merged is None:
                continue
            path = os.path.join(out_dir, f"{prefix}-{phase}.pstats")
            merged.dump_stats(path)
            raw = merged.stats  # type: ignore[attr-defined]
            busy = sum(v[2] for k, v in raw.items() if not (k[0] == "~" and k[2].endswith(self.WAITS)))
            own = sorted(
                (
                    (v[2], self._name(k))
                    for k, v in raw.items()
                    if not (k[0] == "~" and k[2].endswith(self.WAITS))
                ),
                reverse=True,
            )
            incl = sorted(
                ((v[3], self._name(k)) for k, v in raw.items() if self._name(k).startswith("warpd/")),
                reverse=True,
            )
            out[phase] = {
                "pstats": path,
                "busy_seconds": round(busy, 2),
                "threads_busy_wait_s": {k: [round(b, 2), round(w, 2)] for k, (b, w) in threads.items()},
                "self": [(n, round(100 * t / busy, 1)) for t, n in own[:top]],
                "inclusive": [(n, round(100 * t / busy, 1)) for t, n in incl[:top]],
            }
        return out


# --------------------------------------------------------------------------- connections
def pg() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(PG_DSN, application_name="warp-bench-mongo")
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    conn.commit()
    return conn


def drop_pg_schemas(*schemas: str) -> None:
    conn = pg()
    with conn, conn.cursor() as cur:
        for schema in schemas:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.close()


# --------------------------------------------------------------------------- raw limits
def shape_and_rows(workload: Workload) -> tuple[TableSchema, list[dict[str, Any]]]:
    mapper = DocumentMapper(COLL)
    docs = workload.chunk(0, workload.count)
    shape = mapper.initial_shape(docs[0]["_id"])
    for doc in docs:
        shape = mapper.fit(shape, doc)
    return shape, [mapper.row(shape, doc) for doc in docs]


def raw_copy(workload: Workload) -> dict[str, Any]:
    """(a) COPY FROM STDIN of the mapped rows into a table with cartridge-warp's DDL, one transaction."""
    shape, rows = shape_and_rows(workload)
    plan = make_plan(shape, RAW_SCHEMA, soft_delete=False, metadata=False)
    data = io.BytesIO("".join("\t".join(plan.encode(row)) + "\n" for row in rows).encode("utf-8"))
    out = pg_raw_copy(plan, data, len(rows))
    out["bytes_per_row"] = round(len(data.getbuffer()) / len(rows))
    out["columns"] = [f"{c.name} {c.type.describe()}" for c in shape.columns]
    return out


def raw_map(workload: Workload, chunk_size: int) -> dict[str, Any]:
    """(d) decode + fit + row + COPY encoding of every document, one thread, no database."""
    say("raw (d): decoding, mapping and COPY-encoding the documents in one thread, no database")
    mapper = DocumentMapper(COLL)
    shape = mapper.initial_shape(workload.docs.id_of(0))
    plan: TablePlan | None = None
    cpu = CpuWindow(os.getpid())
    t0 = time.monotonic()
    stages = {"decode": 0.0, "fit": 0.0, "row": 0.0, "encode": 0.0}
    size = 0
    for start in range(0, workload.count, chunk_size):
        a = time.perf_counter()
        docs = workload.chunk(start, chunk_size)
        b = time.perf_counter()
        for doc in docs:
            shape = mapper.fit(shape, doc)
        c = time.perf_counter()
        rows = [mapper.row(shape, doc) for doc in docs]
        d = time.perf_counter()
        if plan is None or plan.source is not shape:
            plan = make_plan(shape, RAW_SCHEMA, soft_delete=False, metadata=False)
        size += len("".join("\t".join(plan.encode(row)) + "\n" for row in rows))
        e = time.perf_counter()
        stages["decode"] += b - a
        stages["fit"] += c - b
        stages["row"] += d - c
        stages["encode"] += e - d
    seconds = time.monotonic() - t0
    used = cpu.stop()
    n = workload.count
    say(f"  {n / seconds:,.0f} documents/s ({seconds:.2f}s)")
    return {
        "documents": n,
        "seconds": round(seconds, 3),
        "docs_per_s": round(n / seconds),
        "us_per_doc": {k: round(v * 1e6 / n, 2) for k, v in stages.items()},
        "client_cpu_s": used["warp_cpu_s"],
    }


# --------------------------------------------------------------------------- the synthetic run
def synthetic_run(
    workload: Workload,
    profile_dir: str | None,
    gc_threshold: int | None,
    keep: bool,
    name: str = SYN,
    source_cls: type[SyntheticMongoSource] = SyntheticMongoSource,
    label: str = "synthetic",
) -> dict[str, Any]:
    """SchemaRunner in this process, fed by ``source_cls`` (SyntheticMongoSource or OltpSource) with
    ``workload``, replicating into schema ``name``; snapshot and stream timed."""
    import warpd.connectors.builtin  # noqa: F401 - registers the real "mongodb" first, to restore it after
    from warpd import logs
    from warpd.config import load_config
    from warpd.connectors import registry
    from warpd.connectors.postgresql.destination import PostgresDestination
    from warpd.engine.applier import TableApplier
    from warpd.engine.runner import SchemaRunner

    state_dir = tempfile.mkdtemp(prefix=f"warp-bench-mongo-{label}-")
    config_path = os.path.join(state_dir, "config.yaml")
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(  # JSON is YAML
            {
                "source": {
                    "type": "mongodb",
                    "connection_string": f"mongodb://synthetic.invalid:27017/{name}",
                },
                "destination": {"type": "postgresql", "connection_string": PG_DSN},
                "state_dir": state_dir,
                "schemas": [{"name": name}],
            },
            f,
        )
    config = load_config(config_path)
    schema = config.schema(name)
    settings = schema.table_settings(workload.coll)
    logs.configure("WARNING")
    drop_pg_schemas(name)

    marks: dict[str, float] = {}
    cpu_marks: dict[str, tuple[float, CpuWindow]] = {}
    profiles = ThreadProfiles() if profile_dir else None

    def on_phase(phase: str) -> None:
        now = time.monotonic()
        marks.setdefault(phase, now)
        if phase in ("snapshot", "stream"):
            cpu_marks[phase] = (process_cpu(os.getpid()), CpuWindow())
        else:
            begun = phase.removesuffix(" done")
            cpu0, window = cpu_marks[begun]
            cpu_marks[phase] = (process_cpu(os.getpid()) - cpu0, window)
            marks[phase + " busy"] = window.stop()["machine_busy_pct"]
        if profiles is not None and phase in ("snapshot", "stream"):
            profiles.switch(phase)
        elif profiles is not None:
            profiles.switch("between")

    sources: list[SyntheticMongoSource] = []

    def factory(uri: str, database: str, schema_name: str, options: dict[str, Any]) -> SyntheticMongoSource:
        src = source_cls(uri, database, schema_name, options, workload, on_phase, timers)
        sources.append(src)
        return src

    timers = Timers()
    phase = lambda: "stream" if "stream" in marks else "snapshot"  # noqa: E731
    timers.wrap(TableApplier, "copy_snapshot", lambda: "snapshot: TableApplier.copy_snapshot (writer thread)")
    timers.wrap(SchemaRunner, "_flush", lambda: "stream: SchemaRunner._flush: compact + apply (main thread)")
    timers.wrap(TableApplier, "_encode", lambda: "stream: TableApplier._encode: COPY lines (workers, summed)")
    timers.wrap(
        PostgresDestination, "write", lambda: f"{phase()}: PostgresDestination.write: PostgreSQL (summed)"
    )
    real = registry.source_factory("mongodb")
    registry.register_source("mongodb")(factory)
    store = StateStore(state_dir)
    say(
        f"{label}: SchemaRunner in this process, {workload.count:,} documents then {workload.events:,} "
        f"events ({workload.ops['insert']:,} inserts, {workload.ops['update']:,} updates, "
        f"{workload.ops['delete']:,} deletes); batch_size {settings.batch_size}, max_parallel_streams "
        f"{settings.max_parallel_streams}, snapshot_chunk_size {settings.snapshot_chunk_size}"
    )
    try:
        runner = SchemaRunner(
            config, schema, store, should_stop=lambda: bool(sources and sources[0].finished)
        )
        gc_default = gc.get_threshold()
        if gc_threshold:
            gc.set_threshold(gc_threshold, 10, 10)
        if profiles is not None:
            profiles.start()
        t0 = time.monotonic()
        try:
            runner.run()
        finally:
            if profiles is not None:
                profiles.stop()
            gc.set_threshold(*gc_default)
        ended = time.monotonic()
        if "stream" in cpu_marks:
            stream_cpu = process_cpu(os.getpid()) - cpu_marks["stream"][0]
            stream_busy = cpu_marks["stream"][1].stop()["machine_busy_pct"]
        checkpoint = store.checkpoint(name)
        progress = store.snapshot_progress(name).get(workload.coll)
    finally:
        registry.register_source("mongodb")(real)
        timers.unwrap()
        store.close()
    if "stream done" not in marks:
        raise BenchError("the synthetic run ended before its stream did")
    snap_s = marks["snapshot done"] - marks["snapshot"]
    stream_s = ended - marks["stream"]
    n, k = workload.count, workload.events
    out = {
        "documents": n,
        "events": k,
        "ops": workload.ops,
        "gc_threshold": gc_threshold or gc_default[0],
        "settings": {
            "batch_size": settings.batch_size,
            "max_parallel_streams": settings.max_parallel_streams,
            "snapshot_chunk_size": settings.snapshot_chunk_size,
        },
        "startup_seconds": round(marks["snapshot"] - t0, 3),
        "snapshot": {
            "seconds": round(snap_s, 3),
            "docs_per_s": round(n / snap_s),
            "cpu_s": round(cpu_marks["snapshot done"][0], 2),
            "machine_busy_pct": marks["snapshot done busy"],
            "rows_copied": progress.rows_copied if progress else None,
        },
        "streaming": {
            "seconds": round(stream_s, 3),
            "events_per_s": round(k / stream_s),
            "cpu_s": round(stream_cpu, 2),
            "machine_busy_pct": stream_busy,
            "applied_events": runner.applied_events,
            "last_batch_commit_s": round(ended - marks["stream done"], 3),
        },
        "stages": {
            "snapshot": timers.table("snapshot: ", snap_s),
            "stream": timers.table("stream: ", stream_s),
        },
        "checkpoint_is_last_token": bool(checkpoint and checkpoint.get("token") == workload.last_token),
    }
    say(
        f"  snapshot {out['snapshot']['docs_per_s']:,} documents/s ({snap_s:.2f}s), streaming "
        f"{out['streaming']['events_per_s']:,} events/s ({stream_s:.2f}s)"
    )
    if runner.applied_events != k:
        raise BenchError(f"the engine applied {runner.applied_events} row events, expected {k}")
    exp, got = workload.expected(), workload.pg_checksum(name)
    out["verify"] = {"equal": exp == got, "source": exp, "destination": got}
    if profiles is not None:
        out["profile"] = profiles.report(profile_dir, label)  # type: ignore[arg-type]
    if not keep:
        drop_pg_schemas(name)
        import shutil

        shutil.rmtree(state_dir, ignore_errors=True)
    else:
        out["state_dir"] = state_dir
    return out


# --------------------------------------------------------------------------- the wire test server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WireServer:
    """``python -m tests.mongo_wire`` in a process of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.mongo_wire", "--port", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        line = self.proc.stdout.readline().decode().strip() if self.proc.stdout else ""
        if not line.startswith("mongodb://"):
            self.stop()
            raise BenchError(f"the wire test server did not start (it printed {line!r})")
        self.uri = f"mongodb://127.0.0.1:{self.port}/?replicaSet=rs0"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Warp:
    """One ``python -m warpd --mode single`` child process, its log file and its state file."""

    def __init__(self, source: str, state_dir: str, schema: str = DB):
        self.source = source
        self.schema = schema
        self.state_dir = state_dir
        self.log_path = os.path.join(state_dir, "warpd.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._store: StateStore | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "warpd", "--mode", "single", "--source", self.source]
        cmd += ["--destination", PG_DSN, "--schema", self.schema, "--state-dir", self.state_dir]
        with open(self.log_path, "ab") as log:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = "\n".join(self.log_text().splitlines()[-30:])
            raise BenchError(f"cartridge-warp exited with status {self.proc.returncode}; its log:\n{tail}")

    def store(self) -> StateStore:
        if self._store is None:
            path = os.path.join(self.state_dir, "state.db")
            while not os.path.exists(path):
                self.check_alive()
                time.sleep(0.02)
            self._store = StateStore(self.state_dir)
        return self._store

    def wait_log(self, needle: str, occurrence: int = 1, timeout: float = 300.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_text().count(needle) >= occurrence:
                return time.monotonic()
            self.check_alive()
            time.sleep(0.02)
        raise BenchError(f"timed out waiting for {needle!r} in the cartridge-warp log")

    def stop(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wire_load(client: Any, docs: Docs, count: int) -> dict[str, Any]:
    """insert_many of ``count`` documents, WIRE_WRITE_BATCH a call: the test server's ingest rate."""
    db = client[DB]
    client.drop_database(DB)
    say(f"wire: inserting {count:,} documents into the test server ({WIRE_WRITE_BATCH:,} per insert_many)")
    cpu = CpuWindow()
    t0 = time.monotonic()
    for a in range(0, count, WIRE_WRITE_BATCH):
        db[COLL].insert_many([docs.doc(i) for i in range(a, min(count, a + WIRE_WRITE_BATCH))])
    seconds = time.monotonic() - t0
    say(f"  {count / seconds:,.0f} documents/s ({seconds:.2f}s)")
    return {
        "documents": count,
        "seconds": round(seconds, 3),
        "docs_per_s": round(count / seconds),
    } | cpu.stop()


def wire_read(client: Any, count: int) -> dict[str, Any]:
    """pymongo alone reads the collection as the snapshot does: keyset chunks in _id order."""
    coll = client.get_database(DB, codec_options=CODEC_OPTIONS)[COLL]
    say(f"wire: pymongo alone reads the collection in _id order, {READ_CHUNK:,} a query")
    cpu = CpuWindow(os.getpid())
    t0 = time.monotonic()
    n, last = 0, None
    while True:
        query = {} if last is None else {"_id": {"$gt": last}}
        docs = list(coll.find(query).sort("_id", 1).limit(READ_CHUNK))
        if not docs:
            break
        n += len(docs)
        last = docs[-1]["_id"]
    seconds = time.monotonic() - t0
    used = cpu.stop()
    if n != count:
        raise BenchError(f"pymongo read {n} documents, expected {count}")
    say(f"  {n / seconds:,.0f} documents/s ({seconds:.2f}s)")
    return {
        "documents": n,
        "seconds": round(seconds, 3),
        "docs_per_s": round(n / seconds),
        "client_cpu_s": used["warp_cpu_s"],
        "machine_busy_pct": used["machine_busy_pct"],
    }


def wait_snapshot(warp: Warp, count: int, coll: str = COLL) -> dict[str, Any]:
    cpu = CpuWindow(warp.pid)
    store = warp.store()
    running_seen = None
    deadline = warp.started + max(600.0, count / 200)
    while time.monotonic() < deadline:
        prog = store.snapshot_progress(warp.schema).get(coll)
        now = time.monotonic()
        if prog is not None and prog.status == "running" and running_seen is None:
            running_seen = now
        if prog is not None and prog.status == "done":
            total = now - warp.started
            copy = now - running_seen if running_seen else None
            if prog.rows_copied != count:
                raise BenchError(f"the snapshot copied {prog.rows_copied} documents, expected {count}")
            return {
                "documents": prog.rows_copied,
                "seconds_from_start": round(total, 2),
                "docs_per_s": round(prog.rows_copied / total),
                "copy_seconds": round(copy, 2) if copy else None,
                "copy_docs_per_s": round(prog.rows_copied / copy) if copy else None,
            } | cpu.stop()
        warp.check_alive()
        time.sleep(STATE_POLL)
    raise BenchError("timed out waiting for the snapshot")


def wire_burst(
    client: Any, docs: Docs, count: int, first_new: int, changes: int, marker: str, what: str
) -> dict[str, Any]:
    """``changes`` document changes (update_many over _id ranges and insert_many, 4 : 1), then a marker.

    Updates touch documents ``0 .. count - 2``; inserts add documents from ``first_new`` on.
    """
    db = client[DB]
    start = db.command("ping")["operationTime"]
    say(f"wire: {changes:,} changes ({WIRE_WRITE_BATCH:,} documents a call) and a marker, {what}")
    t0 = time.monotonic()
    done = updated = inserted = calls = 0
    next_new = first_new
    while done < changes:
        n = min(WIRE_WRITE_BATCH, changes - done)
        if calls % 5 == 4:
            db[COLL].insert_many([docs.doc(i) for i in range(next_new, next_new + n)])
            next_new += n
            inserted += n
        else:
            a = updated % (count - 1)
            n = min(n, count - 1 - a)
            res = db[COLL].update_many(
                {"_id": {"$gte": docs.id_of(a), "$lt": docs.id_of(a + n)}},
                {"$inc": {"qty": 1}, "$set": {"name": f"burst {calls}"}},
            )
            if res.modified_count != n:
                raise BenchError(f"update_many changed {res.modified_count} documents, expected {n}")
            updated += n
        done += n
        calls += 1
    db[COLL].update_one({"_id": docs.id_of(count - 1)}, {"$set": {"name": marker}})
    written = time.monotonic()
    return {
        "changes": done + 1,
        "updates": updated + 1,
        "inserts": inserted,
        "documents_after": next_new,
        "started": t0,
        "written": written,
        "source_seconds": round(written - t0, 3),
        "source_changes_per_s": round((done + 1) / (written - t0)),
        "start_time": start,
    }


def wait_marker(
    warp: Warp, id_text: str, marker: str, log_needle: tuple[str, int] | None = None, timeout: float = 600.0
) -> tuple[float, float | None]:
    """When ``marker`` became visible in PostgreSQL, and when ``log_needle`` (text, occurrence) was logged."""
    logged = None
    conn = pg()
    conn.autocommit = True
    deadline = time.monotonic() + timeout
    query = sql.SQL("SELECT name FROM {} WHERE {} = %s").format(
        sql.Identifier(DB, COLL), sql.Identifier("_id")
    )
    try:
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                cur.execute(query, (id_text,))
                row = cur.fetchone()
                now = time.monotonic()
                if log_needle and logged is None and warp.log_text().count(log_needle[0]) >= log_needle[1]:
                    logged = now
                if row and row[0] == marker:
                    return now, logged
                warp.check_alive()
                time.sleep(MARKER_POLL)
    finally:
        conn.close()
    raise BenchError("timed out waiting for the burst's marker in PostgreSQL")


def wait_equal(warp: Warp, expected: Callable[[], dict[str, int]], timeout: float = 600.0) -> float:
    """When the PostgreSQL table's checksum first equalled the test server's: the marker's apply worker
    may commit before the other worker's rows, so the marker alone can be early.  PostgreSQL is polled
    from the start, in a thread, while ``expected()`` reads the server's checksum (about a second), so
    that read never delays the time found."""
    samples: list[tuple[float, dict[str, int]]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), pg_checksum(DB)))
            stop.wait(MARKER_POLL)

    poller = threading.Thread(target=poll, name="checksum-poller", daemon=True)
    poller.start()
    try:
        target = expected()
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for when, value in samples[seen:]:
                if value == target:
                    return when
            seen = len(samples)
            warp.check_alive()
            time.sleep(MARKER_POLL)
    finally:
        stop.set()
        poller.join()
    raise BenchError(f"timed out waiting for PostgreSQL to equal the test server ({target})")


def wire_stream_read(
    client: Any,
    start: Timestamp | None,
    expected: int,
    database: str = DB,
    coll: str = COLL,
    token: Mapping[str, Any] | None = None,
    what: str = "wire",
) -> dict[str, Any]:
    """pymongo alone reads the burst's change-stream range, with the connector's options: from the
    operation time ``start``, or (``token``) after that resume token, as the connector resumes."""
    say(f"{what}: pymongo alone reads the burst's {expected:,} change events (fullDocument: updateLookup)")
    db = client.get_database(database, codec_options=CODEC_OPTIONS)
    cpu = CpuWindow(os.getpid())
    t0 = time.monotonic()
    n = 0
    where: dict[str, Any] = (
        {"start_after": token} if token is not None else {"start_at_operation_time": start}
    )
    with db.watch(full_document="updateLookup", max_await_time_ms=500, **where) as cs:
        idle = 0
        while n < expected and idle < 10:
            change = cs.try_next()
            if change is None:
                idle += 1
                continue
            idle = 0
            if change.get("ns", {}).get("coll") == coll:
                n += 1
    seconds = time.monotonic() - t0
    used = cpu.stop()
    if n != expected:
        raise BenchError(f"pymongo read {n} change events, expected {expected}")
    say(f"  {n / seconds:,.0f} events/s ({seconds:.2f}s)")
    return {
        "events": n,
        "seconds": round(seconds, 3),
        "events_per_s": round(n / seconds),
        "client_cpu_s": used["warp_cpu_s"],
        "machine_busy_pct": used["machine_busy_pct"],
    }


def wire_checksum(client: Any) -> dict[str, int]:
    coll = client.get_database(DB, codec_options=CODEC_OPTIONS)[COLL]
    return checksum(checksum_text(doc) for doc in coll.find())


def wire_run(docs: Docs, count: int, changes: int, catch_up: bool, keep: bool) -> dict[str, Any]:
    import pymongo

    out: dict[str, Any] = {"documents": count, "changes": changes}
    server = WireServer()
    state_dir = tempfile.mkdtemp(prefix="warp-bench-mongo-wire-")
    source = f"mongodb://127.0.0.1:{server.port}/{DB}?replicaSet=rs0"
    warp = Warp(source, state_dir)
    client = pymongo.MongoClient(server.uri, tz_aware=True)
    try:
        drop_pg_schemas(DB)
        out["ingest"] = wire_load(client, docs, count)
        out["pymongo_read"] = wire_read(client, count)
        say(f"wire: python -m warpd --mode single --source {source} --schema {DB}")
        warp.start()
        out["snapshot"] = wait_snapshot(warp, count)
        snap = out["snapshot"]
        say(
            f"  snapshot {snap['docs_per_s']:,} documents/s ({snap['seconds_from_start']}s from process start)"
        )
        warp.wait_log("streaming changes from")
        time.sleep(1.0)
        marker = f"marker-{time.time_ns()}"
        cpu = CpuWindow(warp.pid)
        server_cpu0 = process_cpu(server.pid)
        burst = wire_burst(client, docs, count, count, changes, marker, "while warp streams")
        marked, _ = wait_marker(warp, str(docs.id_of(count - 1)), marker)
        visible = max(marked, wait_equal(warp, lambda: wire_checksum(client)))
        used = cpu.stop()
        seconds = visible - burst["started"]
        out["streaming"] = {
            "events": burst["changes"],
            "updates": burst["updates"],
            "inserts": burst["inserts"],
            "seconds": round(seconds, 3),
            "events_per_s": round(burst["changes"] / seconds),
            "source_seconds": burst["source_seconds"],
            "source_changes_per_s": burst["source_changes_per_s"],
            "lag_s": round(visible - burst["written"], 3),
            "marker_early_s": round(visible - marked, 3),
            "server_cpu_s": round(process_cpu(server.pid) - server_cpu0, 2),
        } | used
        say(f"  streaming {out['streaming']['events_per_s']:,} events/s ({seconds:.2f}s)")
        out["pymongo_stream"] = wire_stream_read(client, burst["start_time"], burst["changes"])
        if catch_up:
            say("wire: stopping warp (SIGTERM) for the catch-up phase")
            warp.stop()
            marker = f"marker-{time.time_ns()}"
            burst = wire_burst(
                client, docs, count, burst["documents_after"], changes, marker, "while warp is stopped"
            )
            expected = wire_checksum(client)  # before the start: nothing reads the server meanwhile
            warp.start()
            cpu = CpuWindow(warp.pid)
            marked, streaming_at = wait_marker(
                warp, str(docs.id_of(count - 1)), marker, ("streaming changes from", 2)
            )
            visible = max(marked, wait_equal(warp, lambda: expected))
            streaming_at = streaming_at or visible
            seconds = visible - warp.started
            out["catch_up"] = {
                "events": burst["changes"],
                "seconds": round(seconds, 3),
                "events_per_s": round(burst["changes"] / seconds),
                "startup_seconds": round(streaming_at - warp.started, 3),
                "events_per_s_after_startup": round(burst["changes"] / (visible - streaming_at)),
                "marker_early_s": round(visible - marked, 3),
            } | cpu.stop()
            say(
                f"  catch-up {out['catch_up']['events_per_s']:,} events/s ({seconds:.2f}s from process start)"
            )
        src, dst = wire_checksum(client), pg_checksum(DB)
        out["verify"] = {"equal": src == dst, "source": src, "destination": dst}
        if src["rows"] != burst["documents_after"]:
            raise BenchError(
                f"the test server holds {src['rows']} documents, expected {burst['documents_after']}"
            )
    finally:
        warp.stop()
        if not keep:
            try:
                client.drop_database(DB)
            except Exception:  # noqa: BLE001 - the server goes away next anyway
                pass
        client.close()
        server.stop()
        if not keep:
            drop_pg_schemas(DB)
            import shutil

            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            out["state_dir"] = state_dir
    return out


# --------------------------------------------------------------------------- the OLTP shape, wire
def oltp_burst(
    client: Any, orders: Orders, st: dict[str, Any], changes: int, marker: str, what: str
) -> dict[str, Any]:
    """``changes`` single-document writes as an application makes them, then a marker.

    ``update_one({_id}, {$set: the four ORDER_UPDATED fields})``, ``insert_one`` and ``delete_one``
    by :func:`oltp_kind` (20 : 5 : 2), one call each, back to back; the marker sets ``note`` of order 0
    (never deleted).  ``st`` carries the orders' versions and the next ids across bursts.
    """
    db = client[OLTP_DB]
    coll = db[OLTP_COLL]
    start = db.command("ping")["operationTime"]
    with db.watch(full_document="updateLookup", max_await_time_ms=10) as cs:
        cs.try_next()
        start_token = cs.resume_token  # the postBatchResumeToken: where a stream opened now starts
    say(f"{what}: {changes:,} single-document writes (update_one / insert_one / delete_one) and a marker")
    versions = st["versions"]
    ops = {"insert": 0, "update": 0, "delete": 0}
    t0 = time.monotonic()
    for _ in range(changes):
        j = st["j"]
        st["j"] = j + 1
        kind = oltp_kind(j)
        if kind == "insert":
            i = st["next_new"]
            st["next_new"] = i + 1
            versions[i] = 0
            coll.insert_one(orders.doc(i))
        elif kind == "delete":
            i = st["next_delete"]
            st["next_delete"] = i - 1
            del versions[i]
            if coll.delete_one({"_id": orders.id_of(i)}).deleted_count != 1:
                raise BenchError(f"delete_one found no order {i}")
        else:
            i = (j * 7919) % st["updatable"]
            versions[i] += 1
            res = coll.update_one({"_id": orders.id_of(i)}, {"$set": orders.fields(i, versions[i])})
            if res.matched_count != 1:
                raise BenchError(f"update_one found no order {i}")
        ops[kind] += 1
    coll.update_one({"_id": orders.id_of(0)}, {"$set": {"note": marker}})
    written = time.monotonic()
    return {
        "changes": changes + 1,
        "ops": ops,
        "started": t0,
        "written": written,
        "source_seconds": round(written - t0, 3),
        "source_changes_per_s": round((changes + 1) / (written - t0)),
        "start_time": start,
        "start_token": start_token,
    }


def wait_orders(
    warp: Warp,
    marker_id: str,
    marker: str,
    expected: dict[str, int],
    log_needle: tuple[str, int] | None = None,
) -> dict[str, float | None]:
    """Poll PostgreSQL until the marker (``note`` of order 0) is there, then until the whole table's
    checksum is ``expected``: with two apply streams a batch commits in two transactions, so the
    marker can be visible before the rest of its batch.  Times (monotonic) of both, of
    ``log_needle`` (text, occurrence) in the log, and warp's CPU seconds when that was logged."""
    out: dict[str, float | None] = {"marker": None, "all": None, "logged": None, "cpu_at_log": None}
    conn = pg()
    conn.autocommit = True
    deadline = time.monotonic() + 600.0
    query = sql.SQL("SELECT note FROM {} WHERE _id = %s").format(sql.Identifier(OLTP_DB, OLTP_COLL))
    whole = ORDERS_CHECKSUM_SQL.format(sql.Identifier(OLTP_DB, OLTP_COLL))
    try:
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                now = time.monotonic()
                if (
                    log_needle
                    and out["logged"] is None
                    and warp.log_text().count(log_needle[0]) >= log_needle[1]
                ):
                    out["logged"], out["cpu_at_log"] = now, process_cpu(warp.pid)
                if out["marker"] is None:
                    cur.execute(query, (marker_id,))
                    row = cur.fetchone()
                    if row and row[0] == marker:
                        out["marker"] = time.monotonic()
                if out["marker"] is not None:
                    cur.execute(whole)
                    count, total = cur.fetchone()
                    if {"rows": int(count), "checksum": int(total or 0)} == expected:
                        out["all"] = time.monotonic()
                        return out
                warp.check_alive()
                time.sleep(MARKER_POLL)
    finally:
        conn.close()
    raise BenchError(
        f"timed out waiting for the OLTP burst in PostgreSQL (marker seen: {out['marker'] is not None})"
    )


def expected_orders(orders: Orders, versions: Mapping[int, int], marker: str) -> dict[str, int]:
    """Count and checksum of the orders after a burst: every order at its version, order 0's note the marker."""

    def text(i: int, v: int) -> str:
        doc = orders.doc(i, v)
        if i == 0:
            doc["note"] = marker
        return order_checksum_text(doc)

    return checksum(text(i, v) for i, v in versions.items())


def oltp_wire_run(orders: Orders, count: int, changes: int, catch_up: bool, keep: bool) -> dict[str, Any]:
    """The OLTP shape through the wire test server: a live stream of single-document writes, then catch-up."""
    import pymongo

    mix = oltp_mix(changes)
    deletes = mix["delete"] * (2 if catch_up else 1)
    if deletes + 1 >= count // 2:
        raise BenchError("the OLTP bursts' deletes must stay below half of --oltp-wire-docs")
    out: dict[str, Any] = {"documents": count, "changes": changes}
    server = WireServer()
    state_dir = tempfile.mkdtemp(prefix="warp-bench-mongo-oltp-wire-")
    source = f"mongodb://127.0.0.1:{server.port}/{OLTP_DB}?replicaSet=rs0"
    warp = Warp(source, state_dir, OLTP_DB)
    client = pymongo.MongoClient(server.uri, tz_aware=True)
    st: dict[str, Any] = {
        "versions": dict.fromkeys(range(count), 0),
        "next_new": count,
        "next_delete": count - 1,
        "updatable": count - deletes - 1,
        "j": 0,
    }
    marker_id = str(orders.id_of(0))
    try:
        drop_pg_schemas(OLTP_DB)
        client.drop_database(OLTP_DB)
        say(f"oltp wire: inserting {count:,} orders into the test server")
        for a in range(0, count, WIRE_WRITE_BATCH):
            client[OLTP_DB][OLTP_COLL].insert_many(
                [orders.doc(i) for i in range(a, min(count, a + WIRE_WRITE_BATCH))]
            )
        say(f"oltp wire: python -m warpd --mode single --source {source} --schema {OLTP_DB}")
        warp.start()
        out["snapshot"] = wait_snapshot(warp, count, OLTP_COLL)
        warp.wait_log("streaming changes from")
        time.sleep(1.0)
        marker = f"marker-{time.time_ns()}"
        cpu = CpuWindow(warp.pid)
        server_cpu0 = process_cpu(server.pid)
        burst = oltp_burst(client, orders, st, changes, marker, "oltp wire, while warp streams")
        seen = wait_orders(warp, marker_id, marker, expected_orders(orders, st["versions"], marker))
        used = cpu.stop()
        visible = seen["all"]
        assert visible is not None and seen["marker"] is not None
        seconds = visible - burst["started"]
        out["streaming"] = {
            "events": burst["changes"],
            "ops": burst["ops"],
            "seconds": round(seconds, 3),
            "events_per_s": round(burst["changes"] / seconds),
            "source_seconds": burst["source_seconds"],
            "source_changes_per_s": burst["source_changes_per_s"],
            "lag_s": round(visible - burst["written"], 3),
            "marker_early_s": round(visible - seen["marker"], 3),
            "server_cpu_s": round(process_cpu(server.pid) - server_cpu0, 2),
            "warp_cpu_s_per_1000": round(1000 * used["warp_cpu_s"] / burst["changes"], 3),
        } | used
        say(f"  streaming {out['streaming']['events_per_s']:,} events/s ({seconds:.2f}s)")
        out["pymongo_stream"] = wire_stream_read(
            client,
            burst["start_time"],
            burst["changes"],
            OLTP_DB,
            OLTP_COLL,
            burst["start_token"],
            "oltp wire",
        )
        if catch_up:
            say("oltp wire: stopping warp (SIGTERM) for the catch-up phase")
            warp.stop()
            saved = StateStore(state_dir)
            try:
                checkpoint = saved.checkpoint(OLTP_DB) or {}
            finally:
                saved.close()
            marker = f"marker-{time.time_ns()}"
            burst = oltp_burst(client, orders, st, changes, marker, "oltp wire, while warp is stopped")
            warp.start()
            cpu = CpuWindow(warp.pid)
            expected = expected_orders(orders, st["versions"], marker)
            seen = wait_orders(warp, marker_id, marker, expected, ("streaming changes from", 2))
            used = cpu.stop()
            visible = seen["all"]
            assert visible is not None and seen["marker"] is not None
            streaming_at = seen["logged"] or visible
            seconds = visible - warp.started
            at_log = seen["cpu_at_log"]
            streaming_cpu = used["warp_cpu_s"] - (at_log - cpu.proc0 if at_log is not None else 0.0)
            out["catch_up"] = {
                "events": burst["changes"],
                "seconds": round(seconds, 3),
                "events_per_s": round(burst["changes"] / seconds),
                "startup_seconds": round(streaming_at - warp.started, 3),
                "marker_early_s": round(visible - seen["marker"], 3),
                "events_per_s_after_startup": round(burst["changes"] / max(1e-3, visible - streaming_at)),
                # from the 'streaming' log line: the interpreter's start-up and imports left out
                "warp_cpu_s_streaming": round(streaming_cpu, 2),
                "warp_cpu_s_per_1000": round(1000 * streaming_cpu / burst["changes"], 3),
                "resumed_from_token": "token" in checkpoint,
            } | used
            say(
                f"  catch-up {out['catch_up']['events_per_s']:,} events/s ({seconds:.2f}s from process start)"
            )
            out["pymongo_catch_up"] = wire_stream_read(
                client,
                burst["start_time"],
                burst["changes"],
                OLTP_DB,
                OLTP_COLL,
                checkpoint.get("token") or burst["start_token"],
                "oltp wire (catch-up range, from warp's checkpoint)",
            )
        src = checksum(
            order_checksum_text(d)
            for d in client.get_database(OLTP_DB, codec_options=CODEC_OPTIONS)[OLTP_COLL].find()
        )
        dst = pg_orders_checksum(OLTP_DB)
        out["verify"] = {"equal": src == dst, "source": src, "destination": dst}
        if src["rows"] != len(st["versions"]):
            raise BenchError(f"the test server holds {src['rows']} orders, expected {len(st['versions'])}")
    finally:
        warp.stop()
        if not keep:
            try:
                client.drop_database(OLTP_DB)
            except Exception:  # noqa: BLE001 - the server goes away next anyway
                pass
        client.close()
        server.stop()
        if not keep:
            drop_pg_schemas(OLTP_DB)
            import shutil

            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            out["state_dir"] = state_dir
    return out


# --------------------------------------------------------------------------- the machine
def machine() -> dict[str, Any]:
    version = package_version
    return {
        **host_facts(),
        **pg_facts(),
        "drivers": f"pymongo {version('pymongo')} (C extensions: {bson.has_c()}), psycopg2 "
        f"{version('psycopg2-binary')}, mongomock {version('mongomock')} (behind the wire test server)",
    }


# --------------------------------------------------------------------------- report
def oltp_rows(fig: dict[str, Any], add: Callable[..., None]) -> None:
    """The report's rows for the OLTP shape (orders, single-document changes)."""
    osyn, owire = fig.get("oltp_synthetic"), fig.get("oltp_wire")
    if not osyn and not owire:
        return
    add("OLTP shape: orders, one document a change", "", "each change its own event, token and transaction")
    if osyn:
        s, st, ops = osyn["snapshot"], osyn["streaming"], osyn["ops"]
        add(
            "oltp synthetic: orders / events",
            f"{osyn['documents']:,} / {osyn['events']:,}",
            f"{ops['update']:,} updates ($set of {len(ORDER_UPDATED)} fields, fullDocument), {ops['insert']:,} "
            f"inserts, {ops['delete']:,} deletes",
        )
        add(
            "oltp synthetic streaming",
            f"{st['events_per_s']:,} events/s",
            f"{st['seconds']}s; process CPU {st['cpu_s']}s ({1000 * st['cpu_s'] / osyn['events']:.3f} CPU s per "
            f"1,000 events); machine {st['machine_busy_pct']}% busy",
        )
        bulk = (fig.get("synthetic") or {}).get("streaming", {}).get("events_per_s")
        add("  oltp / bulk synthetic streaming", ratio(st["events_per_s"], bulk))
        add(
            "oltp synthetic snapshot (set-up)",
            f"{s['docs_per_s']:,} docs/s",
            f"{s['seconds']}s; process CPU {s['cpu_s']}s",
        )
        v = osyn["verify"]
        add(
            "oltp synthetic verification",
            "OK" if v["equal"] and osyn["checkpoint_is_last_token"] else "MISMATCH",
            f"{v['source']['rows']:,} rows, checksum {v['source']['checksum']} vs {v['destination']['rows']:,} / "
            f"{v['destination']['checksum']}; checkpoint = last token: {osyn['checkpoint_is_last_token']}",
        )
    if owire:
        st, cs = owire["streaming"], owire["pymongo_stream"]
        ops = st["ops"]
        add(
            "oltp wire: orders / changes",
            f"{owire['documents']:,} / {st['events']:,}",
            f"{ops['update']:,} update_one, {ops['insert']:,} insert_one, {ops['delete']:,} delete_one, 1 marker",
        )
        add(
            "oltp wire: streaming (first write -> all applied)",
            f"{st['events_per_s']:,} docs/s",
            f"{st['seconds']}s; the writes took {st['source_seconds']}s ({st['source_changes_per_s']:,}/s); lag "
            f"{st['lag_s']}s (the marker {st['marker_early_s']}s before the rest); warp CPU {st['warp_cpu_s']}s "
            f"({st['warp_cpu_s_per_1000']} s per 1,000 events), "
            f"server CPU {st['server_cpu_s']}s; machine {st['machine_busy_pct']}% busy",
        )
        add(
            "oltp wire: pymongo alone, change stream",
            f"{cs['events_per_s']:,} docs/s",
            f"{cs['seconds']}s, client CPU {cs['client_cpu_s']}s (the live range, updateLookup)",
        )
        add("  oltp wire streaming / server writes", ratio(st["events_per_s"], st["source_changes_per_s"]))
        add("  oltp wire streaming / pymongo alone", ratio(st["events_per_s"], cs["events_per_s"]))
        if owire.get("catch_up"):
            cu, cc = owire["catch_up"], owire["pymongo_catch_up"]
            add(
                "oltp wire: catch-up after a restart",
                f"{cu['events_per_s']:,} docs/s",
                f"{cu['seconds']}s from process start; {cu['events_per_s_after_startup']:,} docs/s after the "
                f"'streaming' log line ({cu['startup_seconds']}s start-up; the marker {cu['marker_early_s']}s before "
                f"the rest); warp CPU {cu['warp_cpu_s']}s, "
                f"{cu['warp_cpu_s_streaming']}s after start-up ({cu['warp_cpu_s_per_1000']} s per 1,000 events); "
                f"machine {cu['machine_busy_pct']}% busy",
            )
            add(
                "oltp wire: pymongo alone, catch-up range",
                f"{cc['events_per_s']:,} docs/s",
                f"{cc['seconds']}s, client CPU {cc['client_cpu_s']}s (after warp's checkpoint, updateLookup)",
            )
            add(
                "  oltp wire catch-up / pymongo alone",
                ratio(cu["events_per_s_after_startup"], cc["events_per_s"]),
                "after start-up",
            )
        v = owire["verify"]
        add(
            "oltp wire verification",
            "OK" if v["equal"] else "MISMATCH",
            f"{v['source']['rows']:,} rows, checksum {v['source']['checksum']} vs {v['destination']['rows']:,} / "
            f"{v['destination']['checksum']}",
        )


def report(fig: dict[str, Any]) -> str:
    m = fig["machine"]
    raw = fig.get("raw", {})
    copy = raw.get("copy", {}).get("rows_per_s")
    rows: list[tuple[str, str, str]] = []

    def add(label: str, value: str, note: str = "") -> None:
        rows.append((label, value, note))

    def aim(rate: int) -> str:
        return f"aim >= {AIM_APPLY_DOCS:,}/s: {'met' if rate >= AIM_APPLY_DOCS else 'NOT met'}"

    if "ops" in fig:
        add(
            "documents / events (synthetic)",
            f"{fig['docs']:,} / {fig['events']:,}",
            f"_id {fig['id_type']}; events: {fig['ops']['insert']:,} inserts, {fig['ops']['update']:,} updates, "
            f"{fig['ops']['delete']:,} deletes",
        )
    if copy:
        c = raw["copy"]
        add(
            "raw (a) PostgreSQL COPY FROM STDIN",
            f"{copy:,} rows/s",
            f"{c['seconds']}s, {c['mib']} MiB ({c['bytes_per_row']} bytes a row), one transaction; machine "
            f"{c['machine_busy_pct']}% busy",
        )
    else:
        add("raw (a) PostgreSQL COPY FROM STDIN", "skipped")
    if raw.get("map"):
        d = raw["map"]
        us = d["us_per_doc"]
        add(
            "raw (d) decode + map + encode, no database",
            f"{d['docs_per_s']:,} docs/s",
            "per document: " + ", ".join(f"{k} {v} us" for k, v in us.items()),
        )
    syn = fig.get("synthetic")
    if syn and syn["gc_threshold"] != 700:
        add("EXPERIMENT (synthetic part)", f"gc {syn['gc_threshold']}", "gc.set_threshold(N, 10, 10)")
    if syn:
        s, st = syn["snapshot"], syn["streaming"]
        add(
            "synthetic snapshot",
            f"{s['docs_per_s']:,} docs/s",
            f"{aim(s['docs_per_s'])}; {s['seconds']}s; process CPU {s['cpu_s']}s "
            f"({s['cpu_s'] * 1e6 / syn['documents']:.0f} us a document); machine {s['machine_busy_pct']}% busy",
        )
        add("  synthetic snapshot / raw COPY", ratio(s["docs_per_s"], copy))
        add(
            "synthetic streaming",
            f"{st['events_per_s']:,} events/s",
            f"{aim(st['events_per_s'])}; {st['seconds']}s (first event -> last batch committed); process CPU "
            f"{st['cpu_s']}s ({st['cpu_s'] * 1e6 / syn['events']:.0f} us an event); machine "
            f"{st['machine_busy_pct']}% busy",
        )
        add("  synthetic streaming / raw COPY", ratio(st["events_per_s"], copy))
        v = syn["verify"]
        add(
            "synthetic verification",
            "OK" if v["equal"] and syn["checkpoint_is_last_token"] else "MISMATCH",
            f"{v['source']['rows']:,} rows, checksum {v['source']['checksum']} vs {v['destination']['rows']:,} / "
            f"{v['destination']['checksum']}; checkpoint = last token: {syn['checkpoint_is_last_token']}",
        )
    wire = fig.get("wire")
    if wire:
        ing, rd, sn, st, cs = (
            wire["ingest"],
            wire["pymongo_read"],
            wire["snapshot"],
            wire["streaming"],
            wire["pymongo_stream"],
        )
        add(
            "wire: documents / changes",
            f"{wire['documents']:,} / {st['events']:,}",
            f"{st['updates']:,} updates, {st['inserts']:,} inserts",
        )
        add("wire: server ingest (insert_many)", f"{ing['docs_per_s']:,} docs/s", f"{ing['seconds']}s")
        add(
            "wire: pymongo alone, keyset read",
            f"{rd['docs_per_s']:,} docs/s",
            f"{rd['seconds']}s, client CPU {rd['client_cpu_s']}s; machine {rd['machine_busy_pct']}% busy",
        )
        add(
            "wire: snapshot (process start -> done)",
            f"{sn['docs_per_s']:,} docs/s",
            f"{sn['seconds_from_start']}s; copy phase {sn['copy_docs_per_s'] or 0:,} docs/s; warp CPU "
            f"{sn['warp_cpu_s']}s; machine {sn['machine_busy_pct']}% busy",
        )
        add("  wire snapshot / pymongo alone", ratio(sn["docs_per_s"], rd["docs_per_s"]))
        add("  wire snapshot / raw COPY", ratio(sn["docs_per_s"], copy))
        add(
            "wire: pymongo alone, change stream",
            f"{cs['events_per_s']:,} events/s",
            f"{cs['seconds']}s, client CPU {cs['client_cpu_s']}s",
        )
        add(
            "wire: streaming (first write -> all applied)",
            f"{st['events_per_s']:,} events/s",
            f"{st['seconds']}s; the writes took {st['source_seconds']}s ({st['source_changes_per_s']:,}/s); lag "
            f"{st['lag_s']}s (the marker {st['marker_early_s']}s before the rest); warp CPU {st['warp_cpu_s']}s, server CPU {st['server_cpu_s']}s; machine "
            f"{st['machine_busy_pct']}% busy",
        )
        add("  wire streaming / server writes", ratio(st["events_per_s"], st["source_changes_per_s"]))
        if wire.get("catch_up"):
            cu = wire["catch_up"]
            add(
                "wire: catch-up after a restart",
                f"{cu['events_per_s']:,} events/s",
                f"{cu['seconds']}s from process start; {cu['events_per_s_after_startup']:,} events/s after the "
                f"'streaming' log line ({cu['startup_seconds']}s start-up; the marker {cu['marker_early_s']}s "
                f"before the rest); warp CPU {cu['warp_cpu_s']}s; "
                f"machine {cu['machine_busy_pct']}% busy",
            )
            add(
                "  wire catch-up / pymongo alone", ratio(cu["events_per_s_after_startup"], cs["events_per_s"])
            )
        v = wire["verify"]
        add(
            "wire verification",
            "OK" if v["equal"] else "MISMATCH",
            f"{v['source']['rows']:,} rows, checksum {v['source']['checksum']} vs {v['destination']['rows']:,} / "
            f"{v['destination']['checksum']}",
        )
    oltp_rows(fig, add)
    lines = [
        f"cartridge-warp benchmark: MongoDB -> PostgreSQL ({time.strftime('%Y-%m-%d %H:%M')})",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, kernel {m['kernel']}",
        f"         PostgreSQL {m['postgresql']} ({m['postgresql_settings']}); Python {m['python']}",
        f"         {m['drivers']}",
        f"cartridge-warp: {fig.get('warpd', '?')}",
    ]
    lines += report_tail(fig, rows)
    parts = [("synthetic", syn), ("OLTP synthetic", fig.get("oltp_synthetic"))]
    for label, part in parts:
        for phase, stages in (part or {}).get("stages", {}).items():
            wall = part[phase if phase == "snapshot" else "streaming"]["seconds"]  # type: ignore[index]
            lines += ["", f"{label} {phase}: wall-clock seconds per stage (of {wall}s; threads overlap)"]
            lines += [
                f"    {sec:7.3f}s  {share:5.1f}%  {name}  ({calls:,} calls)"
                for name, sec, share, calls in stages
            ]
    for label, phase, prof in (
        (label, phase, prof)
        for label, part in parts
        for phase, prof in (part or {}).get("profile", {}).items()
    ):
        lines += [
            "",
            f"cProfile of the {label} {phase}: {prof['busy_seconds']}s busy in all threads, waits excluded "
            f"({prof['pstats']})",
            "  threads, busy / waiting (s): "
            + ", ".join(f"{t} {b} / {w}" for t, (b, w) in prof["threads_busy_wait_s"].items()),
            "  self time, share of busy time (file:function):",
        ]
        lines += [f"    {s:5.1f}%  {k}" for k, s in prof["self"]]
        lines += ["  inclusive, warpd:"]
        lines += [f"    {s:5.1f}%  {k}" for k, s in prof["inclusive"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--docs", type=int, default=200_000, help="synthetic snapshot documents (default 200,000)")
    p.add_argument("--events", type=int, default=200_000, help="synthetic change events (default 200,000)")
    p.add_argument(
        "--wire-docs", type=int, default=20_000, help="documents in the test server (default 20,000)"
    )
    p.add_argument(
        "--wire-changes",
        type=int,
        default=20_000,
        help="changes made through the test server (default 20,000)",
    )
    p.add_argument(
        "--id-type", choices=("objectid", "int"), default="objectid", help="_id type (default objectid)"
    )
    p.add_argument(
        "--skip-raw", action="store_true", help="do not measure raw COPY and the no-database mapping"
    )
    p.add_argument("--skip-synthetic", action="store_true", help="do not run the synthetic part")
    p.add_argument(
        "--skip-wire", action="store_true", help="do not run the part through the wire test server"
    )
    p.add_argument(
        "--no-catch-up", action="store_true", help="skip the wire stop / changes / restart catch-up phase"
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the PostgreSQL schemas and the state directories"
    )
    p.add_argument(
        "--gc-threshold",
        type=int,
        metavar="N",
        help="experiment: gc.set_threshold(N, 10, 10) during the synthetic part (Python's default: 700)",
    )
    p.add_argument(
        "--profile", metavar="DIR", help="run the synthetic part under cProfile; .pstats go to DIR"
    )
    p.add_argument(
        "--oltp-events",
        type=int,
        default=270_000,
        metavar="N",
        help="OLTP shape, synthetic: single-document change events, updates : inserts : deletes 20 : 5 : 2 "
        "(default 270,000: 200k / 50k / 20k)",
    )
    p.add_argument(
        "--oltp-docs",
        type=int,
        default=100_000,
        help="OLTP shape, synthetic: orders copied first (default 100,000)",
    )
    p.add_argument(
        "--oltp-wire-changes",
        type=int,
        default=2_700,
        metavar="N",
        help="OLTP shape, wire: single-document writes per burst (default 2,700; the test server's "
        "update_one / delete_one scan the collection, a few hundred a second)",
    )
    p.add_argument(
        "--oltp-wire-docs",
        type=int,
        default=1_000,
        help="OLTP shape, wire: orders in the test server (default 1,000)",
    )
    p.add_argument("--skip-oltp", action="store_true", help="do not measure the OLTP shape")
    p.add_argument(
        "--skip-bulk",
        action="store_true",
        help="do not measure the bulk shape (the figures above the OLTP ones, and raw COPY): OLTP only",
    )
    add_output_options(p, quiet_wait=120.0)
    args = p.parse_args(argv)
    if args.docs < 1000 or args.events < 1 or args.wire_docs < 2 or args.wire_changes < 1:
        p.error("--docs must be >= 1000, --wire-docs >= 2, --events and --wire-changes >= 1")
    if (
        args.oltp_docs < 1000
        or args.oltp_events < 1
        or args.oltp_wire_docs < 10
        or args.oltp_wire_changes < 1
    ):
        p.error(
            "--oltp-docs must be >= 1000, --oltp-wire-docs >= 10, --oltp-events and --oltp-wire-changes >= 1"
        )

    docs = Docs(args.id_type)
    fig: dict[str, Any] = {
        "docs": args.docs,
        "events": args.events,
        "id_type": args.id_type,
        "aims": {"apply_docs_per_s": AIM_APPLY_DOCS},
    }
    fig["machine"] = machine()
    fig["warpd"] = warpd_revision()
    fig["load"] = wait_for_quiet(args.quiet_wait)
    if not args.skip_bulk:
        say(
            f"generating {args.docs:,} documents and {args.events:,} change events (BSON in memory, not timed)"
        )
        workload = Workload(docs, args.docs, args.events)
        fig["ops"] = workload.ops
        if not args.skip_raw:
            fig["raw"] = {"copy": raw_copy(workload), "map": raw_map(workload, READ_CHUNK)}
        if not args.skip_synthetic:
            fig["synthetic"] = synthetic_run(workload, args.profile, args.gc_threshold, args.keep)
        del workload
        if not args.skip_wire:
            fig["wire"] = wire_run(docs, args.wire_docs, args.wire_changes, not args.no_catch_up, args.keep)
    orders = Orders(args.id_type)
    if not args.skip_oltp and not args.skip_synthetic:
        say(
            f"OLTP shape: generating {args.oltp_docs:,} orders and {args.oltp_events:,} single-document change "
            "events, each encoded on its own (not timed)"
        )
        oltp = OltpWorkload(orders, args.oltp_docs, args.oltp_events)
        fig["oltp_synthetic"] = synthetic_run(
            oltp, args.profile, args.gc_threshold, args.keep, OLTP_SYN, OltpSource, "oltp-synthetic"
        )
        del oltp
    if not args.skip_oltp and not args.skip_wire:
        fig["oltp_wire"] = oltp_wire_run(
            orders, args.oltp_wire_docs, args.oltp_wire_changes, not args.no_catch_up, args.keep
        )
    print(report(fig))
    if args.json:
        print(json.dumps(fig, indent=2, default=str))
    parts = ("synthetic", "wire", "oltp_synthetic", "oltp_wire")
    ok = all(fig[k]["verify"]["equal"] for k in parts if k in fig)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
