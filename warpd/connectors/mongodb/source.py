"""MongoDB source: collection snapshots by ``_id`` and a database-level change stream.

Positions are either ``{"cluster_time": [seconds, increment]}`` (captured
before the initial snapshot; the stream starts there with
``startAtOperationTime``) or ``{"token": <resume token>}`` (the ``_id`` of the
last change event, or the stream's ``postBatchResumeToken`` while it is idle;
the stream resumes with ``startAfter``, which also works after an invalidate).
See https://www.mongodb.com/docs/manual/changeStreams/ ("Resume a Change
Stream") and docs/mongodb-mapping.md for how documents become rows.

Table shapes are inferred from the documents (:mod:`.mapping`): a snapshot
chunk or a change whose document needs a new or wider column first yields the
wider shape (a :class:`SnapshotChunk` ``schema`` or an ``EVOLVE``
:class:`SchemaChange`), so the destination always holds every field.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import bson
from bson import json_util
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from warpd.connectors.base import (
    Event,
    Heartbeat,
    Op,
    Position,
    RangeBound,
    RangeRows,
    RangeValues,
    RowChange,
    SchemaChange,
    SchemaOpKind,
    SnapshotChunk,
    TablePlan,
)
from warpd.connectors.mongodb import cursor
from warpd.connectors.mongodb.mapping import DocumentMapper, MappingOptions
from warpd.connectors.mongodb.rowhash import CollectionRanges
from warpd.errors import ConfigError, FatalError, PositionLostError, TransientError
from warpd.redact import redact
from warpd.types import Column, TableSchema

log = logging.getLogger(__name__)

CODEC_OPTIONS: CodecOptions = CodecOptions(
    tz_aware=True,
    tzinfo=_dt.UTC,
    uuid_representation=UuidRepresentation.STANDARD,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)

# How a snapshot's resume _id is stored: canonical Extended JSON, exact for every BSON type
# A snapshot chunk or a streaming batch holds about this much BSON at most, whatever the document
# sizes (snapshot_chunk_size and batch_size count documents).
CHUNK_BYTES = 64 * 1024 * 1024

_ID_JSON = json_util.JSONOptions(
    json_mode=json_util.JSONMode.CANONICAL,
    uuid_representation=UuidRepresentation.STANDARD,
    tz_aware=True,
    tzinfo=_dt.UTC,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,  # loads() gives the types CODEC_OPTIONS gives
)

# The change stream hands over undecoded events (their size bounds a batch); _next() decodes them.
RAW_CODEC_OPTIONS: CodecOptions = CodecOptions(
    document_class=RawBSONDocument, uuid_representation=UuidRepresentation.STANDARD
)

HISTORY_LOST = 286  # ChangeStreamHistoryLost
FATAL_STREAM = 280  # ChangeStreamFatalError (older servers report a lost resume point this way)
TOO_LARGE = 10334  # BSONObjectTooLarge: an event over 16 MB without $changeStreamSplitLargeEvent
AUTH_FAILED = 18
UNAUTHORIZED = 13
NOT_IMPLEMENTED = 238

# Server error codes the drivers' specifications treat as retryable (network, elections, shutdown).
_RETRYABLE_CODES = {
    6,  # HostUnreachable
    7,  # HostNotFound
    89,  # NetworkTimeout
    91,  # ShutdownInProgress
    189,  # PrimarySteppedDown
    262,  # ExceededTimeLimit
    9001,  # SocketException
    10107,  # NotWritablePrimary
    11600,  # InterruptedAtShutdown
    11602,  # InterruptedDueToReplStateChange
    13435,  # NotPrimaryNoSecondaryOk
    13436,  # NotPrimaryOrSecondary
    63,  # StaleShardVersion
    150,  # StaleEpoch
    13388,  # StaleConfig
    234,  # RetryChangeStream
    133,  # FailedToSatisfyReadPreference
}

_FULL_DOCUMENT = ("updateLookup", "whenAvailable", "required")
_BEFORE_CHANGE = ("off", "whenAvailable", "required")

# The BSON comparison order of the types an _id can have
# (https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/); a keyset
# query {_id: {$gt: x}} only matches x's own bracket, so the snapshot walks them in turn.
_ID_BRACKETS: tuple[tuple[str, ...], ...] = (
    ("minKey",),
    ("null",),
    ("int", "long", "double", "decimal"),
    ("string",),
    ("object",),
    ("binData",),
    ("objectId",),
    ("bool",),
    ("date",),
    ("timestamp",),
    ("regex",),
    ("maxKey",),
)


def is_transient(exc: BaseException) -> bool:
    """Whether a pymongo error may go away on retry (network errors, elections, shutdowns)."""
    from pymongo import errors

    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, errors.OperationFailure):
        if exc.code in (HISTORY_LOST, FATAL_STREAM, AUTH_FAILED, UNAUTHORIZED, TOO_LARGE):
            return False
        if exc.has_error_label("ResumableChangeStreamError") or exc.has_error_label("RetryableWriteError"):
            return True
        return exc.code in _RETRYABLE_CODES
    return isinstance(exc, errors.ConnectionFailure)  # AutoReconnect, NetworkTimeout, ServerSelectionTimeout


def _ts(ct: Timestamp | None) -> tuple[int, int] | None:
    return (ct.time, ct.inc) if ct is not None else None


def _epoch(value: Any) -> float | None:
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, Timestamp):
        return float(value.time)
    return None


def _id_bracket(value: Any) -> int:
    """Index in :data:`_ID_BRACKETS` of an ``_id`` value's type."""
    import re
    import uuid

    from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex

    if isinstance(value, MinKey):
        return 0
    if value is None:
        return 1
    if isinstance(value, bool):
        return 7
    if isinstance(value, (int, float, Int64, Decimal128)):
        return 2
    if isinstance(value, str):
        return 3
    if isinstance(value, (dict, Code)):
        return 4
    if isinstance(value, (bytes, Binary, uuid.UUID)):
        return 5
    if isinstance(value, ObjectId):
        return 6
    if isinstance(value, _dt.datetime) or type(value).__name__ == "DatetimeMS":
        return 8
    if isinstance(value, Timestamp):
        return 9
    if isinstance(value, (Regex, re.Pattern)):
        return 10
    if isinstance(value, MaxKey):
        return 11
    return 4


class MongoSource:
    """Reads one MongoDB database: collection snapshots and its change stream."""

    infers_shapes = True  # see SchemaRunner: shapes only widen, describe() is a sample
    # Every change event's resume token is a safe resume point once the change is applied: the
    # stream resumes *after* it (startAfter), also inside a transaction, whose events share a
    # clusterTime and lsid but each have their own token (txnOpIndex). A split event's fragments
    # are joined before the change is yielded, with the last fragment's token.
    positions_per_change = True

    def __init__(self, uri: str, database: str, schema_name: str, options: Mapping[str, Any] | None = None):
        self.uri = uri
        self.database = database
        self.schema_name = schema_name
        opts = dict(options or {})
        self.full_document = str(opts.pop("full_document", "updateLookup"))
        self.before_change = str(opts.pop("full_document_before_change", "off"))
        split = opts.pop("split_large_events", "auto")
        self.max_await_ms = int(opts.pop("max_await_ms", 500))
        self.sample_size = int(opts.pop("sample_size", 1000))
        if self.full_document not in _FULL_DOCUMENT:
            raise ConfigError(
                f"source.full_document: {self.full_document!r} is not one of {', '.join(_FULL_DOCUMENT)}"
            )
        if self.before_change not in _BEFORE_CHANGE:
            raise ConfigError(
                f"source.full_document_before_change: {self.before_change!r} is not one of "
                f"{', '.join(_BEFORE_CHANGE)}"
            )
        if split not in ("auto", True, False, "true", "false"):
            raise ConfigError(f"source.split_large_events: {split!r} is not auto, true or false")
        self._split_option = split if split == "auto" else split in (True, "true")
        self._client_options = opts  # anything else goes to MongoClient (e.g. tlsCAFile)
        self._client: Any = None
        self._split_supported: bool | None = None
        self._settings: Callable[[str], Any] | None = None
        self._mappers: dict[str, DocumentMapper] = {}
        # table -> cluster time just after its last copy: drop/rename events logged before it
        # are already reflected in the copy (see table_copied)
        self.copied_at: dict[str, tuple[int, int]] = {}
        self.skipped_lookups = 0  # updates whose document was gone when the stream looked it up

    # -- plumbing ------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            import pymongo
            from pymongo import errors

            try:
                self._client = pymongo.MongoClient(
                    self.uri,
                    appname=f"cartridge-warp {self.schema_name}"[:128],
                    serverSelectionTimeoutMS=10_000,
                    connectTimeoutMS=10_000,
                    retryReads=True,
                    # queries carry decoded values back (a resumed snapshot's last _id may be a UUID)
                    **{"uuidRepresentation": "standard", **self._client_options},
                )
            except errors.ConfigurationError as exc:
                message = redact(str(exc))
                if "DNS" in message or "resolution" in message.lower():
                    raise TransientError(f"cannot resolve the MongoDB source address: {message}") from exc
                raise FatalError(f"the MongoDB source URI is not usable: {message}") from exc
            except (errors.InvalidURI, ValueError, TypeError) as exc:
                raise FatalError(f"the MongoDB source URI is not usable: {redact(str(exc))}") from exc
        return self._client

    @property
    def db(self) -> Any:
        return self.client.get_database(self.database, codec_options=CODEC_OPTIONS)

    def configure(self, table_settings: Callable[[str], Any]) -> None:
        """Per-collection settings (``flatten_depth``, ``max_columns``); called by the engine."""
        self._settings = table_settings
        self._mappers.clear()

    def mapper(self, table: str) -> DocumentMapper:
        mapper = self._mappers.get(table)
        if mapper is None:
            settings = self._settings(table) if self._settings else None
            options = MappingOptions(
                flatten_depth=getattr(settings, "flatten_depth", 0),
                max_columns=getattr(settings, "max_columns", 200),
            )
            mapper = self._mappers[table] = DocumentMapper(table, options)
        return mapper

    # -- verify (docs/verify.md): documents hashed in Python through the recorded shape ----------
    def _ranges(self, plan: TablePlan, columns: Sequence[str] = ()) -> CollectionRanges:
        return CollectionRanges(self.db, plan, self.mapper(plan.source.name), list(columns))

    def verify_bounds(
        self, plan: TablePlan, lower: RangeBound, upper: RangeBound, every: int
    ) -> list[tuple[Any, ...]]:
        return self._call(lambda: self._ranges(plan).bounds(lower, upper, every), "cutting key ranges")

    def range_checksum(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> tuple[int, int]:
        return self._call(lambda: self._ranges(plan, columns).checksum(lower, upper), "hashing a key range")

    def range_rows(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> RangeRows:
        return self._call(lambda: self._ranges(plan, columns).rows(lower, upper), "hashing a key range")

    def range_values(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> RangeValues:
        return self._call(lambda: self._ranges(plan, columns).values(lower, upper), "reading a key range")

    is_transient = staticmethod(is_transient)

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a broken client
                pass
            self._client = None

    def _call(self, fn: Callable[[], Any], doing: str) -> Any:
        """Run ``fn``; turn authentication and permission failures into a clear FatalError."""
        from pymongo import errors

        try:
            return fn()
        except errors.OperationFailure as exc:
            if exc.code == AUTH_FAILED:
                raise FatalError(
                    f"cannot log in to the MongoDB source while {doing}: {redact(str(exc))}; check the "
                    "user, password and authSource in source.connection_string"
                ) from exc
            if exc.code == UNAUTHORIZED:
                raise FatalError(
                    f"the MongoDB user may not do this while {doing}: {redact(str(exc))}; it needs the "
                    f"read role on {self.database!r} and changeStream/find privileges (see "
                    "docs/mongodb.md, 'Source requirements')"
                ) from exc
            raise
        except errors.ConfigurationError as exc:
            raise FatalError(f"MongoDB source: {redact(str(exc))}") from exc

    # -- checks and positions ------------------------------------------------
    def check_prerequisites(self) -> None:
        hello = self._call(lambda: self.client.admin.command("hello"), "checking the server")
        if not hello.get("setName") and hello.get("msg") != "isdbgrid":
            raise FatalError(
                "the MongoDB source is a standalone server, and change streams need a replica set or a "
                "sharded cluster; a single server can be a one-member replica set: start mongod with "
                "--replSet rs0 and run rs.initiate() once"
            )
        if int(hello.get("maxWireVersion", 0)) < 8:
            raise FatalError(
                "the MongoDB source is older than 4.2; cartridge-warp needs MongoDB 4.2 or newer"
            )
        if self._split_option == "auto":
            version = self._call(lambda: self.client.admin.command("buildInfo"), "checking the server")
            parts = tuple(int(p) for p in version.get("versionArray", [0, 0, 0])[:3])
            # $changeStreamSplitLargeEvent: MongoDB 7.0, back-ported to 6.0.9 (manual: "Large Change Events")
            self._split_supported = parts >= (7, 0, 0) or (6, 0, 9) <= parts < (6, 1, 0)
        else:
            self._split_supported = bool(self._split_option)

    def current_position(self) -> Position:
        """The cluster time now, read before the snapshot starts (the stream starts there)."""
        reply = self._call(lambda: self.db.command("ping"), "reading the cluster time")
        ts = reply.get("operationTime") or (reply.get("$clusterTime") or {}).get("clusterTime")
        if ts is None:
            hello = self._call(lambda: self.client.admin.command("hello"), "reading the cluster time")
            ts = ((hello.get("lastWrite") or {}).get("opTime") or {}).get("ts")
        if ts is None:
            raise FatalError("the MongoDB source reports no cluster time; is it a replica set member?")
        return {"cluster_time": [ts.time, ts.inc]}

    def check_position(self, position: Position) -> None:
        stream = self._open(position)
        try:
            stream.try_next()
        finally:
            stream.close()

    def _watch_args(self, position: Position) -> dict[str, Any]:
        if "token" in position:
            return {"start_after": position["token"]}
        if "cluster_time" in position:
            t, i = position["cluster_time"]
            return {"start_at_operation_time": Timestamp(int(t), int(i))}
        raise PositionLostError(f"unknown MongoDB position {position!r}; was the state file edited?")

    def _open(self, position: Position, pipeline: list[dict[str, Any]] | None = None) -> Any:
        from pymongo import errors

        stages = list(pipeline or [])
        if self._split_supported and not pipeline:
            stages.append({"$changeStreamSplitLargeEvent": {}})
        kwargs: dict[str, Any] = {
            "full_document": self.full_document,
            "max_await_time_ms": self.max_await_ms,
            **self._watch_args(position),
        }
        if self.before_change != "off":
            kwargs["full_document_before_change"] = self.before_change
        try:
            # raw events: their size bounds a batch (BATCH_BYTES); _next() decodes them
            raw_db = self.client.get_database(self.database, codec_options=RAW_CODEC_OPTIONS)
            return self._call(lambda: raw_db.watch(stages, **kwargs), "opening the change stream")
        except errors.OperationFailure as exc:
            lost = self._lost(exc, position)
            if lost is None:
                raise
            raise lost from exc

    def _lost(self, exc: Any, position: Position) -> PositionLostError | None:
        text = _errmsg(exc)
        if exc.code == HISTORY_LOST or (
            exc.code == FATAL_STREAM and ("oplog" in text or "resume" in text.lower())
        ):
            return PositionLostError(
                f"MongoDB can no longer resume the change stream of {self.database!r} from {position}: "
                f"that point has left the oplog (ChangeStreamHistoryLost: {redact(text)}). Changes since "
                f"then are gone from the source's history. Set on_position_lost: resnapshot for schema "
                f"{self.schema_name!r} to copy every collection again (or delete its checkpoint with "
                "`warpctl`/the state file), and make the oplog large enough to cover the longest "
                "downtime (replSetResizeOplog)"
            )
        return None

    # -- tables --------------------------------------------------------------
    def list_tables(self) -> list[str]:
        names = self._call(
            lambda: self.db.list_collection_names(filter={"type": "collection"}), "listing collections"
        )
        return sorted(n for n in names if not n.startswith("system."))

    def table_exists(self, table: str) -> bool:
        return table in self.list_tables()

    def describe(self, table: str, key_columns: tuple[str, ...] | None = None) -> TableSchema:
        """The shape that holds a sample of the collection (the snapshot widens it as it reads)."""
        if key_columns and tuple(key_columns) != ("_id",):
            log.warning("%s: key_columns is ignored for MongoDB collections; _id is the key", table)
        mapper = self.mapper(table)
        docs = self._call(
            lambda: list(self.db[table].find().sort("_id", 1).limit(self.sample_size)), f"sampling {table!r}"
        )
        shape = mapper.initial_shape(docs[0]["_id"] if docs else None)
        for doc in docs:
            shape = mapper.fit(shape, doc)
        return shape

    def estimate_rows(self, table: str) -> int:
        try:
            return int(self.db[table].estimated_document_count())
        except Exception:  # noqa: BLE001 - only for progress display
            return 0

    def snapshot(
        self,
        schema: TableSchema,
        resume_after: Mapping[str, Any] | None,
        chunk_size: int,
        bulk_format: str | None = None,
    ) -> Iterator[SnapshotChunk]:
        """Read the collection in ``_id`` order, ``chunk_size`` documents per chunk.

        ``resume_after`` holds the last copied ``_id`` as canonical Extended
        JSON, so any BSON type resumes exactly.
        """
        table = schema.name
        coll = self.db[table]
        mapper = self.mapper(table)
        shape = schema
        last: Any = None
        has_last = False
        if resume_after is not None and "_id" in resume_after:
            last = json_util.loads(resume_after["_id"], json_options=_ID_JSON)
            has_last = True
        bracket = _id_bracket(last) if has_last else 0
        while True:
            if has_last:
                query: dict[str, Any] = {"_id": {"$gt": last}}
            else:
                query = {}
            docs, full = self._call(partial(self._read_chunk, coll, query, chunk_size), f"copying {table!r}")
            if not full and has_last:
                # the $gt query only sees last's type bracket: look for the first _id of a later one
                later = self._next_bracket_doc(coll, bracket)
                if later is not None and all(d["_id"] != later["_id"] for d in docs):
                    docs.append(later)
            if not docs:
                yield SnapshotChunk(table, [], resume_after, done=True)
                return
            rows, wider = _rows(mapper, shape, docs)
            last = docs[-1]["_id"]
            has_last = True
            bracket = _id_bracket(last)
            resume_after = {"_id": json_util.dumps(last, json_options=_ID_JSON)}
            yield SnapshotChunk(table, rows, resume_after, schema=wider if wider is not shape else None)
            shape = wider

    def cursor_column(self, schema: TableSchema, name: str) -> Column:
        """``mode: batch``: the collection's ``cursor_field`` as the engine reads ``safety_lag`` for it (a
        FatalError when its BSON type cannot be a cursor; see :mod:`.cursor`).  Every inferred column may be
        absent, so :meth:`read_since` refuses documents without a usable value instead."""
        return cursor.cursor_column(schema, name)

    def read_since(
        self,
        schema: TableSchema,
        cursor_column: str,
        mark: Mapping[str, Any] | None,
        lag: Any,
        chunk_size: int,
        bulk_format: str | None = None,
    ) -> Iterator[SnapshotChunk]:
        """``mode: batch``: the documents whose ``cursor_column`` is at or after ``mark``'s cursor minus
        ``lag``, in (cursor, ``_id``) order, each chunk a range query after the last one's (cursor, ``_id``);
        see :class:`~warpd.connectors.base.Source`.  Plain finds: no replica set or change stream needed.

        Before reading, counts the documents whose cursor field is missing, null or of another type (they
        would never be read) and refuses the run while there are any.
        """
        table = schema.name
        coll = self.db[table]
        column = schema.column(cursor_column)
        if column is None:
            raise FatalError(f"collection {table!r} has no field {cursor_column!r} (cursor_field)")
        family = cursor.family_of(table, column)
        field = cursor.path(column)
        self._refuse_unreadable(coll, column, family)
        mapper = self.mapper(table)
        shape = schema
        of_type: dict[str, Any] = {field: {"$type": family.query_type}}
        low = cursor.floor(mark, family, lag)
        query: dict[str, Any] = (
            {field: {"$type": family.query_type, "$gte": low}} if low is not None else of_type
        )
        order = [(field, 1), ("_id", 1)] if field != "_id" else [("_id", 1)]
        while True:
            docs, full = self._call(
                partial(self._read_chunk, coll, query, chunk_size, order), f"reading {table!r} by {field!r}"
            )
            if not docs:
                yield SnapshotChunk(table, [], None, done=True)
                return
            rows, wider = _rows(mapper, shape, docs)
            value, last_id = _field(docs[-1], column.path or ()), docs[-1]["_id"]
            resume = {
                "cursor": cursor.encode(value),
                "key": [json_util.dumps(last_id, json_options=_ID_JSON)],
            }
            yield SnapshotChunk(
                table, rows, resume, done=not full, schema=wider if wider is not shape else None
            )
            if not full:
                return
            shape = wider
            if field != "_id":
                # the rest of the documents sharing the last cursor value, in _id order across BSON type
                # brackets (an {_id: {$gt: x}} range matches x's own bracket only), then the values above it
                for docs in self._ties(coll, {field: value}, last_id, chunk_size):
                    rows, wider = _rows(mapper, shape, docs)
                    resume = {
                        "cursor": resume["cursor"],
                        "key": [json_util.dumps(docs[-1]["_id"], json_options=_ID_JSON)],
                    }
                    yield SnapshotChunk(table, rows, resume, schema=wider if wider is not shape else None)
                    shape = wider
            # after the last cursor value read: a range, not an offset, so writes meanwhile shift nothing
            query = {"$and": [of_type, {field: {"$gt": value}}]}

    def _ties(self, coll: Any, same: Mapping[str, Any], last: Any, chunk_size: int) -> Iterator[list[Any]]:
        """Chunks of the documents matching ``same`` whose ``_id`` comes after ``last`` in BSON order."""
        bracket = _id_bracket(last)
        while True:
            query = {"$and": [dict(same), {"_id": {"$gt": last}}]}
            docs, full = self._call(
                partial(self._read_chunk, coll, query, chunk_size), f"reading {coll.name!r}"
            )
            if not full:
                later = self._next_bracket_doc(coll, bracket, same)
                if later is not None and all(d["_id"] != later["_id"] for d in docs):
                    docs.append(later)
            if not docs:
                return
            yield docs
            last = docs[-1]["_id"]
            bracket = _id_bracket(last)

    def _refuse_unreadable(self, coll: Any, column: Column, family: cursor.Family) -> None:
        """A FatalError, naming the fix, when documents lack a usable cursor value (see :mod:`.cursor`)."""
        query = cursor.outside(column, family)
        count = self._call(lambda: coll.count_documents(query), f"checking {coll.name!r}'s cursor_field")
        if not count:
            return
        field = cursor.path(column)
        sample = self._call(
            lambda: [d["_id"] for d in coll.find(query, {"_id": 1}).sort("_id", 1).limit(3)],
            f"checking {coll.name!r}'s cursor_field",
        )
        raise FatalError(
            f"collection {coll.name!r}: {count:,} document(s) have no {family.name} in cursor_field {field!r} "
            f"(missing, null, an array or another BSON type; e.g. _id {', '.join(map(repr, sample))}), and an "
            "incremental run would never read them, so this run is refused. Give every document a "
            f"{family.name} there (e.g. db.{coll.name}.updateMany({{{field!r}: null}}, "
            f"{{$currentDate: {{{field!r}: true}}}}) for a date), or use sync: full_refresh for this collection"
        )

    def _read_chunk(
        self, coll: Any, query: Mapping[str, Any], limit: int, order: list[tuple[str, int]] | None = None
    ) -> tuple[list[Any], bool]:
        """Up to ``limit`` documents in ``order`` (``_id`` by default), stopping at about CHUNK_BYTES of BSON.

        Returns the documents and whether the chunk is full (a limit or the byte budget ended
        it, so more may follow). Raw batches keep a collection of 15 MB documents from
        filling memory with ``snapshot_chunk_size`` of them.
        """
        docs: list[Any] = []
        size = 0
        batches = coll.find_raw_batches(query, sort=order or [("_id", 1)], limit=limit)
        try:
            for batch in batches:
                size += len(batch)
                docs.extend(bson.decode_all(batch, CODEC_OPTIONS))
                if size >= CHUNK_BYTES and len(docs) < limit:
                    return docs, True
        finally:
            batches.close()
        return docs, len(docs) >= limit

    def _next_bracket_doc(
        self, coll: Any, bracket: int, within: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        """The first document (matching ``within``) whose ``_id`` is of a type bracket after ``bracket``."""
        from pymongo import errors

        for types in _ID_BRACKETS[bracket + 1 :]:
            query: dict[str, Any] = {"$or": [{"_id": {"$type": alias}} for alias in types]}
            if within:
                query = {"$and": [dict(within), query]}
            first = coll.find(query).sort("_id", 1).limit(1)
            try:
                found: list[Any] = self._call(partial(list, first), f"copying {coll.name!r}")
            except errors.OperationFailure as exc:
                if exc.code != NOT_IMPLEMENTED:
                    raise
                # only tests/mongo_wire lacks some $type aliases; a real server knows them all
                log.debug("%s: $type %s not supported by this server, skipped", coll.name, types)
                continue
            if found:
                return dict(found[0])
        return None

    def table_copied(self, table: str, position: Position | None = None) -> Position:
        if position is None:
            position = self.current_position()
        if "cluster_time" in position:
            t, i = position["cluster_time"]
            self.copied_at[table] = (int(t), int(i))
        return position

    # -- streaming -----------------------------------------------------------
    def stream(
        self,
        start: Position,
        tables: Mapping[str, TableSchema],
        included: Callable[[str], bool],
        key_override: Callable[[str], tuple[str, ...] | None],
        skipped: Callable[[str], bool] = lambda _t: False,  # documents are decoded by the driver anyway
    ) -> Iterator[Event]:
        from pymongo import errors

        position: Position = start
        while True:
            stream = self._open(position)
            try:
                fragments: list[Mapping[str, Any]] = []
                size = 0
                while True:
                    try:
                        change, raw_size = _next(stream)
                    except errors.OperationFailure as exc:
                        lost = self._lost(exc, position)
                        if lost is not None:
                            raise lost from exc
                        if exc.code != TOO_LARGE:
                            raise
                        # An event over 16 MB on a server without $changeStreamSplitLargeEvent.
                        stream.close()
                        position = yield from self._past_large_event(position, tables, included)
                        break
                    if change is None:
                        # between the fragments of a split event the stream's token points inside
                        # it: resuming there would lose the fragments already read
                        token = None if fragments else _plain(stream.resume_token)
                        if token is not None:
                            position = {"token": token}
                        yield Heartbeat(position if token is not None else None)
                        continue
                    size += raw_size
                    split = change.get("splitEvent")
                    if split:
                        fragments.append(change)
                        if split.get("fragment") != split.get("of"):
                            continue
                        change = _join_fragments(fragments)
                        fragments = []
                    before = position
                    position = {"token": change["_id"]}
                    if change.get("operationType") == "invalidate":
                        yield Heartbeat(position)
                        break  # reopen with startAfter the invalidate (database dropped)
                    yield from self.change_events(change, before, position, tables, included, size)
                    size = 0
            finally:
                stream.close()

    def _past_large_event(
        self, position: Position, tables: Mapping[str, TableSchema], included: Callable[[str], bool]
    ) -> Generator[Event, None, Position]:
        """Read the next event without its document images, then fetch the document by ``_id``.

        The fallback for servers without ``$changeStreamSplitLargeEvent``
        (documented in docs/mongodb.md, 'Events over 16 MB'): the event's own fields are
        small, the document itself is at most 16 MB, so both fit.
        """
        slim = [{"$project": {"fullDocument": 0, "updateDescription": 0, "fullDocumentBeforeChange": 0}}]
        stream = self._open(position, slim)
        try:
            change = None
            while change is None:
                change, _size = _next(stream)
        finally:
            stream.close()
        after = {"token": change["_id"]}
        op = change.get("operationType")
        if op in ("insert", "update", "replace"):
            coll = change["ns"]["coll"]
            key = change["documentKey"]["_id"]
            doc = self._call(lambda: self.db[coll].find_one({"_id": key}), "looking up a large document")
            log.warning(
                "%s: a change event over 16 MB (document %r) could not be streamed whole; applied the "
                "document as it is now",
                coll,
                key,
            )
            if doc is None:
                change = {**change, "operationType": "delete"}
            else:
                change = {**change, "operationType": "replace", "fullDocument": doc}
        yield from self.change_events(change, position, after, tables, included)
        return after

    def change_events(
        self,
        change: Mapping[str, Any],
        before: Position,
        position: Position,
        tables: Mapping[str, TableSchema],
        included: Callable[[str], bool],
        size: int = 0,
    ) -> Iterator[Event]:
        """The events one decoded change stream event makes; ``size`` is its BSON size (0: unknown).

        :meth:`stream` calls it for every event it reads; it is public so that the conversion alone
        can be measured without a server (``scripts/bench/mongodb_to_postgres.py``).
        """
        op = change.get("operationType")
        ns = change.get("ns") or {}
        table = ns.get("coll")
        source_ts = _epoch(change.get("wallTime")) or _epoch(change.get("clusterTime"))
        if op in ("insert", "update", "replace", "delete"):
            if table is None or not included(table):
                yield Heartbeat(position, source_ts)
                return
            yield from self._row_event(op, table, change, before, position, tables, source_ts, size)
            return
        cluster_time = _ts(change.get("clusterTime"))
        if op == "drop":
            if table is not None and table in tables and not self._recopied(table, cluster_time):
                yield SchemaChange(table, SchemaOpKind.DROP_TABLE, position, "drop", source_ts=source_ts)
            else:
                yield Heartbeat(position, source_ts)
        elif op == "rename":
            yield from self._rename(change, position, tables, included, cluster_time, source_ts)
        elif op == "dropDatabase":
            for name in sorted(tables):
                if not self._recopied(name, cluster_time):
                    yield SchemaChange(
                        name, SchemaOpKind.DROP_TABLE, position, "dropDatabase", source_ts=source_ts
                    )
            yield Heartbeat(position, source_ts)
        else:  # create, createIndexes, modify, ... (expanded events): nothing to replicate
            yield Heartbeat(position, source_ts)

    def _copied_after(self, table: str, cluster_time: tuple[int, int] | None) -> bool:
        mark = self.copied_at.get(table)
        return mark is not None and cluster_time is not None and cluster_time < mark

    def _recopied(self, table: str, cluster_time: tuple[int, int] | None) -> bool:
        """Whether a drop at ``cluster_time`` is already behind us: the collection, created again
        since, was copied after it.  A copy that found the collection gone does not count."""
        return self._copied_after(table, cluster_time) and self.table_exists(table)

    def _rename(
        self,
        change: Mapping[str, Any],
        position: Position,
        tables: Mapping[str, TableSchema],
        included: Callable[[str], bool],
        cluster_time: tuple[int, int] | None,
        source_ts: float | None,
    ) -> Iterator[Event]:
        old = change["ns"]["coll"]
        to = change.get("to") or {}
        new = to.get("coll") if to.get("db") == self.database else None
        statement = f"renameCollection {old!r} -> {to.get('db')}.{to.get('coll')}"
        if self._copied_after(old, cluster_time) or (new and self._copied_after(new, cluster_time)):
            # A copy made after this rename already saw (part of) its outcome: settle by what exists
            # now, so a copy that raced the rename leaves neither a stale old table nor a missing new one.
            existing = set(self.list_tables())
            if old in tables and old not in existing:
                yield SchemaChange(old, SchemaOpKind.DROP_TABLE, position, statement, source_ts=source_ts)
            if new and new not in tables and new in existing and included(new):
                yield SchemaChange(new, SchemaOpKind.RESYNC_TABLE, position, statement, source_ts=source_ts)
            yield Heartbeat(position, source_ts)
            return
        if new and new in tables:  # dropTarget: the old target goes first
            yield SchemaChange(new, SchemaOpKind.DROP_TABLE, position, statement, source_ts=source_ts)
        if new is None or not included(new):
            if old in tables:
                yield SchemaChange(old, SchemaOpKind.DROP_TABLE, position, statement, source_ts=source_ts)
            return
        if old in tables:
            shape = tables[old]
            renamed = TableSchema(new, shape.columns, shape.key)
            self._mappers.pop(old, None)
            yield SchemaChange(
                new,
                SchemaOpKind.RENAME_TABLE,
                position,
                statement,
                schema=renamed,
                old_name=old,
                new_name=new,
                source_ts=source_ts,
            )
        else:  # renamed into the replicated set: copy it
            yield SchemaChange(new, SchemaOpKind.RESYNC_TABLE, position, statement, source_ts=source_ts)

    def _row_event(
        self,
        op: str,
        table: str,
        change: Mapping[str, Any],
        before: Position,
        position: Position,
        tables: Mapping[str, TableSchema],
        source_ts: float | None,
        size: int = 0,
    ) -> Iterator[Event]:
        mapper = self.mapper(table)
        if op == "delete":
            shape = tables.get(table)
            if shape is None:
                yield Heartbeat(position, source_ts)
                return
            try:
                key = mapper.key(shape, change["documentKey"]["_id"])
            except ValueError:
                # an _id the table's key column cannot hold was never stored: nothing to delete
                yield Heartbeat(position, source_ts)
                return
            yield RowChange(table, Op.DELETE, key, None, position, source_ts)
            return
        doc = change.get("fullDocument")
        if doc is None:
            # updateLookup found no document: it was deleted (or replaced away) after this update, and
            # that later change is further down the stream; skipping this one loses nothing.
            self.skipped_lookups += 1
            log.debug(
                "%s: update of %r whose document is gone; its deletion follows",
                table,
                change.get("documentKey"),
            )
            yield Heartbeat(position, source_ts)
            return
        shape = tables.get(table)
        if shape is None:
            # A collection not replicated yet (created after the stream's start, or just before it,
            # between listing collections and reading the cluster time): copy what it holds now,
            # then this event and the later ones apply on top. Positioned before this event.
            yield SchemaChange(
                table,
                SchemaOpKind.RESYNC_TABLE,
                before,
                "first change of a collection not replicated yet",
                source_ts=source_ts,
            )
            shape = tables.get(table)
            if shape is None:  # gone again (dropped), or excluded: its later events say so
                yield Heartbeat(position, source_ts)
                return
        wider = mapper.fit(shape, doc)
        if wider is not shape:
            # positioned *before* this event, so a crash after the DDL replays the event itself;
            # the engine records the wider shape in ``tables`` when it has evolved the table
            yield SchemaChange(
                table,
                SchemaOpKind.EVOLVE,
                before,
                _describe_change(shape, wider),
                schema=wider,
                source_ts=source_ts,
            )
            shape = wider
        row = mapper.row(shape, doc)
        kind = Op.INSERT if op == "insert" else Op.UPDATE
        yield RowChange(table, kind, None, row, position, source_ts, size)


def _rows(
    mapper: DocumentMapper, shape: TableSchema, docs: list[Any]
) -> tuple[list[dict[str, Any]], TableSchema]:
    """The rows of ``docs`` and the shape that holds them (``shape`` itself, or one widened for them)."""
    for doc in docs:
        shape = mapper.fit(shape, doc)
    return [mapper.row(shape, doc) for doc in docs], shape


def _field(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in ``doc`` (a flattened column's path goes into sub-documents)."""
    value: Any = doc
    for segment in path:
        value = value.get(segment) if isinstance(value, Mapping) else None
    return value


def _next(stream: Any) -> tuple[Any, int]:
    """The stream's next event decoded with :data:`CODEC_OPTIONS`, and its BSON size; (None, 0) if idle."""
    raw = stream.try_next()
    if raw is None:
        return None, 0
    return bson.decode(raw.raw, codec_options=CODEC_OPTIONS), len(raw.raw)


def _errmsg(exc: Any) -> str:
    """The server's own message of an OperationFailure, without pymongo's raw "full error" dump."""
    details = getattr(exc, "details", None)
    try:
        message = details.get("errmsg") if details is not None else None
    except Exception:  # noqa: BLE001 - odd details: fall back to the whole text
        message = None
    return str(message) if message else str(exc)


def _plain(token: Any) -> dict[str, Any] | None:
    """A resume token as a plain dict (the raw stream hands out RawBSONDocuments), for the state file."""
    if token is None:
        return None
    raw = getattr(token, "raw", None)
    return dict(bson.decode(raw)) if raw is not None else dict(token)


def _join_fragments(fragments: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One change event from the fragments $changeStreamSplitLargeEvent made of it."""
    joined: dict[str, Any] = {}
    for fragment in fragments:
        for key, value in fragment.items():
            if key not in ("splitEvent", "_id"):
                joined[key] = value
    joined["_id"] = fragments[-1]["_id"]
    return joined


def _describe_change(old: TableSchema, new: TableSchema) -> str:
    from warpd.connectors.mongodb.mapping import evolution

    parts = []
    for action, before, col in evolution(old, new):
        if action == "add":
            parts.append(f"add column {col.name!r} {col.type.describe()} ({col.source_type})")
        else:
            assert before is not None
            parts.append(f"widen column {col.name!r} {before.type.describe()} -> {col.type.describe()}")
    return "; ".join(parts) or "evolve"
