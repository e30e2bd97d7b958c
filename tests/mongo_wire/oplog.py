"""The oplog: an ordered, trimmable history of writes, and the resume tokens that point into it.

A real replica set keeps ``local.oplog.rs`` and derives change events from it; this keeps one
entry per logical write (per document for CRUD, one per drop/rename/dropDatabase) with what a
change stream needs to build its events.  Every entry gets its own cluster time, as separate
oplog entries do on a real primary outside transactions.
"""

from __future__ import annotations

import bisect
import datetime
import time
from dataclasses import dataclass
from typing import Any

from bson.timestamp import Timestamp

from .errors import CommandError

# What a resume point sits on at a given cluster time.  The order matters: a startAtOperationTime
# point precedes every event at its timestamp, a high-water mark follows all of them.
BEFORE_TS = 0
EVENT = 1
HIGH_WATER_MARK = 2

_TOKEN_VERSION = 1
_TOKEN_HEX_LEN = 2 * (1 + 4 + 4 + 1 + 4 + 1 + 2)


@dataclass(frozen=True, order=True)
class ResumePoint:
    """A position in the event order; compares the way the resume tokens it encodes sort.

    The real server's token is a KeyString of (clusterTime, version, tokenType, txnOpIndex,
    fromInvalidate, uuid, eventIdentifier, fragmentNum) ("Resume Tokens" in the Change Events
    manual page).  This keeps the fields that order events on one node and hex-encodes them
    big-endian, so the ``_data`` strings sort in oplog order too.
    """

    secs: int
    inc: int
    kind: int = EVENT
    op_index: int = 0
    invalidate: int = 0
    fragment: int = 0  # 0 = a whole event; n = the n-th fragment of a split event (1-based)

    @classmethod
    def at(cls, ts: Timestamp, kind: int = EVENT, **fields: int) -> ResumePoint:
        return cls(ts.time, ts.inc, kind, **fields)

    @property
    def ts(self) -> Timestamp:
        return Timestamp(self.secs, self.inc)

    @property
    def ts_key(self) -> tuple[int, int]:
        return (self.secs, self.inc)

    def whole_event(self) -> ResumePoint:
        return ResumePoint(self.secs, self.inc, self.kind, self.op_index, self.invalidate, 0)

    def token(self) -> dict[str, str]:
        data = (
            _TOKEN_VERSION.to_bytes(1, "big")
            + self.secs.to_bytes(4, "big")
            + self.inc.to_bytes(4, "big")
            + self.kind.to_bytes(1, "big")
            + self.op_index.to_bytes(4, "big")
            + self.invalidate.to_bytes(1, "big")
            + self.fragment.to_bytes(2, "big")
        )
        return {"_data": data.hex().upper()}

    @classmethod
    def from_token(cls, token: Any, option: str) -> ResumePoint:
        """Decode a token a client sent back; errors match the server's ResumeToken parser."""
        if not isinstance(token, dict) or not isinstance(token.get("_data"), str):
            raise CommandError(2, f"{option} must be a resume token document with a string '_data' field")
        data = token["_data"]
        try:
            raw = bytes.fromhex(data)
        except ValueError:
            raise CommandError(9, "resume token string was not a valid hex string") from None
        if len(data) != _TOKEN_HEX_LEN or raw[0] != _TOKEN_VERSION or raw[9] not in (0, 1, 2):
            raise CommandError(2, f"invalid resume token: {data!r} was not issued by this server")
        return cls(
            secs=int.from_bytes(raw[1:5], "big"),
            inc=int.from_bytes(raw[5:9], "big"),
            kind=raw[9],
            op_index=int.from_bytes(raw[10:14], "big"),
            invalidate=raw[14],
            fragment=int.from_bytes(raw[15:17], "big"),
        )


class OplogEntry:
    """One write, with the images its change events may carry (BSON bytes, immutable)."""

    __slots__ = (
        "ts",
        "wall",
        "op",
        "db",
        "coll",
        "uuid",
        "document_key",
        "full_document",
        "update_description",
        "pre_image",
        "post_image",
        "to",
    )

    def __init__(self, ts: Timestamp, wall: datetime.datetime, op: str, db: str, coll: str | None, **kw: Any):
        self.ts = ts
        self.wall = wall
        self.op = op  # insert, update, replace, delete, drop, rename, dropDatabase
        self.db = db
        self.coll = coll
        self.uuid = kw.get("uuid")
        self.document_key: dict[str, Any] | None = kw.get("document_key")
        self.full_document: bytes | None = kw.get("full_document")
        self.update_description: dict[str, Any] | None = kw.get("update_description")
        self.pre_image: bytes | None = kw.get("pre_image")
        self.post_image: bytes | None = kw.get("post_image")
        self.to: tuple[str, str] | None = kw.get("to")

    @property
    def point(self) -> ResumePoint:
        return ResumePoint(self.ts.time, self.ts.inc)


class Oplog:
    """Entries in cluster-time order, indexed so a resume is a bisect, not a scan.

    Not thread-safe: the server calls it with its one data lock held.
    """

    def __init__(self) -> None:
        self._entries: list[OplogEntry] = []
        self._keys: list[tuple[int, int]] = []
        # Resume points before this cluster time are gone ("ChangeStreamHistoryLost").
        self._history_start: tuple[int, int] = (0, 0)
        self._last: tuple[int, int] = (0, 0)
        self.latest_wall = datetime.datetime(1970, 1, 1)
        self.tick()  # a new primary writes a no-op entry; this gives the clock a first value
        # ... and its oplog starts there: an earlier startAtOperationTime is not in it (error 286),
        # as on a real replica set whose oldest entry is its initiation
        self._history_start = self._last
        self._last_dropped: tuple[int, int] = (0, 0)

    def tick(self) -> tuple[Timestamp, datetime.datetime]:
        """Allocate the next cluster time; strictly increasing even if the wall clock is not."""
        now = time.time()
        secs, inc = self._last
        if int(now) > secs:
            secs, inc = int(now), 1
        else:
            inc += 1
        self._last = (secs, inc)
        wall = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
        self.latest_wall = wall.replace(microsecond=wall.microsecond // 1000 * 1000)  # BSON dates are ms
        return Timestamp(secs, inc), self.latest_wall

    @property
    def latest(self) -> Timestamp:
        """The newest cluster time handed out (the current end of the oplog)."""
        return Timestamp(*self._last)

    def append(self, entry: OplogEntry) -> None:
        self._entries.append(entry)
        self._keys.append((entry.ts.time, entry.ts.inc))

    def __len__(self) -> int:
        return len(self._entries)

    def first_index_at_or_after(self, point: ResumePoint) -> int:
        """Index of the first entry whose cluster time is not before ``point``'s."""
        return bisect.bisect_left(self._keys, point.ts_key)

    def entry(self, index: int) -> OplogEntry:
        return self._entries[index]

    def check_available(self, point: ResumePoint) -> None:
        """Fail as the server does when the history needed to resume has been truncated."""
        if point.ts_key < self._history_start:
            raise CommandError(
                286,
                "Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
            )

    def check_not_overtaken(self, point: ResumePoint) -> None:
        """Fail a live change stream whose next entries were dropped before it read them.

        A real server's tailing oplog cursor loses its place when the capped oplog rolls over it
        (the getMore fails with ChangeStreamHistoryLost); a cursor that has read everything
        dropped is unaffected.
        """
        if point.ts_key < self._last_dropped:
            raise CommandError(
                286,
                "Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
            )

    def trim(self, keep: int) -> None:
        """Drop all but the newest ``keep`` entries, as a capped oplog rolling over would."""
        drop = max(0, len(self._entries) - max(0, keep))
        if drop == 0:
            return
        last_dropped = self._keys[drop - 1]
        self._last_dropped = max(self._last_dropped, last_dropped)
        del self._entries[:drop]
        del self._keys[:drop]
        if self._keys:
            self._history_start = self._keys[0]
        else:
            self._history_start = (last_dropped[0], last_dropped[1] + 1)
