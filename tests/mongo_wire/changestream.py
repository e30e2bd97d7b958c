"""Change streams: ``{$changeStream: {...}}`` aggregations and their tailable cursors.

Behaviour follows the manual pages "Change Streams", "Change Events"
(https://www.mongodb.com/docs/manual/reference/change-events/), "Resume a Change Stream",
"Change Streams with Document Pre- and Post-Images", "Large Change Events" /
``$changeStreamSplitLargeEvent``, and the drivers' Change Streams spec
(mongodb/specifications, source/change-streams/change-streams.md) for what a client relies on:
``postBatchResumeToken`` on every batch, resumable errors, ``startAfter`` past an invalidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bson
import mongomock.aggregate
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from .cursors import MAX_BATCH_BYTES, Cursor
from .engine import INTERNAL_DATABASES, Engine
from .errors import CommandError
from .oplog import BEFORE_TS, HIGH_WATER_MARK, OplogEntry, ResumePoint

# BSONObjMaxInternalSize: the largest event the server can build (16 MiB + 16 KiB); past it a
# getMore fails with BSONObjectTooLarge unless the pipeline ends in $changeStreamSplitLargeEvent.
MAX_EVENT_BYTES = 16 * 1024 * 1024 + 16 * 1024

SPLIT_STAGE = "$changeStreamSplitLargeEvent"
# Stages allowed after $changeStream ("Modify Change Stream Output" in the Change Streams page).
ALLOWED_STAGES = frozenset(
    {
        "$match",
        "$project",
        "$addFields",
        "$set",
        "$unset",
        "$replaceRoot",
        "$replaceWith",
        "$redact",
        SPLIT_STAGE,
    }
)
FULL_DOCUMENT_MODES = ("default", "updateLookup", "whenAvailable", "required")
BEFORE_CHANGE_MODES = ("off", "whenAvailable", "required")
_OPTIONS = frozenset(
    {
        "fullDocument",
        "fullDocumentBeforeChange",
        "resumeAfter",
        "startAfter",
        "startAtOperationTime",
        "allChangesForCluster",
        "showExpandedEvents",
        "showSystemEvents",
    }
)
_CRUD = frozenset({"insert", "update", "replace", "delete"})
_SCAN_CHUNK = 512  # events pushed through the user's pipeline at a time
# The server rejects other stages after $changeStream with this location code.
_STAGE_NOT_PERMITTED = 31411
_CLUSTER_ONLY = (
    "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database, "
    "and with no collection name"
)


def mongomock_stages(pipeline: list[Any]) -> list[dict[str, Any]]:
    """Spell aliases mongomock lacks the way the manual defines them.

    ``$unset`` is "an alias for the $project stage that removes fields" and ``$replaceWith``
    "an alias for $replaceRoot" (their manual pages); the semantics stay mongomock's.
    """
    stages = []
    for stage in pipeline:
        if not isinstance(stage, dict) or len(stage) != 1:
            raise CommandError(40323, "A pipeline stage specification object must contain exactly one field.")
        name, spec = next(iter(stage.items()))
        if name == "$unset":
            fields = [spec] if isinstance(spec, str) else spec
            if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
                raise CommandError(31002, "$unset specification must be a string or an array of strings")
            stage = {"$project": {f: 0 for f in fields}}
        elif name == "$replaceWith":
            stage = {"$replaceRoot": {"newRoot": spec}}
        stages.append(stage)
    return stages


@dataclass(frozen=True)
class Scope:
    """What a stream watches: one collection, one database, or the whole deployment."""

    db: str | None
    coll: str | None

    @property
    def cursor_ns(self) -> str:
        if self.coll is not None:
            return f"{self.db}.{self.coll}"
        return f"{self.db or 'admin'}.$cmd.aggregate"

    def events(self, entry: OplogEntry) -> tuple[bool, bool]:
        """(reports the entry, then invalidates) for this scope, per the invalidate event page."""
        if entry.db in INTERNAL_DATABASES:
            return False, False
        if entry.op in _CRUD:
            if entry.coll is None or entry.coll.startswith("system."):
                return False, False
            return (self.db is None or self.db == entry.db) and self.coll in (None, entry.coll), False
        if entry.op == "drop":
            if self.coll is not None:
                hit = (self.db, self.coll) == (entry.db, entry.coll)
                return hit, hit
            return self.db in (None, entry.db), False
        if entry.op == "rename":
            assert entry.to is not None
            if self.coll is not None:
                hit = (self.db, self.coll) in ((entry.db, entry.coll), entry.to)
                return hit, hit
            return self.db in (None, entry.db, entry.to[0]), False
        if entry.op == "dropDatabase":
            if self.db is None:
                return True, False
            hit = self.db == entry.db
            return hit, hit
        return False, False


class ChangeStreamCursor(Cursor):
    """A tailable, awaitData cursor over the oplog for one scope and pipeline."""

    awaits_data = True

    def __init__(
        self,
        engine: Engine,
        scope: Scope,
        options: dict[str, Any],
        stages: list[dict[str, Any]],
        start: ResumePoint,
        max_await_ms: int | None,
    ):
        super().__init__(scope.cursor_ns)
        self.engine = engine
        self.scope = scope
        self.full_document = options.get("fullDocument", "default")
        self.before_change = options.get("fullDocumentBeforeChange", "off")
        self.expanded = bool(options.get("showExpandedEvents", False))
        self.split = bool(stages) and SPLIT_STAGE in stages[-1]
        self.stages = stages[:-1] if self.split else stages
        self.position = start
        self.invalidated = False
        self.max_await_ms = max_await_ms

    @property
    def exhausted(self) -> bool:
        return self.invalidated

    # -- batches ---------------------------------------------------------------------------------

    def next_batch(self, max_docs: int | None) -> tuple[list[RawBSONDocument], dict[str, str]]:
        """Events after the current position; caller holds ``engine.lock``.

        Returns the batch and its postBatchResumeToken: the last event's token, or when nothing
        was returned, the current end of the oplog, so an idle stream's resume point advances.
        """
        self.engine.oplog.check_not_overtaken(self.position)
        batch: list[RawBSONDocument] = []
        size = 0
        last_returned: ResumePoint | None = None
        at_end = False
        full = False
        while not full and not self.invalidated and (max_docs is None or len(batch) < max_docs):
            room = _SCAN_CHUNK if max_docs is None or self.stages else min(_SCAN_CHUNK, max_docs - len(batch))
            candidates = self._candidates(room)
            if not candidates:
                at_end = True
                break
            for (point, _), event in zip(candidates, self._transform(candidates), strict=True):
                pieces = [] if event is None else self._pieces(point, event)
                for piece_point, raw in pieces:
                    if (batch and size + len(raw) > MAX_BATCH_BYTES) or (
                        max_docs is not None and len(batch) >= max_docs
                    ):
                        full = True
                        break
                    batch.append(RawBSONDocument(raw))
                    size += len(raw)
                    self.position = last_returned = piece_point
                if full:
                    break
                # Consumed whole (returned, every fragment returned, or dropped by $match): a
                # whole-event position sorts before its fragments, so this also ends a split.
                self.position = point
                if point.invalidate:
                    self.invalidated = True
                    break
        if last_returned is not None:
            return batch, last_returned.token()
        end = ResumePoint.at(self.engine.oplog.latest, HIGH_WATER_MARK)
        if at_end and end > self.position:
            self.position = end
        return batch, self.position.token()

    def _candidates(self, limit: int) -> list[tuple[ResumePoint, OplogEntry]]:
        """Up to ``limit`` events after ``position`` that this scope reports, in order."""
        oplog = self.engine.oplog
        after = self.position.whole_event()
        index = oplog.first_index_at_or_after(after)
        points: list[tuple[ResumePoint, OplogEntry]] = []
        while index < len(oplog) and len(points) < limit:
            entry = oplog.entry(index)
            index += 1
            reported, invalidates = self.scope.events(entry)
            if not reported:
                continue
            event_point = entry.point
            for point in (
                (event_point, ResumePoint.at(entry.ts, invalidate=1)) if invalidates else (event_point,)
            ):
                if point > after or (self.position.fragment and point == after):
                    points.append((point, entry))
            if invalidates and points and points[-1][0].invalidate:
                break  # nothing after an invalidate reaches this stream
        return points

    def _transform(self, candidates: list[tuple[ResumePoint, OplogEntry]]) -> list[dict[str, Any] | None]:
        """Build each event and run the user's stages over them; None where $match dropped one."""
        events = [self._build(point, entry) for point, entry in candidates]
        if not self.stages:
            return list(events)
        tokens = {event["_id"]["_data"]: i for i, event in enumerate(events)}
        decoded = [bson.decode(bson.encode(event)) for event in events]
        try:
            database = self.engine.client[self.scope.db or "admin"]
            results = list(mongomock.aggregate.process_pipeline(decoded, database, self.stages, None))
        except NotImplementedError as exc:
            raise CommandError(238, f"not supported by the test server: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - mongomock reports user errors many ways
            raise CommandError(getattr(exc, "code", None) or 2, str(exc)) from None
        out: list[dict[str, Any] | None] = [None] * len(candidates)
        for result in results:
            token = result.get("_id") if isinstance(result, dict) else None
            index = tokens.get(token.get("_data")) if isinstance(token, dict) and len(token) == 1 else None
            if index is None:
                raise CommandError(
                    280,
                    "Encountered an event whose _id field, which contains the resume token, was modified by "
                    "the pipeline. Modifying the _id field of an event makes it impossible to resume the "
                    "stream from that point. Only transformations that retain the unmodified _id field are "
                    "allowed.",
                )
            out[index] = result
        return out

    def _pieces(self, point: ResumePoint, event: dict[str, Any]) -> list[tuple[ResumePoint, bytes]]:
        """The event as BSON, split into fragments when it is too large and the stage allows."""
        raw = bson.encode(event)
        resuming_inside = bool(self.position.fragment) and point == self.position.whole_event()
        if len(raw) <= MAX_EVENT_BYTES:
            if resuming_inside:
                raise CommandError(
                    280,
                    "Attempted to resume from a split event, but the resumed stream produced a different "
                    "split. Ensure that the pipeline used to resume is the same as the original",
                )
            return [(point, raw)]
        if not self.split:
            raise CommandError(
                10334,
                f"BSONObj size: {len(raw)} (0x{len(raw):X}) is invalid. Size must be between 0 and "
                f"{MAX_EVENT_BYTES}(16MB) First element: _id: {event.get('_id')!r}",
            )
        fragments = split_event(event, point)
        skip = self.position.fragment if resuming_inside else 0
        return fragments[skip:]

    # -- events ----------------------------------------------------------------------------------

    def _build(self, point: ResumePoint, entry: OplogEntry) -> dict[str, Any]:
        event: dict[str, Any] = {
            "_id": point.token(),
            "operationType": "invalidate" if point.invalidate else entry.op,
            "clusterTime": entry.ts,
            "wallTime": entry.wall,
        }
        if point.invalidate:
            return event
        ns: dict[str, Any] = {"db": entry.db} if entry.coll is None else {"db": entry.db, "coll": entry.coll}
        if self.expanded and entry.uuid is not None:
            event["collectionUUID"] = entry.uuid
        op = entry.op
        if op in ("insert", "replace"):
            event["fullDocument"] = RawBSONDocument(entry.full_document or b"\x05\x00\x00\x00\x00")
        event["ns"] = ns
        if op == "rename":
            assert entry.to is not None
            event["to"] = {"db": entry.to[0], "coll": entry.to[1]}
        if op in _CRUD:
            event["documentKey"] = entry.document_key
        if op == "update":
            event["updateDescription"] = entry.update_description
            if self.full_document != "default":
                event["fullDocument"] = self._post_image(entry, event)
        if op in ("update", "replace", "delete") and self.before_change != "off":
            event["fullDocumentBeforeChange"] = self._pre_image(entry, event)
        return event

    def _post_image(self, entry: OplogEntry, event: dict[str, Any]) -> RawBSONDocument | None:
        if self.full_document == "updateLookup":
            # Looked up now, not at write time: null once the document is gone, as on mongod.
            assert entry.coll is not None and entry.document_key is not None
            current = self.engine.document(entry.db, entry.coll, entry.document_key["_id"])
            return None if current is None else RawBSONDocument(bson.encode(current))
        if entry.post_image is None:
            if self.full_document == "required":
                raise CommandError(
                    47,
                    "Change stream was configured to require a post-image for all update events, but the "
                    f"post-image was not found for event: {_event_ref(event)}",
                )
            return None
        return RawBSONDocument(entry.post_image)

    def _pre_image(self, entry: OplogEntry, event: dict[str, Any]) -> RawBSONDocument | None:
        if entry.pre_image is None:
            if self.before_change == "required":
                raise CommandError(
                    47,
                    "Change stream was configured to require a pre-image for all update, delete and replace "
                    f"events, but the pre-image was not found for event: {_event_ref(event)}",
                )
            return None
        return RawBSONDocument(entry.pre_image)


def _event_ref(event: dict[str, Any]) -> str:
    return f"{{_id: {event['_id']!r}, ns: {event.get('ns')!r}, documentKey: {event.get('documentKey')!r}}}"


def split_event(event: dict[str, Any], point: ResumePoint) -> list[tuple[ResumePoint, bytes]]:
    """Split an oversized event into fragments ("Large Change Events" / $changeStreamSplitLargeEvent).

    Top-level fields only, smallest first so the first fragment carries as much of the event's
    context as possible; every fragment has its own resume token and ``splitEvent: {fragment, of}``.
    """
    sized = sorted(
        ((len(bson.encode({key: value})) - 5, key, value) for key, value in event.items() if key != "_id"),
        key=lambda item: (item[0], item[1]),
    )
    token_size = len(bson.encode(point.token()))
    limit = MAX_EVENT_BYTES - token_size
    fragments: list[dict[str, Any]] = []
    i = 0
    while i < len(sized):
        number = len(fragments) + 1
        fragment: dict[str, Any] = {
            "_id": _fragment_point(point, number).token(),
            "splitEvent": {"fragment": number, "of": 0},
        }
        size = len(bson.encode(fragment))
        while True:
            field_size, key, value = sized[i]
            fragment[key] = value
            size += field_size
            i += 1
            if i >= len(sized) or size + sized[i][0] > limit:
                break
        if size > limit:
            raise CommandError(
                7182500,
                f"Splitting change event failed: fragment size {size} is greater than maximum allowed "
                f"fragment size {limit}",
            )
        fragments.append(fragment)
    for fragment in fragments:
        fragment["splitEvent"]["of"] = len(fragments)
    return [(_fragment_point(point, n), bson.encode(f)) for n, f in enumerate(fragments, start=1)]


def _fragment_point(point: ResumePoint, number: int) -> ResumePoint:
    return ResumePoint(point.secs, point.inc, point.kind, point.op_index, point.invalidate, number)


def open_change_stream(
    engine: Engine,
    db: str,
    target: Any,
    pipeline: list[Any],
    max_await_ms: int | None,
) -> ChangeStreamCursor:
    """Validate an aggregate whose first stage is $changeStream and position a cursor.

    Caller holds ``engine.lock``.
    """
    options = pipeline[0]["$changeStream"]
    if not isinstance(options, dict):
        raise CommandError(14, "$changeStream stage expects a document as its argument")
    unknown = set(options) - _OPTIONS
    if unknown:
        raise CommandError(40415, f"BSON field '$changeStream.{sorted(unknown)[0]}' is an unknown field.")
    scope = _scope(db, target, bool(options.get("allChangesForCluster", False)))
    full_document = options.get("fullDocument", "default")
    if full_document not in FULL_DOCUMENT_MODES:
        raise CommandError(2, f"'{full_document}' is not a valid value for $changeStream.fullDocument")
    before_change = options.get("fullDocumentBeforeChange", "off")
    if before_change not in BEFORE_CHANGE_MODES:
        raise CommandError(
            2, f"'{before_change}' is not a valid value for $changeStream.fullDocumentBeforeChange"
        )

    stages = mongomock_stages(pipeline[1:])
    for position, stage in enumerate(stages):
        name = next(iter(stage))
        if name == "$changeStream":
            raise CommandError(40602, "$changeStream is only valid as the first stage in a pipeline.")
        if name not in ALLOWED_STAGES:
            raise CommandError(_STAGE_NOT_PERMITTED, f"{name} is not permitted in a $changeStream pipeline")
        if name == SPLIT_STAGE:
            if stage[name] != {}:
                raise CommandError(7182800, "$changeStreamSplitLargeEvent spec should be an empty object")
            if position != len(stages) - 1:
                raise CommandError(
                    7182802, "$changeStreamSplitLargeEvent must be the last stage in the pipeline"
                )

    start = _start_point(engine, options)
    split = bool(stages) and SPLIT_STAGE in stages[-1]
    if start.fragment and not split:
        raise CommandError(
            280,
            "Attempting to resume from a split event, but the $changeStream pipeline does not contain "
            "$changeStreamSplitLargeEvent",
        )
    return ChangeStreamCursor(engine, scope, options, stages, start, max_await_ms)


def _scope(db: str, target: Any, all_changes: bool) -> Scope:
    if isinstance(target, str):
        if db in INTERNAL_DATABASES:
            raise CommandError(73, f"$changeStream may not be opened on the internal {db} database")
        if all_changes:
            raise CommandError(31123, _CLUSTER_ONLY)
        return Scope(db, target)
    if all_changes:
        if db != "admin":
            raise CommandError(31123, _CLUSTER_ONLY)
        return Scope(None, None)
    if db in INTERNAL_DATABASES:
        raise CommandError(73, f"$changeStream may not be opened on the internal {db} database")
    return Scope(db, None)


def _start_point(engine: Engine, options: dict[str, Any]) -> ResumePoint:
    given = [name for name in ("resumeAfter", "startAfter", "startAtOperationTime") if name in options]
    if len(given) > 1:
        raise CommandError(40674, "Only one type of resume option is allowed, but multiple were found.")
    oplog = engine.oplog
    if not given:
        return ResumePoint.at(oplog.latest, HIGH_WATER_MARK)
    name = given[0]
    if name == "startAtOperationTime":
        ts = options[name]
        if not isinstance(ts, Timestamp):
            raise CommandError(
                14,
                "BSON field '$changeStream.startAtOperationTime' is the wrong type, expected type 'timestamp'",
            )
        point = ResumePoint.at(ts, BEFORE_TS)
    else:
        point = ResumePoint.from_token(options[name], name)
        if name == "resumeAfter" and point.invalidate:
            raise CommandError(
                260,
                "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate "
                "notification.",
            )
    oplog.check_available(point)
    return point
