"""Applying final row states to one destination table with N parallel workers.

Rows are partitioned by key, so every change to one row goes to the same
worker in source order; each worker owns its own destination connection.
A batch is applied when every worker has committed its part.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg2
import psycopg2.errors

from warpd import metrics
from warpd.config import TableSettings
from warpd.connectors.base import SnapshotChunk
from warpd.connectors.postgresql.destination import (
    OP_COLUMN,
    SOURCE_TS_COLUMN,
    PostgresDestination,
    TablePlan,
    is_transient,
)
from warpd.engine.batch import FinalState
from warpd.engine.retry import call_with_retry
from warpd.redact import redact
from warpd.state.store import StateStore

log = logging.getLogger(__name__)

# Errors that concern the data of some row(s), not the connection or the schema.
_ROW_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError)


class DestinationPool:
    """Destination connections, one per thread that asks.

    A table is re-tracked (a new :class:`TableApplier`, new worker threads) at
    every DDL, widening and resync; a connection whose thread has ended is
    handed to the next thread that asks, so the number of connections stays
    at the most threads ever writing at once, however often that happens.
    """

    def __init__(self, factory: Callable[[], PostgresDestination]):
        self._factory = factory
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, PostgresDestination]] = []  # (owner, connection)
        self._lock = threading.Lock()

    def get(self) -> PostgresDestination:
        dest: PostgresDestination | None = getattr(self._local, "dest", None)
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


class TableApplier:
    """Writes batches of :class:`FinalState` into one table."""

    def __init__(
        self,
        schema_name: str,
        plan: TablePlan,
        settings: TableSettings,
        pool: DestinationPool,
        store: StateStore,
        should_stop: Callable[[], bool],
    ):
        self.schema_name = schema_name
        self.plan = plan
        self.settings = settings
        self.pool = pool
        self.store = store
        self.should_stop = should_stop
        self.workers = max(1, settings.max_parallel_streams)
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix=f"apply-{plan.source.name[:20]}"
        )
        self.dead_letters = 0

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def key_of(self, row: dict[str, Any]) -> Hashable:
        if self.plan.keyless:
            return self.plan.row_key(self.plan.encode(row))
        return tuple(row.get(k) for k in self.plan.source.key)

    # -- streaming batches ---------------------------------------------------
    def apply(self, states: Iterable[FinalState]) -> int:
        """Apply final states (in parallel by key); return how many were written."""
        started = time.perf_counter()
        parts: list[list[FinalState]] = [[] for _ in range(self.workers)]
        for st in states:
            parts[hash(self.key_of(st.row)) % self.workers].append(st)
        # each worker logs with the caller's correlation ids (schema, table, batch)
        jobs = [
            self._executor.submit(contextvars.copy_context().run, self._apply_part, p) for p in parts if p
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
        log.debug("applied %d row states to %s in %.1f ms", written, self.plan.pg_table, elapsed * 1000)
        return written

    def _encode(self, states: list[FinalState]) -> list[tuple[FinalState, str]]:
        dest = self.pool.get()
        out = []
        for st in states:
            try:
                out.append((st, dest.encode_line(self.plan, st.row, st.op, st.source_ts)))
            except (ValueError, TypeError, OverflowError) as exc:
                self._dead_letter(st, f"value cannot be encoded for PostgreSQL: {exc}")
        return out

    def _apply_part(self, states: list[FinalState]) -> int:
        encoded = self._encode(states)
        if not encoded:
            return 0
        self._write(encoded)
        return len(encoded)

    def _write(
        self, encoded: list[tuple[FinalState, str]], direct: bool = False, fields: list[str] | None = None
    ) -> None:
        dest = self.pool.get()
        upserts = "".join(line for st, line in encoded if not st.deleted)
        deletes = "".join(line for st, line in encoded if st.deleted)
        try:
            call_with_retry(
                lambda: dest.write(self.plan, upserts, deletes, direct=direct, fields=fields),
                self.settings.retry,
                is_transient=is_transient,
                what=f"writing {len(encoded)} rows to {self.plan.pg_schema}.{self.plan.pg_table}",
                should_stop=self.should_stop,
                on_retry=lambda exc: self._on_retry(dest, exc),
            )
        except psycopg2.errors.UniqueViolation:
            if not direct:
                raise
            # A snapshot chunk committed before a crash but not recorded: merge it instead.
            self._write(encoded, direct=False, fields=fields)
        except _ROW_ERRORS as exc:
            if direct:
                self._write(encoded, direct=False, fields=fields)
            elif len(encoded) == 1:
                self._dead_letter(
                    encoded[0][0],
                    f"rejected by PostgreSQL: {redact(str(exc).strip())}",
                    encoded[0][1],
                    fields or dest.copy_fields(self.plan),
                )
            else:
                mid = len(encoded) // 2
                self._write(encoded[:mid], fields=fields)
                self._write(encoded[mid:], fields=fields)

    def _on_retry(self, dest: PostgresDestination, exc: BaseException) -> None:
        metrics.error(self.schema_name, type(exc).__name__)
        dest.reset()

    def _dead_letter(
        self, st: FinalState, reason: str, line: str | None = None, fields: list[str] | None = None
    ) -> None:
        self.dead_letters += 1
        metrics.dead_letter(self.schema_name, self.plan.source.name)
        log.error("table %r: row sent to the dead-letter table: %s", self.plan.source.name, reason)
        row = {k: _printable(v) for k, v in st.row.items()}
        if line is not None and fields is not None:
            # columns the source encoded itself are only in the COPY line: keep them as text
            for name, text in zip(fields, line.rstrip("\n").split("\t"), strict=False):
                row.setdefault(name, None if text == "\\N" else text)
        self.store.add_dead_letter(self.schema_name, self.plan.source.name, st.op, row, reason, st.position)

    # -- snapshot chunks -----------------------------------------------------
    def copy_snapshot(self, chunk: SnapshotChunk) -> int:
        """COPY one snapshot chunk straight into the table (merging if some rows are there already)."""
        if chunk.encoded is None:
            encoded = self._encode([FinalState(r, False, "snapshot", None, None) for r in chunk.rows])
            if encoded:
                self._write(encoded, direct=True)
            return len(encoded)
        # The source encoded chunk.encoded_columns itself; the rest are canonical values.
        plan = self.plan
        done = set(chunk.encoded_columns)
        rest = [
            (c.name, enc)
            for c, enc in zip(plan.source.columns, plan.encoders, strict=True)
            if c.name not in done
        ]
        fields = [plan.columns[n] for n in chunk.encoded_columns] + [plan.columns[n] for n, _e in rest]
        tail = ""
        if plan.metadata:
            fields += [OP_COLUMN, SOURCE_TS_COLUMN]
            tail = "\tsnapshot\t\\N"
        if not rest:
            # the common case: one join per chunk, no per-row Python work unless PostgreSQL objects
            text = (tail + "\n").join(chunk.encoded) + tail + "\n"
            try:
                self._copy_direct(text, fields)
                return len(chunk.encoded)
            except _ROW_ERRORS:
                pass  # find the offending rows below, one COPY line at a time
        items = []
        for prefix, row in zip(chunk.encoded, chunk.rows, strict=True):
            state = FinalState(row, False, "snapshot", None, None)
            try:
                rest_text = "".join("\t" + enc(row[n]) for n, enc in rest)
            except (ValueError, TypeError, OverflowError) as exc:
                self._dead_letter(state, f"value cannot be encoded for PostgreSQL: {exc}", prefix, fields)
                continue
            items.append((state, prefix + rest_text + tail + "\n"))
        if items:
            self._write(items, direct=True, fields=fields)
        return len(items)

    def _copy_direct(self, text: str, fields: list[str]) -> None:
        dest = self.pool.get()
        call_with_retry(
            lambda: dest.write(self.plan, text, direct=True, fields=fields),
            self.settings.retry,
            is_transient=is_transient,
            what=f"copying rows into {self.plan.pg_table}",
            should_stop=self.should_stop,
            on_retry=lambda exc: self._on_retry(dest, exc),
        )


def _printable(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return "\\x" + bytes(v).hex()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)
