"""Copying one table again while its schema keeps streaming (``warpctl resync``, ``warpctl resume S.T``).

The copy runs in its own thread, with its own source and destination
connections, while the stream goes on applying every change of the table as
usual.  Both write the same destination table; four rules keep the result
exact (docs/how-it-works.md, "Resync beside the stream"):

1. The destination table is emptied under the table's lock; every streamed
   change applied after that lands in the emptied table.
2. Each chunk the copy reads is inserted with ``ON CONFLICT DO NOTHING``: a
   row the stream has written since the table was emptied carries a change
   at least as new as the copy's image, and the stream will apply any later
   one, so the copy never overwrites it.
3. Keys the stream has deleted since the table was emptied are never
   inserted by the copy, so a row deleted while the copy ran does not come
   back from an image the copy read before the delete.
4. A chunk write and the stream's batch for the table hold the same lock, so
   the check of rule 3 and the insert of rule 2 see one consistent state.

A TRUNCATE or schema change of the table makes the copy start over (the
stream holds the lock while it applies them).  Progress is stored like a
snapshot's; if the process stops before the copy finished, the table is
copied again at the next start, before streaming resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

from warpd import metrics
from warpd.connectors.base import Destination, TablePlan
from warpd.connectors.registry import destination_factory
from warpd.engine.applier import dead_letter_row, write_records
from warpd.engine.batch import FinalState
from warpd.engine.retry import Backoff, Stopped
from warpd.errors import TransientError
from warpd.redact import redact

if TYPE_CHECKING:
    from warpd.engine.runner import SchemaRunner

log = logging.getLogger(__name__)

# Rows per chunk: the stream waits for a chunk's write whenever it applies this table's batch.
RESYNC_CHUNK_ROWS = 5000


class _Restart(Exception):
    """The table changed under the copy (TRUNCATE, schema change): start again."""


class _Gone(Exception):
    """The table is not replicated any more (dropped, renamed, filtered)."""


class TableResync:
    """One table's copy beside the stream; :meth:`start` runs it in a thread."""

    def __init__(
        self,
        runner: SchemaRunner,
        table: str,
        lock: threading.RLock,
        on_done: Callable[[TableResync], None] = lambda _r: None,
    ):
        self.runner = runner
        self.table = table
        self.lock = lock
        self.on_done = on_done
        self.generation = 0
        self.deleted: set[Hashable] = set()
        self.active = False  # the table has been emptied: the stream's deletes are recorded
        self.outcome: str | None = None  # "done", "failed: ...", "cancelled", "gone: ..."
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"resync-{table[:20]}", daemon=True)
        self._source: Any = None
        self._dest: Destination | None = None

    # -- called by the control (under the table's lock where it matters) ------
    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def restart(self) -> None:
        """The table changed under the copy; caller holds the table's lock."""
        self.generation += 1

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def note_applied(self, states: Mapping[Hashable, FinalState]) -> None:
        """The stream applied ``states`` to the table; caller holds the table's lock."""
        if self.active:
            self.deleted.update(key for key, state in states.items() if state.deleted)

    # -- the copy ------------------------------------------------------------
    def _run(self) -> None:
        runner = self.runner
        backoff = Backoff(runner.global_retry, f"resync of {runner.name}.{self.table}", self._cancel.is_set)
        try:
            while not self._cancel.is_set():
                try:
                    self.outcome = "done" if self._copy_once() else "cancelled"
                    backoff.succeeded()
                    return
                except _Restart as why:
                    log.info("resync of %s.%s starts over: %s", runner.name, self.table, why)
                    backoff.succeeded()
                except _Gone as why:
                    self.outcome = f"gone: {why}"
                    log.info("resync of %s.%s abandoned: %s", runner.name, self.table, why)
                    return
                except Stopped:
                    self.outcome = "cancelled"
                    return
                except Exception as exc:  # noqa: BLE001 - retried, then reported in the status
                    metrics.error(runner.name, type(exc).__name__)
                    try:
                        delay = backoff.failed(exc, "starting over")
                    except TransientError as gave_up:
                        self.outcome = f"failed: {redact(str(exc).strip() or type(exc).__name__)}"
                        log.error(
                            "%s; it is copied again when the schema process restarts, or run warpctl resync again",
                            gave_up,
                        )
                        return
                    self._reset()
                    try:
                        backoff.wait(delay)
                    except Stopped:
                        self.outcome = "cancelled"
                        return
            self.outcome = "cancelled"
        finally:
            self.active = False
            self._close()
            self.on_done(self)

    def _connections(self) -> tuple[Any, Destination]:
        runner = self.runner
        if self._source is None:
            # its own source: the stream's connections belong to the engine's thread
            self._source = runner.new_source()
        if self._dest is None:
            dst = runner.config.destination
            app = f"cartridge-warp {runner.name} resync"[:63]
            self._dest = destination_factory(dst.type)(dst.connection_string, app)
        assert self._dest is not None
        return self._source, self._dest

    def _reset(self) -> None:
        if self._source is not None:
            self._source.reset()
        if self._dest is not None:
            self._dest.reset()

    def _close(self) -> None:
        for thing in (self._source, self._dest):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing after a failure
                    pass

    def _copy_once(self) -> bool:
        runner, name = self.runner, self.table
        source, dest = self._connections()
        plan, table = runner.plans.get(name), runner.tables.get(name)
        if plan is None or table is None:
            raise _Gone("the table is not replicated any more")
        settings = runner.schema.table_settings(name)
        chunk_size = min(settings.snapshot_chunk_size, RESYNC_CHUNK_ROWS)
        estimate = source.estimate_rows(name)
        with self.lock:
            if runner.plans.get(name) is not plan:
                raise _Restart("its shape changed")
            generation = self.generation
            # this copy runs beside the stream and has no start position: replay no longer skips any
            # of the table's changes (runner._in_copy), as for a table never copied
            runner.copy_positions.pop(name, None)
            runner.store.set_copied_from(runner.name, name, None)
            dest.truncate(plan, **runner._guarded())  # an older writer copies nothing more
            self.deleted = set()
            self.active = True
            runner.store.set_snapshot_progress(runner.name, name, "running", None, 0, estimate)
        log.info("resync of %s.%s: copying ~%s rows beside the stream", runner.name, name, f"{estimate:,}")
        started, copied = time.monotonic(), 0
        for chunk in source.snapshot(table, None, chunk_size):
            if self._cancel.is_set():
                return False
            if chunk.schema is not None and chunk.schema != runner.tables.get(name):
                # rows need a wider shape than the stream has seen yet: let the stream evolve it first
                self._cancel.wait(1.0)
                raise _Restart("its rows need a wider shape than the stream has applied yet")
            with self.lock:
                if self.generation != generation or runner.plans.get(name) is not plan:
                    raise _Restart("the table was truncated or changed shape meanwhile")
                rows = [row for row in chunk.rows if plan.key_of(row) not in self.deleted]
                self._write(dest, plan, rows)
                copied += len(chunk.rows)
                runner.store.set_snapshot_progress(
                    runner.name, name, "done" if chunk.done else "running", chunk.resume_after, copied
                )
            metrics.events_applied(runner.name, name, "snapshot", len(rows))
            metrics.snapshot_progress(runner.name, name, copied, estimate, done=chunk.done)
            if chunk.done:
                break
        log.info(
            "resync of %s.%s: done, %s rows in %.1fs",
            runner.name,
            name,
            f"{copied:,}",
            time.monotonic() - started,
        )
        return True

    def _write(self, dest: Destination, plan: TablePlan, rows: list[dict[str, Any]]) -> None:
        items: list[tuple[FinalState, Any]] = []
        for row in rows:
            state = FinalState(row, False, "snapshot", None, None)
            try:
                items.append((state, dest.encode(plan, row, "snapshot", None)))
            except (ValueError, TypeError, OverflowError) as exc:
                self._dead_letter(
                    dest, plan, state, f"value cannot be encoded for {dest.capabilities.name}: {exc}", None
                )
        if not items:
            return
        write_records(
            dest,
            plan,
            items,
            self.runner.schema.table_settings(self.table).retry,
            self._cancel.is_set,
            lambda state, reason, record: self._dead_letter(dest, plan, state, reason, record),
            keep_existing=True,
            fence=self.runner.guard,  # a process another one took the schema over from copies nothing more
        )

    def _dead_letter(
        self, dest: Destination, plan: TablePlan, state: FinalState, reason: str, record: Any
    ) -> None:
        log.error("table %r: row sent to the dead-letter table: %s", self.table, reason)
        metrics.dead_letter(self.runner.name, self.table)
        row = dead_letter_row(dest, plan, state.row, record, None)
        self.runner.store.add_dead_letter(self.runner.name, self.table, "snapshot", row, reason, None)
