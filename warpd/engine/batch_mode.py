"""``mode: batch``: periodic sync of a schema whose source has no change log to follow (docs/batch-mode.md).

A run visits every included table:

* ``sync: incremental`` reads the rows whose ``cursor_column`` is at or after
  the table's high-water mark minus ``safety_lag``, in (cursor, key) order,
  and merges them into the destination chunk by chunk.  Each chunk's mark is
  stored in the state file only after the destination committed the chunk,
  so a kill at any point resumes from rows already written: nothing is
  skipped, and re-reading merges the same values again.  Rows whose cursor
  equals the mark are read again on purpose (two rows may share a cursor
  value, and the second may have committed after the first was read).
* ``sync: full_refresh`` copies the whole table into a table beside the live
  one and swaps it in when complete (one transaction where the destination
  has them), so readers see the old rows or the new ones, never a mix.
* ``delete_detection: key_scan`` then deletes the destination rows whose key
  is no longer at the source (destination keys are read first, so a row the
  run just wrote is never taken for a deleted one).

Runs start on the schema's ``schedule`` (``every`` or ``cron``) and never
overlap; a run due while the process was down, or one that did not finish,
starts once at start-up.  ``warpctl sync SCHEMA[.TABLE]`` asks for a run now
(a ``sync`` request in the state file, read between runs).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from warpd import logs, metrics
from warpd.config import Config, SchemaConfig
from warpd.connectors.base import TablePlan, beside_plan
from warpd.engine.applier import TableApplier
from warpd.engine.batch import FinalState
from warpd.engine.hooks import EngineHooks
from warpd.engine.retry import Backoff, Stopped
from warpd.engine.runner import SchemaRunner
from warpd.errors import FatalError, SupersededError
from warpd.redact import redact
from warpd.state.store import StateStore
from warpd.types import Column, Kind, TableSchema, is_widening
from warpd.verify import as_source_row, row_identity, source_row

log = logging.getLogger(__name__)

WAIT_STEP_SECONDS = 0.5  # how often a waiting runner looks for a stop or a warpctl sync
DEFAULT_TIME_LAG = dt.timedelta(minutes=1)
DEFAULT_NUMBER_LAG = 1000
_TEMPORAL = (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ)
_NUMERIC = (Kind.INT, Kind.DECIMAL, Kind.FLOAT)
_ORDERED = (*_TEMPORAL, *_NUMERIC, Kind.TEXT, Kind.UUID)


@dataclass
class TableRun:
    """What one run did to one table, for the log and the status."""

    table: str
    sync: str
    rows: int = 0
    deleted: int = 0
    error: str | None = None


def next_run_after(schema: SchemaConfig, started: float) -> float:
    """When the run after one started at ``started`` (Unix time) is due."""
    schedule = schema.schedule
    if schedule is None:
        raise FatalError(f"schema {schema.name!r}: mode: batch needs a schedule (docs/batch-mode.md)")
    if schedule.every is not None:
        return started + schedule.every
    from cronsim import CronSim

    assert schedule.cron is not None
    after = dt.datetime.fromtimestamp(started, dt.UTC).replace(microsecond=0)
    return next(CronSim(schedule.cron, after)).timestamp()


def first_due(schema: SchemaConfig, store: StateStore, now: float) -> float:
    """When the first run of this process is due: now if none ever ran, if the last one did not finish
    well (a crash or a failure) or if one came due while the process was down (once, however many
    were missed); otherwise at the next time of the schedule."""
    last = store.batch_schedule(schema.name)
    if last is None or last.run_started is None or last.run_status != "ok":
        return now
    return max(now, next_run_after(schema, last.run_started))


def safety_lag(settings_lag: Any, table: str, column: Column) -> Any:
    """How far below the mark an incremental run of ``table`` reads again, in the cursor's own terms:
    a timedelta for a date/time cursor, a number of the cursor's type for a numeric one, None for a
    text cursor (which has no arithmetic; safety_lag must be 0 there)."""
    kind = column.type.kind
    if kind in _TEMPORAL:
        seconds = settings_lag.amount if settings_lag is not None else DEFAULT_TIME_LAG.total_seconds()
        return dt.timedelta(seconds=seconds)
    if kind in _NUMERIC:
        if settings_lag is not None and settings_lag.duration:
            raise FatalError(
                f"table {table!r}: safety_lag is a duration, but cursor_column {column.name!r} is a number "
                f"({column.source_type or kind}); give safety_lag as a number of cursor units (e.g. 1000 ids)"
            )
        amount = settings_lag.amount if settings_lag is not None else DEFAULT_NUMBER_LAG
        if kind is Kind.INT:
            if amount != int(amount):
                raise FatalError(
                    f"table {table!r}: safety_lag {amount:g} is not a whole number, and cursor_column "
                    f"{column.name!r} is an integer"
                )
            return int(amount)
        return decimal.Decimal(str(amount)) if kind is Kind.DECIMAL else float(amount)
    if settings_lag is not None and settings_lag.amount:
        raise FatalError(
            f"table {table!r}: cursor_column {column.name!r} is {kind} and cannot be counted back by "
            "safety_lag; set safety_lag: 0 for it, or use a date/time or numeric cursor column"
        )
    return None


class BatchRunner(SchemaRunner):
    """Runs one ``mode: batch`` schema: scheduled runs (and ``warpctl sync`` ones) until stopped."""

    def __init__(
        self,
        config: Config,
        schema: SchemaConfig,
        store: StateStore | None,
        should_stop: Any = lambda: False,
        hooks: EngineHooks | None = None,
    ):
        super().__init__(config, schema, store, should_stop, hooks)
        self.next_run: float | None = None
        self.current: dict[str, TableRun] = {}
        read_since = getattr(self.source, "read_since", None)
        self._read_since = read_since

    # -- the loop ------------------------------------------------------------------
    def run(self) -> None:
        with self.running():
            self._retry(self.dest.connect, f"connecting to the {self.dest.capabilities.name} destination")
            log.info("schema %s: destination %s", self.name, self.describe_destination())
            if self._fenced:  # one writer: a process on another machine taking the schema over stops this one
                self._take_over(clear=False)
            assert self.schema.schedule is not None
            due = first_due(self.schema, self.store, time.time())
            log.info(
                "schema %s: batch mode, %s; next run %s",
                self.name,
                self.schema.schedule.describe(),
                "now" if due <= time.time() else _when(due),
            )
            self.next_run = due
            self.store.set_next_batch_run(self.name, due)
            while not self.should_stop():
                requested = self.store.pending_requests(self.name)
                for request in requested:
                    if request.kind == "sync":
                        self._requested_run(request.id, str(request.args.get("table") or ""))
                    elif request.kind == "dlq_replay":
                        self._replay(request.id, request.args.get("ids"))
                    else:
                        self.store.finish_request(
                            request.id, False, {"message": f"{request.kind} is not a request of mode: batch"}
                        )
                if requested:
                    continue
                if time.time() >= due:
                    due = self._scheduled_run()
                    continue
                self.phase = "waiting"
                time.sleep(min(WAIT_STEP_SECONDS, max(0.0, due - time.time())))

    def _scheduled_run(self) -> float:
        """Run every table now; return when the next run is due (FatalError when a table failed)."""
        started = time.time()
        self.store.start_batch_run(self.name, started)
        failed = self.run_once()
        if self.should_stop():
            return started  # unfinished: it runs again at start-up (first_due)
        # a run that took longer than the period is followed by the next one at once
        due = max(next_run_after(self.schema, started), time.time())
        self.next_run = due
        self.store.finish_batch_run(self.name, not failed, time.time(), due)
        if failed:
            raise FatalError(
                f"schema {self.name}: the batch run failed for "
                + "; ".join(f"{r.table}: {r.error}" for r in failed)
            )
        return due

    def _replay(self, request_id: int, ids: Any) -> None:
        """``warpctl dlq replay``: between runs, so no run writes the same tables meanwhile."""
        from warpd.engine.replay import replay

        letters = self.store.dead_letters(self.name, ids=[int(i) for i in ids] if ids is not None else None)
        result = replay(self, letters, lambda _table: contextlib.nullcontext(), self.should_stop)
        self.store.finish_request(
            request_id,
            True,
            {
                **result,
                "message": f"{self.name}: {len(result['replayed'])} replayed, {len(result['failed'])} kept",
            },
        )

    def _paused_tables(self) -> set[str]:
        return self.store.paused(self.name).get(self.name, set())

    def _requested_run(self, request_id: int, table: str) -> None:
        if table:
            why = None
            if table in self._paused_tables():
                why = f"{self.name}.{table} is paused; warpctl resume {self.name}.{table} first"
            elif not self.schema.includes(table):
                why = f"{self.name}.{table} is not included by this schema's table filters"
            elif table not in self._retry(self.source.list_tables, "listing source tables"):
                why = f"there is no table {table!r} in {self.schema.source_database!r} at the source"
            if why is not None:
                self.store.finish_request(request_id, False, {"message": why})
                return
        log.info("schema %s: warpctl sync: running %s now", self.name, table or "every table")
        failed = self.run_once([table] if table else None)
        if failed:
            message = "; ".join(f"{r.table}: {r.error}" for r in failed)
            self.store.finish_request(request_id, False, {"message": message})
            raise FatalError(f"schema {self.name}: the requested batch run failed for {message}")
        rows = sum(r.rows for r in self.current.values())
        self.store.finish_request(
            request_id, True, {"message": f"{len(self.current)} table(s), {rows:,} rows", "rows": rows}
        )

    def run_once(self, only: list[str] | None = None) -> list[TableRun]:
        """One run over every included table (or ``only`` those); returns the tables that failed."""
        self.phase = "syncing"
        started = time.monotonic()
        names = self._retry(self.source.list_tables, "listing source tables")
        paused = self._paused_tables()
        tables = [
            t for t in names if self.schema.includes(t) and (only is None or t in only) and t not in paused
        ]
        for table in sorted(set(names) & paused):
            log.info("schema %s: %r is paused (warpctl pause): not run", self.name, table)
        self.current = {}
        failed: list[TableRun] = []
        for name in sorted(tables):
            if self.should_stop():
                break
            with logs.bind(table=name):
                result = self._run_table(name)
            if result.error is not None:
                failed.append(result)
        moved = sum(r.rows for r in self.current.values())
        log.info(
            "schema %s: batch run of %d table(s) done in %.1fs: %s rows moved%s",
            self.name,
            len(self.current),
            time.monotonic() - started,
            f"{moved:,}",
            f", {len(failed)} failed" if failed else "",
        )
        return failed

    # -- one table ---------------------------------------------------------------
    def _run_table(self, name: str) -> TableRun:
        settings = self.schema.table_settings(name)
        result = TableRun(name, settings.sync)
        self.current[name] = result
        started = time.time()
        self.store.start_batch_table(self.name, name, settings.sync, started)
        backoff = Backoff(self.global_retry, f"batch run of {self.name}.{name}", self.should_stop)
        try:
            while True:
                try:
                    result.rows = result.deleted = 0
                    if settings.sync == "incremental":
                        self._incremental(name, result)
                    else:
                        self._full_refresh(name, result)
                    if settings.delete_detection == "key_scan" and settings.sync == "incremental":
                        self._key_scan(name, result)
                    break
                except (Stopped, SupersededError):
                    raise
                except Exception as exc:  # noqa: BLE001 - transient ones start the table's run again
                    if not self._is_transient(exc):
                        raise
                    metrics.error(self.name, type(exc).__name__)
                    delay = backoff.failed(exc, "resuming from the last committed chunk")
                    self.source.reset()
                    self.dest.reset()
                    backoff.wait(delay)
        except (Stopped, SupersededError):  # (superseded: this process stops, exit 2)
            raise
        except Exception as exc:  # noqa: BLE001 - recorded; the run goes on with the other tables
            result.error = redact(str(exc).strip() or type(exc).__name__)
            log.error("schema %s: batch run of %r failed: %s", self.name, name, result.error)
            metrics.error(self.name, type(exc).__name__)
        finished = time.time()
        if self.should_stop() and result.error is None:
            return result  # interrupted: not finished, and it runs again at start-up
        self.store.finish_batch_table(self.name, name, result.error, finished)
        state = self.store.batch_tables(self.name).get(name)
        metrics.batch_run(
            self.name,
            name,
            result.error is None,
            result.rows,
            finished - started,
            state.last_success if state is not None else None,
        )
        if result.error is None:
            log.info(
                "%s.%s: %s run moved %s rows%s in %.1fs",
                self.name,
                name,
                settings.sync.replace("_", " "),
                f"{result.rows:,}",
                f", deleted {result.deleted:,}" if result.deleted else "",
                finished - started,
            )
        return result

    def _shape(self, name: str) -> TableSchema:
        """The table's current shape, with the destination brought to it (created, columns added or widened);
        returns it. A change the destination cannot follow in place re-copies the table (``_recopy``).

        A source that infers shapes (MongoDB) describes a sample: its stored shape is kept, and widened by
        the chunks that need more (``SnapshotChunk.schema``), as a stream does after a restart."""
        known = self.store.latest_schemas(self.name).get(name)
        shape = known if self._infers_shapes and known is not None else self._describe(name)
        if known is None or name not in self.plans:
            if known is not None and known != shape and not _evolves(known, shape):
                self._recopy(shape, known)
                return shape
            if known is not None and known != shape:
                self.tables[name] = known
                self._track(known)
                self._reread_for_new_columns(name, known, shape)
                self._widen(shape, "batch run: the source table has new or wider columns")
                return shape
            self._track(shape)
            self.store.record_schema_version(self.name, shape, "snapshot" if known is None else "batch")
            return shape
        current = self.tables[name]
        if current == shape:
            return shape
        if _evolves(current, shape):
            self._reread_for_new_columns(name, current, shape)
            self._widen(shape, "batch run: the source table has new or wider columns")
        else:
            self._recopy(shape, current)
        return shape

    def _reread_for_new_columns(self, name: str, old: TableSchema, new: TableSchema) -> None:
        """Rows copied before a column was added hold NULL there, while the source may have filled it (a
        DEFAULT, an UPDATE that did not move the cursor): the run after it reads every row again."""
        added = [c.name for c in new.columns if old.column(c.name) is None]
        if added:
            log.warning(
                "%s.%s has new column(s) %s: this run reads every row again to fill them",
                self.name,
                name,
                ", ".join(repr(a) for a in added),
            )
            self.store.reset_batch_mark(self.name, name)  # before the DDL: a crash in between re-reads too

    def _incremental(self, name: str, result: TableRun) -> None:
        if self._read_since is None:
            raise FatalError(
                f"the {self.config.source.type} source cannot read rows by a cursor column; "
                f"use sync: full_refresh for {self.name}.{name}"
            )
        settings = self.schema.table_settings(name)
        shape = self._shape(name)
        cursor = _cursor(shape, settings.cursor_column, name, getattr(self.source, "cursor_column", None))
        if not shape.key:
            raise FatalError(
                f"{self.name}.{name} has no primary key: an incremental run could not tell a changed row "
                "from a new one (the destination would keep both); set key_columns for it, or use "
                "sync: full_refresh"
            )
        lag = safety_lag(settings.safety_lag, name, cursor)
        state = self.store.batch_tables(self.name).get(name)
        mark = state.mark if state is not None else None
        if mark is not None and mark.get("column") != cursor.name:
            log.warning(
                "%s.%s: cursor_column is now %r (the high-water mark was of %r): reading every row again",
                self.name,
                name,
                cursor.name,
                mark.get("column"),
            )
            mark = None
        applier = self.appliers[name]
        fmt = {"bulk_format": self._bulk_format} if self._bulk_format else {}
        chunks = self._read_since(shape, cursor.name, mark, lag, settings.snapshot_chunk_size, **fmt)
        for chunk in chunks:
            if chunk.schema is not None and chunk.schema != self.tables.get(name):
                copied = self._widen(chunk.schema, "batch run: rows need a wider shape")
                if copied is not None:
                    # the table was copied again in full and its mark reset: the next run reads from there
                    result.rows += copied
                    self.store.advance_batch_table(self.name, name, None, copied)
                    return
                applier = self.appliers[name]
            written = applier.merge_chunk(chunk) if chunk.rows else 0
            # only now, the destination having committed it, does the mark move past this chunk
            at = dict(chunk.resume_after, column=cursor.name) if chunk.resume_after is not None else None
            self.store.advance_batch_table(self.name, name, at, written)
            result.rows += written
            self.applied_events += written
            metrics.events_applied(self.name, name, "batch", written)
            if chunk.done or self.should_stop():
                break

    def _full_refresh(self, name: str, result: TableRun) -> None:
        """The whole table, copied beside the live one in its current shape and swapped in.

        A source that infers shapes (MongoDB) starts from its stored shape, the widest its copies have
        needed, not from a new sample: a run never narrows what an earlier one widened, and a copy that
        had to start again in a wider shape (``_copy_beside``) is not undone by the next run."""
        known = self.store.latest_schemas(self.name).get(name)
        shape = known if self._infers_shapes and known is not None else self._describe(name)
        if known != shape:
            self.store.record_schema_version(
                self.name, shape, "snapshot" if known is None else "resync", "batch run: full refresh"
            )
            if known is not None:
                metrics.schema_evolution(self.name, name, "resync_table")
        plan = self._plan(shape)
        self.tables[name] = shape
        self.plans[name] = plan
        result.rows, plan = self._copy_beside(shape, plan)
        self.store.advance_batch_table(self.name, name, None, result.rows)  # after the swap committed

    def _widen(self, new: TableSchema, statement: str) -> int | None:
        """Add and widen the live table's columns for ``new`` (``_evolve``); None when that was done in place.

        When the destination cannot (a column that becomes JSON where it has no ``json_widening``, or its
        ``evolve`` refusing), the table is copied again beside the live one in ``new``'s shape and swapped
        in (``_recopy``), as ``warpctl resync`` would for a stream: returns the rows copied."""
        plan = self.plans.get(new.name)
        old = self.tables.get(new.name)
        if plan is None or old is None:
            return None  # not replicated
        why = self._no_json_widening(plan, new)
        if why is None:
            try:
                self._evolve(new, statement, None)
                return None
            except Stopped:
                raise
            except Exception as exc:  # noqa: BLE001 - transient ones are retried by the caller
                if self._is_transient(exc):
                    raise
                reason = redact(str(exc).strip() or type(exc).__name__)
                why = f"the table cannot be widened in place ({reason})"
        log.warning("%s.%s: %s", self.name, new.name, why)
        return self._recopy(new, old)

    def _recopy(self, shape: TableSchema, old: TableSchema) -> int:
        """The table changed in a way the destination cannot follow in place: copy it again beside the
        live one and swap it in; an incremental table's mark then starts from that copy. Returns the rows
        copied."""
        name = shape.name
        log.warning(
            "%s.%s changed shape in a way the destination cannot follow in place; copying it again beside "
            "the live table",
            self.name,
            name,
        )
        plan = self._plan(shape)
        self.tables[name] = shape
        self.plans[name] = plan
        self.store.record_schema_version(
            self.name, shape, "resync", "batch run: the source table changed shape"
        )
        metrics.schema_evolution(self.name, name, "resync_table")
        copied, plan = self._copy_beside(shape, plan)
        self.store.reset_batch_mark(self.name, name)  # the incremental run after it reads every row again
        self._track(plan.source)
        return copied

    def _copy_beside(self, shape: TableSchema, plan: TablePlan) -> tuple[int, TablePlan]:
        """Copy the whole table into a table beside ``plan``'s and swap it in; return the rows copied and the
        plan of the table swapped in (wider than ``plan`` when the rows of a source that infers shapes
        needed more: ``SnapshotChunk.schema``).

        A copy that needs a shape the destination cannot widen it to in place (``_widen_beside``) starts
        again in that shape: the copy is disposable, and the live table is untouched until the swap. The
        shape is recorded first, so a retry after a crash starts from it too; each new start is wider than
        the last, so the copy finishes."""
        name = shape.name
        while True:
            try:
                copied, beside = self._copy_once(shape, plan)
                break
            except _CopyAgain as again:
                log.warning(
                    "%s.%s: %s; copying it again from the start in the wider shape",
                    self.name,
                    name,
                    again.why,
                )
                shape = again.shape
                self.store.record_schema_version(
                    self.name, shape, "evolve", "batch run: rows needed a wider shape; copied again in it"
                )
                metrics.schema_evolution(self.name, name, "evolve")
        if beside.source != plan.source:  # widened on the way: the live table takes the copy's shape
            plan = self._plan(beside.source)
            if self.store.latest_schemas(self.name).get(name) != plan.source:
                self.store.record_schema_version(
                    self.name, plan.source, "evolve", "batch run: rows needed a wider shape"
                )
            self.tables[name] = plan.source
            self.plans[name] = plan
        for stmt in self._retry(
            lambda: self.dest.swap_in(beside, plan, **self._guarded()), f"swapping {plan.where} in"
        ):
            log.info("destination DDL: %s", stmt)
        self.applied_events += copied
        return copied, plan

    def _copy_once(self, shape: TableSchema, plan: TablePlan) -> tuple[int, TablePlan]:
        """One copy of the whole table in ``shape`` beside ``plan``'s, not swapped in yet: the rows copied
        and the copy's plan (widened for the rows read); ``_CopyAgain`` when it must start again."""
        name = shape.name
        settings = self.schema.table_settings(name)
        beside = beside_plan(self._plan(shape)) if shape != plan.source else beside_plan(plan)
        # a copy left beside the table by an unfinished run is dropped first
        self._retry(lambda: self.dest.drop(beside, **self._guarded()), f"dropping {beside.dest_table!r}")
        for stmt in self._retry(
            lambda: self.dest.prepare(beside, **self._guarded()), f"preparing {beside.where}"
        ):
            log.info("destination DDL: %s", stmt)
        applier = self._applier(beside, settings)
        copied = 0
        try:
            fmt = {"bulk_format": self._bulk_format} if self._bulk_format else {}
            for chunk in self.source.snapshot(shape, None, settings.snapshot_chunk_size, **fmt):
                if chunk.schema is not None and chunk.schema != beside.source:
                    applier.close()
                    beside = self._widen_beside(beside, chunk.schema)
                    applier = self._applier(beside, settings)
                copied += applier.copy_snapshot(chunk) if chunk.rows else 0
                metrics.events_applied(self.name, name, "batch", len(chunk.rows))
                if chunk.done:
                    break
                if self.should_stop():
                    raise Stopped(f"stopped during the full refresh of {self.name}.{name}")
        except Stopped:
            # a stop (not a kill) drops the unfinished copy, as docs/batch-mode.md says; the next run
            # copies the table again from the beginning whether or not this drop gets through
            applier.close()
            try:
                for stmt in self.dest.drop(beside, **self._guarded()) or ():
                    log.info("destination DDL: %s", stmt)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out; the next run drops it
                log.warning(
                    "could not drop the unfinished copy %s on stopping: %s", beside.where, redact(exc)
                )
            raise
        finally:
            applier.close()
        return copied, beside

    def _applier(self, beside: TablePlan, settings: Any) -> TableApplier:
        """An applier of the copy ``beside``, checking this writer's epoch (when it took one)."""
        applier = TableApplier(self.name, beside, settings, self.pool, self._dead_letter, self.should_stop)
        applier.guard = self.guard
        return applier

    def _widen_beside(self, beside: TablePlan, wider: TableSchema) -> TablePlan:
        """The copy beside the live table, with columns added or widened for ``wider``'s rows;
        ``_CopyAgain`` when the destination cannot do that in place."""
        why = self._no_json_widening(beside, wider)
        if why is not None:
            raise _CopyAgain(wider, why)
        new = beside_plan(self._plan(wider))
        try:
            ddl = self._retry(
                lambda: self.dest.evolve(beside, new, **self._guarded()), f"evolving {beside.where}"
            )
        except Stopped:
            raise
        except Exception as exc:  # noqa: BLE001 - transient ones were retried; this one cannot be followed
            if self._is_transient(exc):
                raise
            why = redact(str(exc).strip() or type(exc).__name__)
            raise _CopyAgain(wider, f"the copy cannot be widened in place ({why})") from exc
        for stmt in ddl:
            log.info("destination DDL: %s", stmt)
        return new

    def _no_json_widening(self, plan: TablePlan, new: TableSchema) -> str | None:
        """Why ``plan``'s table cannot take ``new`` in place: columns into JSON the destination cannot
        convert (``Capabilities.json_widening``); None when it can."""
        into_json = self.json_widenings_refused(plan, new)
        if not into_json:
            return None
        return (
            f"column(s) {', '.join(map(repr, into_json))} need JSON, and the "
            f"{self.dest.capabilities.name} destination cannot convert the values it holds in place"
        )

    def _key_scan(self, name: str, result: TableRun) -> None:
        """Delete the destination rows whose key the source no longer has.

        Both sides' keys are compared in the canonical values verification uses (warpd/verify.py).
        """
        plan = self.plans[name]
        at_destination: dict[Any, dict[str, Any]] = {}
        rows = self._retry(lambda: self.dest.read_rows(plan), f"reading the keys of {plan.where}")
        for row in rows or ():
            at_destination[row_identity(plan, row)] = row
        if not at_destination:
            return
        present = len(at_destination)
        source_rows = 0
        for chunk in self.source.snapshot(
            plan.source, None, self.schema.table_settings(name).snapshot_chunk_size
        ):
            for raw in chunk.rows:
                source_rows += 1
                at_destination.pop(row_identity(plan, source_row(plan, raw)), None)
            if chunk.done:
                break
            if self.should_stop():
                raise Stopped(f"stopped during the key scan of {self.name}.{name}")
        if not at_destination:
            return
        if source_rows and len(at_destination) == present:
            # not one key in common although both sides hold rows: keys that do not compare (a type read
            # differently on each side), never a table whose every row was replaced; delete nothing
            raise FatalError(
                f"{self.name}.{name}: key_scan found none of the source's {source_rows:,} keys among the "
                f"destination's {present:,} rows, so it deletes nothing; if the source table was really "
                "replaced, run it once with sync: full_refresh"
            )
        # deleted by the key as read back, in the values a source gives (a jsonb _id parsed: JSON text again)
        gone = [
            FinalState(as_source_row(plan, row), True, "delete", None, None)
            for row in at_destination.values()
        ]
        self.appliers[name].apply(gone)
        result.deleted = len(gone)
        self.store.advance_batch_table(self.name, name, None, 0, len(gone))
        metrics.events_applied(self.name, name, "delete", len(gone))
        log.info("%s.%s: key scan deleted %d rows gone from the source", self.name, name, len(gone))

    # -- status --------------------------------------------------------------------
    def batch_document(self) -> dict[str, Any]:
        """What warpctl status shows of this batch schema (engine/status.py)."""
        schedule = self.schema.schedule
        return {
            "schedule": schedule.describe() if schedule is not None else None,
            "next_run": self.next_run,
        }


class _CopyAgain(Exception):
    """A copy beside the live table needs ``shape``, which the destination cannot widen it to in place."""

    def __init__(self, shape: TableSchema, why: str):
        super().__init__(why)
        self.shape = shape
        self.why = why


def _cursor(
    shape: TableSchema, column: str | None, table: str, by_source: Callable[[TableSchema, str], Column] | None
) -> Column:
    """The cursor column of ``table``; ``by_source`` is the source's own check (``Source.cursor_column``),
    for sources whose columns are all nullable by nature (MongoDB): they refuse unreadable rows as they read."""
    if not column:
        raise FatalError(
            f"table {table!r} is synced incrementally (the schema's sync: incremental) but has no cursor_column; "
            "list it under tables: with a cursor_column, or give it sync: full_refresh"
        )
    if by_source is not None:
        return by_source(shape, column)
    found = shape.column(column)
    if found is None:
        raise FatalError(
            f"table {table!r} has no column {column!r} (its cursor_column); its columns: "
            f"{', '.join(c.name for c in shape.columns)}"
        )
    if found.type.kind not in _ORDERED:
        raise FatalError(
            f"table {table!r}: cursor_column {column!r} is {found.source_type or found.type.kind}, which does not "
            "order changes; use a date/time (updated_at) or numeric (auto-increment id) column"
        )
    if found.nullable:
        raise FatalError(
            f"table {table!r}: cursor_column {column!r} may be NULL, and a row with a NULL cursor would never be "
            f"read by an incremental run; make it NOT NULL at the source (ALTER TABLE ... MODIFY {column} ... "
            "NOT NULL), or use sync: full_refresh"
        )
    return found


def _evolves(old: TableSchema, new: TableSchema) -> bool:
    """Whether ``new`` only adds columns to ``old`` or widens them, keeping the key (followed in place)."""
    if old.key != new.key:
        return False
    for column in old.columns:
        after = new.column(column.name)
        if after is None or not is_widening(column.type, after.type):
            return False
    return True


def _when(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def mark_text(mark: Mapping[str, Any] | None) -> Any:
    """A stored mark's cursor value as warpctl shows it (tagged values unwrapped)."""
    if not mark:
        return None
    cursor = mark.get("cursor")
    if isinstance(cursor, dict) and len(cursor) == 1:
        return next(iter(cursor.values()))
    return cursor
