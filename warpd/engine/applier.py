"""Applying final row states to one destination table with N parallel workers.

Rows are partitioned by key, so every change to one row goes to the same
worker in source order; each worker owns its own destination connection.
A batch is applied when every worker has committed its part.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from warpd import metrics
from warpd.config import RetryPolicy, TableSettings
from warpd.connectors.base import (
    Capabilities,
    Destination,
    EncodedChunk,
    Fence,
    Position,
    Row,
    SnapshotChunk,
    TablePlan,
)
from warpd.engine.batch import FinalState
from warpd.engine.retry import call_with_retry
from warpd.redact import redact

log = logging.getLogger(__name__)

#: ``on_dead_letter(table, op, row, reason, position)``: a row the destination cannot take
#: (the state store's add_dead_letter, bound to the schema, in the engine)
DeadLetterSink = Callable[[str, str, dict[str, Any], str, Position | None], None]


class DestinationPool:
    """Destination connections, one per thread that asks.

    A table is re-tracked (a new :class:`TableApplier`, new worker threads) at
    every DDL, widening and resync; a connection whose thread has ended is
    handed to the next thread that asks, so the number of connections stays
    at the most threads ever writing at once, however often that happens.
    """

    def __init__(self, factory: Callable[[], Destination], capabilities: Capabilities | None = None):
        self._factory = factory
        self.capabilities = capabilities
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, Destination]] = []  # (owner, connection)
        self._lock = threading.Lock()

    def get(self) -> Destination:
        dest: Destination | None = getattr(self._local, "dest", None)
        if dest is None:
            me = threading.current_thread()
            with self._lock:
                for i, (owner, free) in enumerate(self._all):
                    if not owner.is_alive():  # its thread ended, and with it every use of it
                        self._all[i] = (me, free)
                        dest = free
                        break
            if dest is None:
                dest = self._factory()
                with self._lock:
                    self._all.append((me, dest))
            self._local.dest = dest
        return dest

    def close(self) -> None:
        with self._lock:
            for _owner, dest in self._all:
                dest.close()
            self._all.clear()


#: row states per worker transaction below which a batch is not split further (TableApplier.parts_for)
ROWS_PER_PART = 256


FAULT_AFTER_PART_COMMIT = "WARP_FAULT_AFTER_PART_COMMIT"
"""Fault injection for tests (DEVELOPMENT.md): exit 137 once this many parts of streamed (fenced)
batches have committed, so a batch is left committed in part.  While it is set, the parts of a batch
are written one at a time, so the parts after that one have surely not committed."""
_FAULT_AFTER_PARTS = int(os.environ.get(FAULT_AFTER_PART_COMMIT) or 0)
_parts_committed = itertools.count(1)
_one_part_at_a_time = threading.Lock()


def part_of(key: Hashable, parts: int) -> int:
    """The part (of ``parts``) a row with ``key`` is written in: the same in every process (unlike
    ``hash()``, salted per process), so a batch rebuilt after a crash splits as it did before."""
    if parts <= 1:
        return 0
    digest = hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % parts


def write_records(
    dest: Destination,
    plan: TablePlan,
    items: Sequence[tuple[FinalState, Any]],
    policy: RetryPolicy,
    should_stop: Callable[[], bool],
    reject: Callable[[FinalState, str, Any], None],
    *,
    direct: bool = False,
    keep_existing: bool = False,
    layout: Any = None,
    on_retry: Callable[[BaseException], None] | None = None,
    fence: Fence | None = None,
) -> None:
    """Write ``items`` (state, record) in one transaction, retrying what is transient.

    ``fence`` (items ``fence.rows_done`` on of their part) is written in each transaction, its
    ``rows_done`` moved to the end of the items that transaction commits.

    When the destination refuses the data, the items are split in halves
    until each refused row is alone, and ``reject(state, reason, record)``
    takes it (to the dead letters); every other row is written.  A
    ``direct`` write that meets keys already there (a snapshot chunk
    committed before a crash but not recorded) is merged instead.
    """
    upserts = [rec for st, rec in items if not st.deleted]
    deletes = [rec for st, rec in items if st.deleted]

    def retried(exc: BaseException) -> None:
        dest.reset()
        if on_retry is not None:
            on_retry(exc)

    done = dataclasses.replace(fence, rows_done=fence.rows_done + len(items)) if fence is not None else None
    fenced: dict[str, Any] = {"fence": done} if done is not None else {}
    try:
        call_with_retry(
            lambda: dest.write(
                plan, upserts, deletes, direct=direct, keep_existing=keep_existing, layout=layout, **fenced
            ),
            policy,
            is_transient=dest.is_transient,
            what=f"writing {len(items)} rows to {plan.where}",
            should_stop=should_stop,
            on_retry=retried,
        )
    except Exception as exc:
        again: dict[str, Any] = dict(keep_existing=keep_existing, layout=layout, on_retry=on_retry)
        if dest.is_duplicate(exc) and not direct:
            raise  # a unique index of the destination's own, not a row of the source at fault
        if direct and (dest.is_duplicate(exc) or dest.rejects_rows(exc)):
            # merge instead (and, for a refused row, find it one half at a time)
            write_records(dest, plan, items, policy, should_stop, reject, fence=fence, **again)
        elif not dest.rejects_rows(exc):
            raise
        elif len(items) == 1:
            reason = f"rejected by {dest.capabilities.name}: {redact(str(exc).strip())}"
            reject(items[0][0], reason, items[0][1])
            if done is not None:  # the refused row is done with too: a crash now does not refuse it twice
                call_with_retry(
                    lambda: dest.write(plan, [], [], fence=done),  # type: ignore[call-arg]
                    policy,
                    is_transient=dest.is_transient,
                    what=f"recording progress in {plan.where}",
                    should_stop=should_stop,
                    on_retry=retried,
                )
        else:
            mid = len(items) // 2
            second = (
                dataclasses.replace(fence, rows_done=fence.rows_done + mid) if fence is not None else None
            )
            write_records(dest, plan, items[:mid], policy, should_stop, reject, fence=fence, **again)
            write_records(dest, plan, items[mid:], policy, should_stop, reject, fence=second, **again)


def dead_letter_row(dest: Destination, plan: TablePlan, row: Row, record: Any, layout: Any) -> dict[str, Any]:
    """``row`` as stored with a dead letter: printable values, completed from the record when the
    source encoded some columns itself (they are only in the record)."""
    out = {k: _printable(v) for k, v in row.items()}
    if record is not None:
        for name, value in dest.record_values(plan, record, layout).items():
            out.setdefault(name, value)
    return out


class TableApplier:
    """Writes batches of :class:`FinalState` into one table."""

    def __init__(
        self,
        schema_name: str,
        plan: TablePlan,
        settings: TableSettings,
        pool: DestinationPool,
        on_dead_letter: DeadLetterSink,
        should_stop: Callable[[], bool],
    ):
        self.schema_name = schema_name
        self.plan = plan
        self.settings = settings
        self.pool = pool
        self.on_dead_letter = on_dead_letter
        self.should_stop = should_stop
        self.workers = max(1, settings.max_parallel_streams)
        cap = pool.capabilities.writers_per_table if pool.capabilities is not None else 0
        if cap:
            self.workers = min(self.workers, cap)  # e.g. BigQuery: DML jobs on one table queue up
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix=f"apply-{plan.source.name[:20]}"
        )
        self.dead_letters = 0
        # the writer's epoch, checked in each snapshot chunk's transaction (Fence.guard; a fenced
        # destination): a process another one took the schema over from copies nothing more
        self.guard: Fence | None = None

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def parts_for(self, rows: int) -> int:
        """How many parts (worker transactions, each on its own connection) a batch of ``rows`` row
        states is split into: one per :data:`ROWS_PER_PART` begun, at most ``workers``.  A small batch
        gains nothing from parallel transactions, and every worker thread keeps a connection open:
        a schema of many tables with a few changes each would otherwise hold ``workers`` connections
        per table."""
        return max(1, min(self.workers, -(-rows // ROWS_PER_PART)))

    def key_of(self, row: dict[str, Any]) -> Hashable:
        return self.plan.key_of(row)

    # -- streaming batches ---------------------------------------------------
    def apply(
        self,
        states: Iterable[FinalState],
        fence: Fence | None = None,
        done: Mapping[int, int] | None = None,
    ) -> int:
        """Apply final states (in parallel by key); return how many were written.

        With ``fence`` (its ``parts``: how many parts the rows are split into), each part's
        transactions also write the part's fence row; ``done`` (part -> items) skips the first items
        of a part that a crash interrupted after they were committed (the batch is being rebuilt).
        Without it, they check the writer's epoch (:attr:`guard`) when there is one.
        """
        started = time.perf_counter()
        states = list(states)
        count = fence.parts if fence is not None else self.parts_for(len(states))
        parts: list[list[FinalState]] = [[] for _ in range(count)]
        for st in states:
            parts[part_of(self.key_of(st.row), count)].append(st)
        done = done or {}
        # each worker logs with the caller's correlation ids (schema, table, batch)
        jobs = [
            self._executor.submit(
                contextvars.copy_context().run,
                self._apply_part,
                p,
                dataclasses.replace(fence, part=i) if fence is not None else self.guard,
                done.get(i, 0),
            )
            for i, p in enumerate(parts)
            if p
        ]
        written = 0
        errors = []
        for job in jobs:
            try:
                written += job.result()
            except BaseException as exc:  # noqa: BLE001 - collected, re-raised below
                errors.append(exc)
        if errors:
            raise errors[0]
        elapsed = time.perf_counter() - started
        metrics.observe_batch(self.schema_name, self.plan.source.name, elapsed)
        log.debug("applied %d row states to %s in %.1f ms", written, self.plan.dest_table, elapsed * 1000)
        return written

    def _encode(self, states: list[FinalState]) -> list[tuple[FinalState, Any]]:
        dest = self.pool.get()
        out = []
        for st in states:
            try:
                if st.order is None:
                    out.append((st, dest.encode(self.plan, st.row, st.op, st.source_ts)))
                else:  # only for a destination with ordered_writes (runner.py)
                    out.append((st, dest.encode(self.plan, st.row, st.op, st.source_ts, order=st.order)))  # type: ignore[call-arg]
            except (ValueError, TypeError, OverflowError) as exc:
                self._dead_letter(st, f"value cannot be encoded for {dest.capabilities.name}: {exc}")
        return out

    def _apply_part(self, states: list[FinalState], fence: Fence | None = None, done: int = 0) -> int:
        encoded = self._encode(states)[done:]
        if not encoded:
            return 0
        fence = dataclasses.replace(fence, rows_done=done) if fence is not None else None
        if not (_FAULT_AFTER_PARTS and fence is not None):
            self._write(encoded, fence=fence)
            return len(encoded)
        with _one_part_at_a_time:
            self._write(encoded, fence=fence)
            if next(_parts_committed) >= _FAULT_AFTER_PARTS:
                log.warning("%s: dying after a part of a streamed batch committed", FAULT_AFTER_PART_COMMIT)
                logging.shutdown()
                os._exit(137)  # the batch's other parts have not begun, or not committed
        return len(encoded)

    def _write(
        self,
        items: list[tuple[FinalState, Any]],
        direct: bool = False,
        layout: Any = None,
        fence: Fence | None = None,
    ) -> None:
        dest = self.pool.get()
        write_records(
            dest,
            self.plan,
            items,
            self.settings.retry,
            self.should_stop,
            lambda st, reason, record: self._dead_letter(st, reason, record, layout),
            direct=direct,
            layout=layout,
            on_retry=lambda exc: metrics.error(self.schema_name, type(exc).__name__),
            fence=fence,
        )

    def _dead_letter(self, st: FinalState, reason: str, record: Any = None, layout: Any = None) -> None:
        self.dead_letters += 1
        metrics.dead_letter(self.schema_name, self.plan.source.name)
        log.error("table %r: row sent to the dead-letter table: %s", self.plan.source.name, reason)
        row = dead_letter_row(self.pool.get(), self.plan, st.row, record, layout)
        self.on_dead_letter(self.plan.source.name, st.op, row, reason, st.position)

    # -- snapshot chunks -----------------------------------------------------
    def copy_snapshot(self, chunk: SnapshotChunk) -> int:
        """Insert one snapshot chunk straight into the table (merging if some rows are there already)."""
        dest = self.pool.get()
        encoded = dest.encode_chunk(self.plan, chunk)
        for row, reason in encoded.failed:
            self._dead_letter(FinalState(row, False, "snapshot", None, None), reason)
        if not encoded.records:
            return 0
        # The common case first: the whole chunk in one direct write, with no per-row bookkeeping.
        records = [rec for _row, rec in encoded.records]

        def retried(exc: BaseException) -> None:
            dest.reset()
            metrics.error(self.schema_name, type(exc).__name__)

        try:
            guarded: dict[str, Any] = {"fence": self.guard} if self.guard is not None else {}
            call_with_retry(
                lambda: dest.write(self.plan, records, direct=True, layout=encoded.layout, **guarded),
                self.settings.retry,
                is_transient=dest.is_transient,
                what=f"writing {len(records)} rows to {self.plan.where}",
                should_stop=self.should_stop,
                on_retry=retried,
            )
            return len(records)
        except Exception as exc:
            if not (dest.is_duplicate(exc) or dest.rejects_rows(exc)):
                raise
        # Some keys were there already (a chunk committed before a crash) or some row was refused:
        # merge, splitting down to the refused rows (write_records).
        return self._merge(encoded)

    def merge_chunk(self, chunk: SnapshotChunk) -> int:
        """Upsert one chunk's rows (a batch-mode run: some keys are there already, with older values)."""
        encoded = self.pool.get().encode_chunk(self.plan, chunk)
        for row, reason in encoded.failed:
            self._dead_letter(FinalState(row, False, "snapshot", None, None), reason)
        return self._merge(encoded) if encoded.records else 0

    def _merge(self, encoded: EncodedChunk) -> int:
        items = [(FinalState(row, False, "snapshot", None, None), rec) for row, rec in encoded.records]
        self._write(items, layout=encoded.layout, fence=self.guard)
        return len(items)


def _printable(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return "\\x" + bytes(v).hex()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)
