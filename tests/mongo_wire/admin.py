"""Catalog and server-information commands (manual "Database Commands" reference pages)."""

from __future__ import annotations

import datetime
from typing import Any

import bson
from bson.int64 import Int64
from mongomock.filtering import filter_applies

from .commands import Context, command
from .cursors import DEFAULT_FIRST_BATCH, CursorRegistry, ListCursor, cursor_reply
from .engine import INTERNAL_DATABASES, check_namespace, find
from .errors import CommandError, arg, bool_arg, int_arg

VERSION = "7.0.0"

# Options a create command may carry that this server records and reports back.
_CREATE_OPTIONS = frozenset(
    {
        "capped",
        "size",
        "max",
        "validator",
        "validationLevel",
        "validationAction",
        "collation",
        "changeStreamPreAndPostImages",
        "clusteredIndex",
        "expireAfterSeconds",
        "storageEngine",
        "indexOptionDefaults",
    }
)
_UNSUPPORTED_CREATE = frozenset({"viewOn", "pipeline", "timeseries", "encryptedFields"})
_COLLMOD_OPTIONS = frozenset(
    {"changeStreamPreAndPostImages", "validator", "validationLevel", "validationAction", "expireAfterSeconds"}
)

_PARAMETERS: dict[str, Any] = {
    "featureCompatibilityVersion": {"version": "7.0"},
    "changeStreamOptions": {"preAndPostImages": {"expireAfterSeconds": "off"}},
    "cursorTimeoutMillis": Int64(600_000),
    "transactionLifetimeLimitSeconds": 60,
}


def first_batch_size(cmd: dict[str, Any]) -> int:
    cursor = arg(cmd, "cursor", dict, {})
    size = int_arg(cursor, "batchSize", DEFAULT_FIRST_BATCH, command="cursor")
    if size < 0:
        raise CommandError(51024, f"BSON field 'batchSize' value must be >= 0, actual value '{size}'")
    return size


def list_reply(
    cursors: CursorRegistry, ns: str, documents: list[dict[str, Any]], batch_size: int
) -> dict[str, Any]:
    """Serve precomputed documents as a cursor, registering it only if they do not fit one batch."""
    cursor = ListCursor(ns, documents)
    batch = cursor.take(batch_size)
    cursor_id = 0 if cursor.exhausted else cursors.register(cursor)
    return cursor_reply(cursor_id, ns, batch, first=True)


@command("saslStart", "authenticate", data=False)
def authenticate(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    # no users here: every login fails the way a real server refuses a wrong password
    raise CommandError(18, "Authentication failed.")


@command("ping", data=False)
def ping(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"ok": 1.0}


@command("buildInfo", "buildinfo", data=False)
def build_info(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": VERSION,
        "gitVersion": "0" * 40,
        "versionArray": [7, 0, 0, 0],
        "bits": 64,
        "debug": False,
        "maxBsonObjectSize": 16 * 1024 * 1024,
        "storageEngines": ["wiredTiger"],
        "modules": [],
        "ok": 1.0,
    }


@command("getParameter", data=False, admin_only=True)
def get_parameter(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    selector = cmd["getParameter"]
    if selector == "*" or (isinstance(selector, dict) and selector.get("allParameters")):
        return {**_PARAMETERS, "ok": 1.0}
    wanted = [name for name in cmd if name != "getParameter" and not name.startswith("$") and name != "lsid"]
    reply: dict[str, Any] = {}
    for name in wanted:
        if name in _PARAMETERS:
            reply[name] = _PARAMETERS[name]
    if not reply:
        raise CommandError(72, "no option found to get")
    return {**reply, "ok": 1.0}


@command("endSessions", "killSessions", "killAllSessions", "refreshSessions", data=False)
def sessions(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"ok": 1.0}


@command("listDatabases", admin_only=True)
def list_databases(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    query = arg(cmd, "filter", dict, {})
    name_only = bool_arg(cmd, "nameOnly", False)
    with ctx.engine.lock:
        names = sorted(set(ctx.engine.database_names()) | INTERNAL_DATABASES)
        sizes = {name: 8192 * (1 + len(ctx.engine.collection_names(name))) for name in names}
    databases = []
    for name in names:
        entry: dict[str, Any] = (
            {"name": name}
            if name_only
            else {
                "name": name,
                "sizeOnDisk": Int64(sizes[name]),
                "empty": False,
            }
        )
        if filter_applies(query, entry):
            databases.append(entry)
    reply: dict[str, Any] = {"databases": databases}
    if not name_only:
        reply["totalSize"] = Int64(sum(d["sizeOnDisk"] for d in databases))
        reply["totalSizeMb"] = Int64(reply["totalSize"] // (1024 * 1024))
    reply["ok"] = 1.0
    return reply


@command("listCollections")
def list_collections(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    query = arg(cmd, "filter", dict, {})
    name_only = bool_arg(cmd, "nameOnly", False)
    batch_size = first_batch_size(cmd)
    documents = []
    with ctx.engine.lock:
        for name in sorted(ctx.engine.collection_names(db)):
            info = ctx.engine.info(db, name)
            assert info is not None
            full = {
                "name": name,
                "type": "collection",
                "options": dict(info.options),
                "info": {"readOnly": False, "uuid": info.uuid},
                "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            }
            if filter_applies(query, full):
                documents.append({"name": name, "type": "collection"} if name_only else full)
    return list_reply(ctx.cursors, f"{db}.$cmd.listCollections", documents, batch_size)


@command("create")
def create(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    name = arg(cmd, "create", str)
    unsupported = _UNSUPPORTED_CREATE & set(cmd)
    if unsupported:
        raise CommandError(238, f"{sorted(unsupported)[0]} is not supported by the test server")
    options = {key: value for key, value in cmd.items() if key in _CREATE_OPTIONS}
    _check_images_option(options)
    with ctx.engine.lock:
        ctx.engine.create(db, name, options)
    return {"ok": 1.0}


@command("collMod")
def coll_mod(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    name = arg(cmd, "collMod", str)
    options = {key: value for key, value in cmd.items() if key in _COLLMOD_OPTIONS}
    _check_images_option(options)
    with ctx.engine.lock:
        ctx.engine.coll_mod(db, name, options)
    return {"ok": 1.0}


def _check_images_option(options: dict[str, Any]) -> None:
    setting = options.get("changeStreamPreAndPostImages")
    if setting is not None and not (isinstance(setting, dict) and isinstance(setting.get("enabled"), bool)):
        raise CommandError(
            14, "BSON field 'changeStreamPreAndPostImages' must be a document {enabled: <bool>}"
        )


@command("drop")
def drop(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    name = arg(cmd, "drop", str)
    with ctx.engine.lock:
        n_indexes = ctx.engine.drop(db, name)
    if n_indexes is None:
        return {"ok": 1.0}  # MongoDB 7.0 no longer fails a drop of a missing collection
    return {"nIndexesWas": n_indexes, "ns": f"{db}.{name}", "ok": 1.0}


@command("dropDatabase")
def drop_database(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    if db in INTERNAL_DATABASES:
        raise CommandError(20, f"Dropping the '{db}' database is prohibited.")
    with ctx.engine.lock:
        ctx.engine.drop_database(db)
    return {"dropped": db, "ok": 1.0}


@command("renameCollection", admin_only=True)
def rename_collection(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    source = _split_namespace(arg(cmd, "renameCollection", str), "source")
    target = _split_namespace(arg(cmd, "to", str), "target")
    drop_target = bool_arg(cmd, "dropTarget", False)
    with ctx.engine.lock:
        ctx.engine.rename(source, target, drop_target)
    return {"ok": 1.0}


def _split_namespace(ns: str, which: str) -> tuple[str, str]:
    db, dot, coll = ns.partition(".")
    if not dot:
        raise CommandError(73, f"Invalid {which} namespace: {ns}")
    check_namespace(db, coll)
    return db, coll


@command("createIndexes")
def create_indexes(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    name = arg(cmd, "createIndexes", str)
    specs = arg(cmd, "indexes", list)
    if not specs:
        raise CommandError(2, "Must specify at least one index to create")
    with ctx.engine.lock:
        created = not ctx.engine.exists(db, name)
        ctx.engine.ensure(db, name)
        target = ctx.engine.collection(db, name)
        before = len(target.index_information())
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("key"), dict) or not spec["key"]:
                raise CommandError(9, "index specification must have a non-empty 'key' document")
            options = {
                k: v
                for k, v in spec.items()
                if k in ("name", "unique", "sparse", "expireAfterSeconds", "partialFilterExpression")
            }
            target.create_index(list(spec["key"].items()), **options)
        after = len(target.index_information())
    reply: dict[str, Any] = {
        "numIndexesBefore": before,
        "numIndexesAfter": after,
        "createdCollectionAutomatically": created,
    }
    if before == after:
        reply["note"] = "all indexes already exist"
    reply["ok"] = 1.0
    return reply


@command("listIndexes")
def list_indexes(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    name = arg(cmd, "listIndexes", str)
    batch_size = first_batch_size(cmd)
    with ctx.engine.lock:
        if not ctx.engine.exists(db, name):
            raise CommandError(26, f"ns does not exist: {db}.{name}")
        indexes = [
            _index_document(n, info)
            for n, info in ctx.engine.collection(db, name).index_information().items()
        ]
    return list_reply(ctx.cursors, f"{db}.{name}", indexes, batch_size)


def _index_document(name: str, info: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {"v": 2, "key": dict(info["key"]), "name": name}
    document.update({k: v for k, v in info.items() if k not in ("key", "v")})
    return document


@command("dropIndexes", "deleteIndexes")
def drop_indexes(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    name = next(iter(cmd.values()))
    if not isinstance(name, str):
        raise CommandError(14, "collection name must be a string")
    which = cmd.get("index")
    with ctx.engine.lock:
        if not ctx.engine.exists(db, name):
            raise CommandError(26, f"ns not found {db}.{name}")
        target = ctx.engine.collection(db, name)
        information = dict(target.index_information())
        if which == "*":
            target.drop_indexes()
        else:
            for index in which if isinstance(which, list) else [which]:
                index_name = _index_name(information, index)
                if index_name == "_id_":
                    raise CommandError(72, "cannot drop _id index")
                target.drop_index(index_name)
    return {"nIndexesWas": len(information), "ok": 1.0}


def _index_name(information: dict[str, Any], index: Any) -> str:
    if isinstance(index, str):
        if index not in information:
            raise CommandError(27, f"index not found with name [{index}]")
        return index
    if isinstance(index, dict):
        for name, info in information.items():
            if list(info["key"]) == list(index.items()):
                return name
        raise CommandError(27, f"can't find index with key: {index}")
    raise CommandError(14, "dropIndexes 'index' must be a string, a document or an array of strings")


@command("dbStats")
def db_stats(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    with ctx.engine.lock:
        names = ctx.engine.collection_names(db)
        stats = [_collection_size(ctx, db, name) for name in names]
        n_indexes = sum(len(ctx.engine.collection(db, name).index_information()) for name in names)
    objects = sum(count for count, _ in stats)
    data_size = sum(size for _, size in stats)
    return {
        "db": db,
        "collections": len(names),
        "views": 0,
        "objects": Int64(objects),
        "avgObjSize": data_size / objects if objects else 0.0,
        "dataSize": float(data_size),
        "storageSize": float(data_size),
        "indexes": n_indexes,
        "indexSize": float(4096 * n_indexes),
        "totalSize": float(data_size + 4096 * n_indexes),
        "scaleFactor": 1.0,
        "fsUsedSize": 0.0,
        "fsTotalSize": 0.0,
        "ok": 1.0,
    }


@command("collStats")
def coll_stats(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    name = arg(cmd, "collStats", str)
    with ctx.engine.lock:
        return coll_stats_document(ctx, db, name) | {"ok": 1.0}


def coll_stats_document(ctx: Context, db: str, name: str) -> dict[str, Any]:
    """Shared by collStats and the $collStats aggregation stage; caller holds the lock."""
    info = ctx.engine.info(db, name)
    if info is None:
        raise CommandError(26, f"Collection [{db}.{name}] not found.")
    count, size = _collection_size(ctx, db, name)
    indexes = ctx.engine.collection(db, name).index_information()
    return {
        "ns": f"{db}.{name}",
        "size": size,
        "count": count,
        "avgObjSize": size // count if count else 0,
        "storageSize": size,
        "capped": bool(info.options.get("capped", False)),
        "nindexes": len(indexes),
        "indexSizes": {index: 4096 for index in indexes},
        "totalIndexSize": 4096 * len(indexes),
        "totalSize": size + 4096 * len(indexes),
    }


def _collection_size(ctx: Context, db: str, name: str) -> tuple[int, int]:
    documents = find(ctx.engine.collection(db, name), {})
    return len(documents), sum(len(bson.encode(d)) for d in documents)


def server_time() -> datetime.datetime:
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
