"""Server-side cursors and the batching rules of find/aggregate/getMore.

"Cursor Batches" in the manual: a find or aggregate returns 101 documents in its first batch
unless batchSize says otherwise; getMore has no document count limit; no batch holds more than
16 MiB of documents, except that a single larger document is always returned on its own.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import bson
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

MAX_BATCH_BYTES = 16 * 1024 * 1024
DEFAULT_FIRST_BATCH = 101
IDLE_TIMEOUT_S = 600.0  # cursorTimeoutMillis default: 10 minutes


class Cursor:
    """Base class: an id, a namespace and a lock so two getMores cannot interleave."""

    awaits_data = False  # tailable + awaitData: getMore waits for new results

    def __init__(self, ns: str):
        self.id = 0
        self.ns = ns
        self.busy = threading.Lock()
        self.last_used = time.monotonic()

    @property
    def exhausted(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the cursor holds; called when it is killed or reaped."""


class ListCursor(Cursor):
    """A cursor over results computed up front (find, aggregate, listCollections, ...)."""

    def __init__(self, ns: str, documents: list[dict[str, Any]]):
        super().__init__(ns)
        self._documents: Iterator[dict[str, Any]] = iter(documents)
        self._held: bytes | None = None
        self._done = False

    @property
    def exhausted(self) -> bool:
        return self._done

    def take(self, max_docs: int | None) -> list[RawBSONDocument]:
        """The next batch: at most ``max_docs`` documents and at most 16 MiB of them."""
        batch: list[RawBSONDocument] = []
        size = 0
        while max_docs is None or len(batch) < max_docs:
            raw = self._next_raw()
            if raw is None:
                self._done = True
                break
            if batch and size + len(raw) > MAX_BATCH_BYTES:
                self._held = raw
                break
            batch.append(RawBSONDocument(raw))
            size += len(raw)
        if not self._done and self._held is None and self._peek_end():
            self._done = True
        return batch

    def _next_raw(self) -> bytes | None:
        if self._held is not None:
            raw, self._held = self._held, None
            return raw
        document = next(self._documents, None)
        return None if document is None else bson.encode(document)

    def _peek_end(self) -> bool:
        # Close the cursor in the same reply that hands out the last document, like mongod.
        raw = self._next_raw()
        if raw is None:
            return True
        self._held = raw
        return False


class CursorRegistry:
    """Open cursors by id; thread-safe."""

    def __init__(self) -> None:
        self._cursors: dict[int, Cursor] = {}
        self._lock = threading.Lock()

    def register(self, cursor: Cursor) -> Int64:
        with self._lock:
            self._reap_idle()
            while True:
                cursor_id = random.getrandbits(62) + 1
                if cursor_id not in self._cursors:
                    break
            cursor.id = cursor_id
            self._cursors[cursor_id] = cursor
        return Int64(cursor_id)

    def get(self, cursor_id: int) -> Cursor | None:
        with self._lock:
            cursor = self._cursors.get(cursor_id)
            if cursor is not None:
                cursor.last_used = time.monotonic()
            return cursor

    def is_change_stream(self, cursor_id: Any) -> bool:
        with self._lock:
            cursor = self._cursors.get(cursor_id) if isinstance(cursor_id, int) else None
            return cursor is not None and cursor.awaits_data

    def remove(self, cursor_id: int) -> bool:
        with self._lock:
            cursor = self._cursors.pop(cursor_id, None)
        if cursor is None:
            return False
        cursor.close()
        return True

    def clear(self) -> None:
        with self._lock:
            cursors, self._cursors = list(self._cursors.values()), {}
        for cursor in cursors:
            cursor.close()

    def _reap_idle(self) -> None:
        deadline = time.monotonic() - IDLE_TIMEOUT_S
        for cursor_id in [
            i for i, c in self._cursors.items() if c.last_used < deadline and not c.busy.locked()
        ]:
            self._cursors.pop(cursor_id).close()


def cursor_reply(cursor_id: int, ns: str, batch: list[Any], first: bool, **extra: Any) -> dict[str, Any]:
    """The ``{cursor: {firstBatch|nextBatch, id, ns}, ok: 1}`` reply shape."""
    body: dict[str, Any] = {"firstBatch" if first else "nextBatch": batch}
    body.update(extra)
    body["id"] = Int64(cursor_id)
    body["ns"] = ns
    return {"cursor": body, "ok": 1.0}
