"""Storage: mongomock behind one lock, plus the collection catalog and the oplog.

mongomock answers every query and update (filters, operators, pipelines, sorting); this module
only decides which documents a write touched, so it can append the oplog entries that change
streams read.  Everything here expects ``Engine.lock`` to be held by the caller.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import bson
import mongomock
import mongomock.aggregate
from bson.binary import Binary

from . import bsontypes
from .diff import describe_update, same_value
from .errors import CommandError
from .oplog import Oplog, OplogEntry

MAX_BSON_SIZE = 16 * 1024 * 1024

# Databases a change stream never reports and clients cannot write to by accident.
INTERNAL_DATABASES = frozenset({"admin", "config", "local"})

bsontypes.install()  # timestamps, MinKey/MaxKey and code in queries and sorts, as a server has them


@dataclass
class CollectionInfo:
    """What listCollections reports beyond the name, and the pre/post-image switch."""

    uuid: Binary = field(default_factory=lambda: Binary(uuid.uuid4().bytes, 4))
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def images_enabled(self) -> bool:
        setting = self.options.get("changeStreamPreAndPostImages")
        return isinstance(setting, dict) and bool(setting.get("enabled"))


def find(target: mongomock.Collection, query: dict[str, Any], **options: Any) -> list[dict[str, Any]]:
    """``list(target.find(query, **options))`` without mongomock's quadratic iteration.

    mongomock's cursor re-slices its whole result list on every ``next()``, so iterating
    100k documents takes minutes; its ``_compute_results`` builds the same list once.
    """
    cursor = target.find(query, **options)
    compute = getattr(cursor, "_compute_results", None)
    if compute is None:
        return list(cursor)
    return list(compute(with_limit_and_skip=True))


def aggregate(target: mongomock.Collection, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``target.aggregate(pipeline)`` (mongomock's own body) over a linearly built input."""
    return list(mongomock.aggregate.process_pipeline(find(target, {}), target.database, pipeline, None))


def write_error(index: int, exc: Exception, ns: str, doc_id: Any = None) -> dict[str, Any]:
    """A ``writeErrors`` element for a mongomock exception raised by statement ``index``."""
    if isinstance(exc, CommandError):
        return {"index": index, "code": exc.code, "errmsg": exc.message}
    if isinstance(exc, mongomock.DuplicateKeyError):
        error: dict[str, Any] = {"index": index, "code": 11000}
        if doc_id is not None:
            error["errmsg"] = (
                f"E11000 duplicate key error collection: {ns} index: _id_ dup key: {{ _id: {doc_id!r} }}"
            )
            error["keyPattern"] = {"_id": 1}
            error["keyValue"] = {"_id": doc_id}
        else:
            error["errmsg"] = f"E11000 duplicate key error collection: {ns}"
        return error
    if isinstance(exc, NotImplementedError):
        return {"index": index, "code": 238, "errmsg": f"not supported by the test server: {exc}"}
    code = getattr(exc, "code", None) or 2
    return {"index": index, "code": code, "errmsg": str(exc)}


class Engine:
    """The data behind the server: mongomock databases, the catalog and the oplog."""

    def __init__(self) -> None:
        self.client: Any = mongomock.MongoClient()
        self.oplog = Oplog()
        # One lock for everything mongomock touches (it is not thread-safe); waiting change
        # streams sleep on ``changed`` so a getMore never holds the lock while idle.
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._catalog: dict[tuple[str, str], CollectionInfo] = {}

    # -- catalog -------------------------------------------------------------------------------

    def collection(self, db: str, coll: str) -> mongomock.Collection:
        return self.client[db][coll]

    def exists(self, db: str, coll: str) -> bool:
        return (db, coll) in self._catalog

    def info(self, db: str, coll: str) -> CollectionInfo | None:
        return self._catalog.get((db, coll))

    def collection_names(self, db: str) -> list[str]:
        return [c for (d, c) in self._catalog if d == db]

    def database_names(self) -> list[str]:
        return sorted({d for (d, _) in self._catalog})

    def ensure(self, db: str, coll: str) -> CollectionInfo:
        """Create the collection implicitly, as a first insert or upsert does."""
        info = self._catalog.get((db, coll))
        if info is None:
            check_namespace(db, coll)
            info = CollectionInfo()
            self._catalog[(db, coll)] = info
            if coll not in self.client[db].list_collection_names():
                self.client[db].create_collection(coll)
        return info

    def create(self, db: str, coll: str, options: dict[str, Any]) -> None:
        if self.exists(db, coll):
            raise CommandError(48, f"Collection {db}.{coll} already exists.")
        self.ensure(db, coll).options.update(options)

    def coll_mod(self, db: str, coll: str, options: dict[str, Any]) -> None:
        info = self.info(db, coll)
        if info is None:
            raise CommandError(26, f"ns does not exist: {db}.{coll}")
        info.options.update(options)

    def drop(self, db: str, coll: str) -> int | None:
        """Drop a collection; the number of indexes it had, or None if it did not exist."""
        info = self._catalog.pop((db, coll), None)
        if info is None:
            return None
        n_indexes = len(self.collection(db, coll).index_information())
        self.client[db].drop_collection(coll)
        self._record("drop", db, coll, uuid=info.uuid)
        return n_indexes

    def drop_database(self, db: str) -> None:
        names = self.collection_names(db)
        for coll in names:
            self.drop(db, coll)
        self.client.drop_database(db)
        if names:
            self._record("dropDatabase", db, None)

    def rename(self, src: tuple[str, str], dst: tuple[str, str], drop_target: bool) -> None:
        info = self._catalog.get(src)
        if info is None:
            raise CommandError(26, "source namespace does not exist")
        check_namespace(*dst)
        if src == dst:
            raise CommandError(20, "Can't rename a collection to itself")
        if dst in self._catalog:
            if not drop_target:
                raise CommandError(48, "target namespace exists")
            del self._catalog[dst]
            self.client[dst[0]].drop_collection(dst[1])
        if src[0] == dst[0]:
            self.client[src[0]].rename_collection(src[1], dst[1], dropTarget=True)
        else:
            self._copy_collection(src, dst)
            info = CollectionInfo(options=dict(info.options))  # a new collection, a new UUID
        del self._catalog[src]
        self._catalog[dst] = info
        self._record("rename", src[0], src[1], uuid=info.uuid, to=dst)

    def _copy_collection(self, src: tuple[str, str], dst: tuple[str, str]) -> None:
        source = self.collection(*src)
        target = self.client[dst[0]].create_collection(dst[1])
        for name, index in source.index_information().items():
            if name != "_id_":
                options = {k: v for k, v in index.items() if k not in ("key", "v")}
                target.create_index(index["key"], name=name, **options)
        documents = find(source, {})
        if documents:
            target.insert_many(documents)
        self.client[src[0]].drop_collection(src[1])

    # -- writes --------------------------------------------------------------------------------

    def insert(self, db: str, coll: str, documents: list[Any], ordered: bool) -> tuple[int, list[dict]]:
        ns = f"{db}.{coll}"
        info = self.ensure(db, coll)
        target = self.collection(db, coll)
        inserted = 0
        errors: list[dict[str, Any]] = []
        for index, document in enumerate(documents):
            try:
                if not isinstance(document, dict):
                    raise CommandError(14, "each document to insert must be an object")
                # mongod stores _id first, generating it when the client did not.
                document = {"_id": document.get("_id", bson.ObjectId()), **document}
                raw = bson.encode(document)
                if len(raw) > MAX_BSON_SIZE:
                    raise CommandError(10334, f"object to insert too large. size in bytes: {len(raw)}")
                target.insert_one(document)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a write error
                # mongomock rolled the insert back: a stored document with this _id means the
                # clash was on _id, otherwise on another unique index.
                doc_id = document.get("_id") if isinstance(document, dict) else None
                clash_on_id = doc_id is not None and self._peek(target, doc_id) is not None
                errors.append(write_error(index, exc, ns, doc_id if clash_on_id else None))
                if ordered:
                    break
                continue
            inserted += 1
            self._record(
                "insert", db, coll, uuid=info.uuid, document_key={"_id": document["_id"]}, full_document=raw
            )
        return inserted, errors

    def update(
        self,
        db: str,
        coll: str,
        query: dict[str, Any],
        update: dict[str, Any] | list[Any],
        *,
        multi: bool,
        upsert: bool,
        array_filters: list[Any] | None = None,
    ) -> dict[str, Any]:
        """Apply one update statement; returns mongomock's raw result (n, nModified, upserted)."""
        target = self.collection(db, coll)
        replacement = isinstance(update, dict) and not (update and next(iter(update)).startswith("$"))
        if replacement and multi:
            raise CommandError(9, "multi update is not supported for replacement-style update")
        if isinstance(update, dict) and not replacement:
            for key in update:
                if not key.startswith("$"):
                    raise CommandError(9, f"Unknown modifier: {key}. Expected a valid update modifier")
        # Snapshot what mongomock is about to touch: it walks the same documents in the same order.
        touched = find(target, query) if multi else find(target, query, limit=1)
        try:
            if replacement:
                assert isinstance(update, dict)
                result = target.replace_one(query, update, upsert=upsert)
            else:
                kwargs: dict[str, Any] = {"upsert": upsert}
                if array_filters is not None:
                    kwargs["array_filters"] = array_filters
                method = target.update_many if multi else target.update_one
                result = method(query, update, **kwargs)
        finally:
            # A multi-update that fails part way keeps its earlier changes; they still get events.
            self._record_updates(db, coll, target, touched, replacement)
        raw = dict(result.raw_result or {})
        if raw.get("upserted") is not None:
            info = self.ensure(db, coll)
            after = self._peek(target, raw["upserted"])
            self._record(
                "insert",
                db,
                coll,
                uuid=info.uuid,
                document_key={"_id": raw["upserted"]},
                full_document=bson.encode(after or {}),
            )
        return raw

    def _record_updates(
        self,
        db: str,
        coll: str,
        target: mongomock.Collection,
        touched: list[dict[str, Any]],
        replacement: bool,
    ) -> None:
        info = self.info(db, coll)
        if info is None:
            return
        for before in touched:
            after = self._peek(target, before["_id"])
            if after is None or same_value(before, after):
                continue
            images = self._images(info, before, after)
            key = {"_id": before["_id"]}
            if replacement:
                self._record(
                    "replace",
                    db,
                    coll,
                    uuid=info.uuid,
                    document_key=key,
                    full_document=bson.encode(after),
                    **images,
                )
            else:
                self._record(
                    "update",
                    db,
                    coll,
                    uuid=info.uuid,
                    document_key=key,
                    update_description=describe_update(before, after),
                    **images,
                )

    def delete(self, db: str, coll: str, query: dict[str, Any], *, limit: int) -> int:
        target = self.collection(db, coll)
        doomed = find(target, query) if limit == 0 else find(target, query, limit=1)
        info = self.info(db, coll)
        for before in doomed:
            self._remove(target, before["_id"])
            images = {"pre_image": bson.encode(before)} if info is not None and info.images_enabled else {}
            uuid_ = info.uuid if info is not None else None
            self._record("delete", db, coll, uuid=uuid_, document_key={"_id": before["_id"]}, **images)
        return len(doomed)

    def document(self, db: str, coll: str, doc_id: Any) -> dict[str, Any] | None:
        """The current document with this _id (what updateLookup reads), or None."""
        if not self.exists(db, coll):
            return None
        return self._peek(self.collection(db, coll), doc_id)

    @staticmethod
    def _peek(target: mongomock.Collection, doc_id: Any) -> dict[str, Any] | None:
        """The stored document by _id, read-only and valid only until the next write.

        mongomock answers ``find({_id: x})`` with a full scan, which makes updateLookup and
        per-document update events quadratic; its store is a dict keyed by _id, so read that,
        falling back to a query if the internals ever change.
        """
        try:
            key = mongomock.helpers.hashdict(doc_id) if isinstance(doc_id, dict) else doc_id
            store: Any = target._store
            return store[key] if key in store else None
        except (AttributeError, TypeError):
            return next(iter(target.find({"_id": doc_id})), None)

    @staticmethod
    def _remove(target: mongomock.Collection, doc_id: Any) -> None:
        """Delete one document chosen by a mongomock query.

        mongomock's own delete_many re-runs the query through its quadratic cursor; removing
        the matched _ids from its store is the same operation in linear time.
        """
        try:
            key = mongomock.helpers.hashdict(doc_id) if isinstance(doc_id, dict) else doc_id
            store: Any = target._store
            del store[key]
        except (AttributeError, TypeError):
            target.delete_one({"_id": doc_id})

    @staticmethod
    def _images(
        info: CollectionInfo | None, before: dict[str, Any], after: dict[str, Any]
    ) -> dict[str, bytes]:
        if info is None or not info.images_enabled:
            return {}
        return {"pre_image": bson.encode(before), "post_image": bson.encode(after)}

    def _record(self, op: str, db: str, coll: str | None, **fields: Any) -> None:
        ts, wall = self.oplog.tick()
        self.oplog.append(OplogEntry(ts, wall, op, db, coll, **fields))
        self.changed.notify_all()


def check_namespace(db: str, coll: str) -> None:
    """Reject names the server rejects ("Naming Restrictions" in the manual's Limits page)."""
    if not db or any(c in db for c in '/\\. "$\x00'):
        raise CommandError(73, f"Invalid database name: '{db}'")
    if not coll or "$" in coll or "\x00" in coll or coll.startswith("."):
        raise CommandError(73, f"Invalid collection name: {coll!r}")
    if coll.startswith("system.") and db not in INTERNAL_DATABASES:
        raise CommandError(73, f"Invalid collection name: {coll!r}")
