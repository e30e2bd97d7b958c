"""Reads, writes, cursors and aggregation (manual "Database Commands": Query and Write Operation
Commands, Aggregation Commands).  Query and update semantics are mongomock's."""

from __future__ import annotations

import time
from typing import Any

import mongomock.aggregate
from bson.int64 import Int64

from .admin import coll_stats_document, first_batch_size, list_reply, server_time
from .changestream import ChangeStreamCursor, mongomock_stages, open_change_stream
from .commands import Context, command
from .cursors import DEFAULT_FIRST_BATCH, ListCursor, cursor_reply
from .engine import aggregate as aggregate_collection
from .engine import find as find_documents
from .engine import write_error
from .errors import CommandError, arg, bool_arg, int_arg

MAX_WRITE_BATCH = 100_000
DEFAULT_AWAIT_MS = 1000  # an awaitData getMore without maxTimeMS waits one second


def _batch(cmd: dict[str, Any], field: str) -> list[Any]:
    items = arg(cmd, field, list)
    if not 1 <= len(items) <= MAX_WRITE_BATCH:
        raise CommandError(
            16, f"Write batch sizes must be between 1 and {MAX_WRITE_BATCH}. Got {len(items)} operations."
        )
    return items


def _write_reply(n: int, errors: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {"n": n, **extra}
    if errors:
        reply["writeErrors"] = errors
    reply["ok"] = 1.0
    return reply


def _no_collation(cmd: dict[str, Any]) -> None:
    if cmd.get("collation"):
        raise CommandError(238, "collation is not supported by the test server")


@command("insert", write=True)
def insert(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    coll = arg(cmd, "insert", str)
    documents = _batch(cmd, "documents")
    ordered = bool_arg(cmd, "ordered", True)
    with ctx.engine.lock:
        n, errors = ctx.engine.insert(db, coll, documents, ordered)
    return _write_reply(n, errors)


@command("update", write=True)
def update(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    coll = arg(cmd, "update", str)
    statements = _batch(cmd, "updates")
    ordered = bool_arg(cmd, "ordered", True)
    n = n_modified = 0
    upserted: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    with ctx.engine.lock:
        for index, statement in enumerate(statements):
            try:
                if not isinstance(statement, dict):
                    raise CommandError(14, "each update statement must be an object")
                _no_collation(statement)
                query = arg(statement, "q", dict, command="update.updates")
                change = arg(statement, "u", (dict, list), command="update.updates")
                raw = ctx.engine.update(
                    db,
                    coll,
                    query,
                    change,
                    multi=bool_arg(statement, "multi", False, command="update.updates"),
                    upsert=bool_arg(statement, "upsert", False, command="update.updates"),
                    array_filters=arg(statement, "arrayFilters", list, None, command="update.updates"),
                )
            except Exception as exc:  # noqa: BLE001 - each statement fails on its own
                errors.append(write_error(index, exc, f"{db}.{coll}"))
                if ordered:
                    break
                continue
            n += raw["n"]
            n_modified += raw["nModified"]
            if raw.get("upserted") is not None:
                upserted.append({"index": index, "_id": raw["upserted"]})
    extra: dict[str, Any] = {"nModified": n_modified}
    if upserted:
        extra["upserted"] = upserted
    return _write_reply(n, errors, **extra)


@command("delete", write=True)
def delete(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    coll = arg(cmd, "delete", str)
    statements = _batch(cmd, "deletes")
    ordered = bool_arg(cmd, "ordered", True)
    n = 0
    errors: list[dict[str, Any]] = []
    with ctx.engine.lock:
        for index, statement in enumerate(statements):
            try:
                if not isinstance(statement, dict):
                    raise CommandError(14, "each delete statement must be an object")
                _no_collation(statement)
                query = arg(statement, "q", dict, command="delete.deletes")
                limit = int_arg(statement, "limit", -1, command="delete.deletes")
                if limit not in (0, 1):
                    raise CommandError(9, f"The limit field in delete objects must be 0 or 1. Got {limit}")
                n += ctx.engine.delete(db, coll, query, limit=limit)
            except Exception as exc:  # noqa: BLE001 - each statement fails on its own
                errors.append(write_error(index, exc, f"{db}.{coll}"))
                if ordered:
                    break
    return _write_reply(n, errors)


@command("findAndModify", "findandmodify", write=True)
def find_and_modify(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    coll = next(iter(cmd.values()))
    if not isinstance(coll, str):
        raise CommandError(14, "findAndModify expects a collection name")
    _no_collation(cmd)
    query = arg(cmd, "query", dict, None) or {}
    sort = arg(cmd, "sort", dict, None)
    fields = arg(cmd, "fields", dict, None)
    remove = bool_arg(cmd, "remove", False)
    new = bool_arg(cmd, "new", False)
    upsert = bool_arg(cmd, "upsert", False)
    change = arg(cmd, "update", (dict, list), None)
    if remove == (change is not None):
        raise CommandError(9, "Either an update or remove=true must be specified")
    if remove and (new or upsert):
        raise CommandError(9, "Cannot specify both upsert=true/new=true and remove=true")
    sort_list = list(sort.items()) if sort else None
    engine = ctx.engine
    with engine.lock:
        target = engine.collection(db, coll)
        found = next(iter(find_documents(target, query, sort=sort_list, limit=1)), None)
        old_value = found
        if found is not None and fields:
            old_value = next(iter(find_documents(target, {"_id": found["_id"]}, projection=fields)), None)
        if remove:
            if found is not None:
                engine.delete(db, coll, {"_id": found["_id"]}, limit=1)
            return {"lastErrorObject": {"n": int(found is not None)}, "value": old_value, "ok": 1.0}
        # Without a sort mongomock's update picks the same first match, and positional ($)
        # operators still see the original query; with a sort, pin the chosen document by _id.
        selector = query if found is None or not sort else {"_id": found["_id"]}
        raw = engine.update(
            db,
            coll,
            selector,
            change,
            multi=False,
            upsert=upsert,
            array_filters=arg(cmd, "arrayFilters", list, None),
        )
        upserted = raw.get("upserted")
        doc_id = upserted if upserted is not None else (found["_id"] if found is not None else None)
        value = old_value
        if new and doc_id is not None:
            value = next(iter(find_documents(target, {"_id": doc_id}, projection=fields)), None)
    last_error: dict[str, Any] = {"n": raw["n"], "updatedExisting": found is not None}
    if upserted is not None:
        last_error["upserted"] = upserted
    return {"lastErrorObject": last_error, "value": value, "ok": 1.0}


@command("find")
def find(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    coll = arg(cmd, "find", str)
    _no_collation(cmd)
    query = arg(cmd, "filter", dict, {})
    sort = arg(cmd, "sort", dict, None)
    projection = arg(cmd, "projection", dict, None)
    skip = int_arg(cmd, "skip", 0)
    limit = int_arg(cmd, "limit", 0)
    batch_size = int_arg(cmd, "batchSize", DEFAULT_FIRST_BATCH)
    for name, value in (("skip", skip), ("limit", limit), ("batchSize", batch_size)):
        if value < 0:
            raise CommandError(51024, f"BSON field '{name}' value must be >= 0, actual value '{value}'")
    if cmd.get("tailable"):
        raise CommandError(238, "tailable cursors (capped collections) are not supported by the test server")
    with ctx.engine.lock:
        documents = []
        if ctx.engine.exists(db, coll):
            documents = find_documents(
                ctx.engine.collection(db, coll),
                query,
                projection=projection,
                skip=skip,
                limit=limit,
                sort=list(sort.items()) if sort else None,
            )
    ns = f"{db}.{coll}"
    cursor = ListCursor(ns, documents)
    batch = cursor.take(batch_size if batch_size else 0)
    single = bool_arg(cmd, "singleBatch", False)
    cursor_id = 0 if single or cursor.exhausted else ctx.cursors.register(cursor)
    return cursor_reply(cursor_id, ns, batch, first=True)


@command("getMore")
def get_more(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    cursor_id = arg(cmd, "getMore", int)
    coll = arg(cmd, "collection", str, command="getMore")
    batch_size = int_arg(cmd, "batchSize", 0) or None
    max_time_ms = arg(cmd, "maxTimeMS", (int, float), None)
    cursor = ctx.cursors.get(cursor_id)
    if cursor is None:
        raise CommandError(43, f"cursor id {cursor_id} not found")
    ns = f"{db}.{coll}"
    if cursor.ns != ns:
        raise CommandError(
            13,
            f"Requested getMore on namespace '{ns}', but cursor belongs to a different namespace {cursor.ns}",
        )
    if not cursor.busy.acquire(blocking=False):
        raise CommandError(292, f"Cursor already in use (namespace: '{ns}', id: {cursor_id}).")
    extra: dict[str, Any] = {}
    try:
        if isinstance(cursor, ChangeStreamCursor):
            batch, token = _await_events(ctx, cursor, batch_size, max_time_ms)
            extra["postBatchResumeToken"] = token
        else:
            assert isinstance(cursor, ListCursor)
            batch = cursor.take(batch_size)
    except CommandError:
        ctx.cursors.remove(cursor_id)  # an error kills the cursor, as on mongod
        raise
    finally:
        cursor.busy.release()
    if cursor.exhausted:
        ctx.cursors.remove(cursor_id)
        cursor_id = 0
    return cursor_reply(cursor_id, cursor.ns, batch, first=False, **extra)


def _await_events(
    ctx: Context, cursor: ChangeStreamCursor, batch_size: int | None, max_time_ms: float | None
) -> tuple[list[Any], dict[str, str]]:
    """Return at once if events are waiting, else wait for some until the await time runs out."""
    wait_ms = max_time_ms if max_time_ms is not None else (cursor.max_await_ms or DEFAULT_AWAIT_MS)
    deadline = time.monotonic() + wait_ms / 1000
    engine = ctx.engine
    with engine.lock:
        while True:
            batch, token = cursor.next_batch(batch_size)
            remaining = deadline - time.monotonic()
            if batch or cursor.invalidated or remaining <= 0 or ctx.closing():
                return batch, token
            engine.changed.wait(remaining)


@command("killCursors", data=False)
def kill_cursors(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    arg(cmd, "killCursors", str)
    killed: list[int] = []
    missing: list[Any] = []
    for cursor_id in arg(cmd, "cursors", list):
        (killed if isinstance(cursor_id, int) and ctx.cursors.remove(cursor_id) else missing).append(
            cursor_id
        )
    return {
        "cursorsKilled": [Int64(i) for i in killed],
        "cursorsNotFound": [Int64(i) if isinstance(i, int) else i for i in missing],
        "cursorsAlive": [],
        "cursorsUnknown": [],
        "ok": 1.0,
    }


@command("count")
def count(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    coll = arg(cmd, "count", str)
    _no_collation(cmd)
    query = arg(cmd, "query", dict, None) or {}
    skip = int_arg(cmd, "skip", 0)
    limit = abs(int_arg(cmd, "limit", 0))
    options: dict[str, Any] = {"skip": skip}
    if limit:
        options["limit"] = limit
    with ctx.engine.lock:
        n = (
            ctx.engine.collection(db, coll).count_documents(query, **options)
            if ctx.engine.exists(db, coll)
            else 0
        )
    return {"n": n, "ok": 1.0}


@command("distinct")
def distinct(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    coll = arg(cmd, "distinct", str)
    _no_collation(cmd)
    key = arg(cmd, "key", str)
    query = arg(cmd, "query", dict, None) or {}
    with ctx.engine.lock:
        values = ctx.engine.collection(db, coll).distinct(key, query) if ctx.engine.exists(db, coll) else []
    return {"values": values, "ok": 1.0}


@command("aggregate")
def aggregate(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    target = cmd["aggregate"]
    pipeline = arg(cmd, "pipeline", list)
    if "explain" in cmd:
        raise CommandError(238, "explain is not supported by the test server")
    if "cursor" not in cmd:
        raise CommandError(
            9, "The 'cursor' option is required, except for aggregate with the explain argument"
        )
    _no_collation(cmd)
    if not isinstance(target, str) and target != 1:
        raise CommandError(2, "Invalid aggregate namespace: 'aggregate' must be a collection name or 1")
    batch_size = first_batch_size(cmd)
    first_stage = pipeline[0] if pipeline and isinstance(pipeline[0], dict) else {}
    if "$changeStream" in first_stage:
        return _watch(ctx, db, target, pipeline, batch_size, arg(cmd, "maxAwaitTimeMS", int, None))
    for stage in pipeline[1:]:
        if isinstance(stage, dict) and ("$changeStream" in stage or "$collStats" in stage):
            raise CommandError(40602, f"{next(iter(stage))} is only valid as the first stage in a pipeline.")
    stages = mongomock_stages(pipeline)
    for stage in stages:
        if next(iter(stage)) in ("$out", "$merge"):
            raise CommandError(238, "$out and $merge are not supported by the test server (no change events)")
    if not isinstance(target, str):
        raise CommandError(238, "database-level aggregation is only supported for $changeStream")
    with ctx.engine.lock:
        if "$collStats" in first_stage:
            documents = [_coll_stats_stage(ctx, db, target, first_stage["$collStats"])]
            database = ctx.engine.client[db]
            documents = list(mongomock.aggregate.process_pipeline(documents, database, stages[1:], None))
        else:
            documents = aggregate_collection(ctx.engine.collection(db, target), stages)
    return list_reply(ctx.cursors, f"{db}.{target}", documents, batch_size)


def _coll_stats_stage(ctx: Context, db: str, coll: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise CommandError(40166, "$collStats must take a nested object but found: " + repr(spec))
    document: dict[str, Any] = {"ns": f"{db}.{coll}", "host": ctx.topology.me, "localTime": server_time()}
    if "count" in spec or "storageStats" in spec:
        if ctx.engine.exists(db, coll):
            stats = coll_stats_document(ctx, db, coll)
        else:
            stats = {"count": 0, "size": 0}
        if "count" in spec:
            document["count"] = stats["count"]
        if "storageStats" in spec:
            document["storageStats"] = stats
    return document


def _watch(
    ctx: Context, db: str, target: Any, pipeline: list[Any], batch_size: int, max_await_ms: int | None
) -> dict[str, Any]:
    with ctx.engine.lock:
        cursor = open_change_stream(ctx.engine, db, target, pipeline, max_await_ms)
        batch, token = cursor.next_batch(batch_size)
    cursor_id = 0 if cursor.invalidated else ctx.cursors.register(cursor)
    return cursor_reply(cursor_id, cursor.ns, batch, first=True, postBatchResumeToken=token)
