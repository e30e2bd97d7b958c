"""One schema, end to end: prerequisites, initial snapshot, then change streaming.

The order of writes is what makes crashes harmless:

1. the stream start position is stored *before* the snapshot reads anything,
   so every change made during the snapshot is replayed afterwards;
2. each snapshot chunk is committed to the destination before its resume
   point is stored;
3. each streaming batch is committed to the destination (every worker)
   before the checkpoint that covers it is stored.

Replaying from an older position is harmless because applying a change is
idempotent (final row images are upserted, deletes delete by key).
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import json
import logging
import math
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from warpd import logs, metrics
from warpd.config import Config, SchemaConfig
from warpd.connectors.base import (
    FENCE_TABLE,
    RESERVED_COLUMNS,
    Destination,
    Fence,
    FenceRow,
    Heartbeat,
    Position,
    RowChange,
    SchemaChange,
    SchemaOpKind,
    Source,
    TablePlan,
    Truncate,
    beside_plan,
    is_beside,
)
from warpd.connectors.registry import destination_factory, source_factory
from warpd.engine import activity
from warpd.engine.applier import DestinationPool, TableApplier
from warpd.engine.batch import compact
from warpd.engine.cascades import ForeignKeyCascades
from warpd.engine.hooks import EngineHooks
from warpd.engine.progress import SnapshotProgress
from warpd.engine.retry import Backoff, Stopped, call_with_retry
from warpd.engine.shapes import LockedMap
from warpd.errors import ConfigError, FatalError, PositionLostError, SupersededError, TransientError
from warpd.redact import redact
from warpd.state.store import StateStore
from warpd.types import Kind, TableSchema, is_widening

log = logging.getLogger(__name__)

IDLE_CHECKPOINT_SECONDS = 1.0
# A batch is applied once its changes take about this much memory, whatever batch_size says
# (sources that know their events' sizes: MongoDB documents can reach 16 MB each).
BATCH_BYTES = 64 * 1024 * 1024
# While a destination's min_flush_interval holds full batches back, at most this many batches of one
# table's changes wait for it (a bound on memory where the source gives no event sizes: MySQL).
COALESCE_BATCHES = 20
STATS_EVERY_SECONDS = 30.0
# the development fault point (DEVELOPMENT.md, "Fault injection"): the schema process dies after the destination
# committed this many streaming batches, before the state file records the last one
FAULT_AFTER_DEST_COMMIT = "WARP_FAULT_AFTER_DEST_COMMIT"


@dataclass
class _Batch:
    """A streaming batch: its changes in source order, and the checkpoint stored once they are applied."""

    id: int
    changes: list[RowChange]
    position: Position
    source_ts: float | None
    seq: int = 0  # numbers the batches of the state file and of the destination fence
    # row changes of each table after ``position`` the batch holds (cut inside a source transaction)
    skip: dict[str, int] = field(default_factory=dict)


@dataclass
class _Recovery:
    """A batch the destination fence holds (in part) and the state file does not: it is rebuilt from
    the stream up to where it ended, and only what the fence does not cover is applied."""

    seq: int
    target: Position
    position: str  # where it ends (canonical JSON) ...
    skip: Mapping[str, int]  # ... and how many row changes of each table after that position it holds
    rows: dict[str, list[FenceRow]]  # table -> its parts' fence rows of this batch


def _canonical(position: Mapping[str, Any]) -> str:
    return json.dumps(dict(position), sort_keys=True, default=str)


def _reaches(read: Mapping[str, int], end: Mapping[str, int], streamed: Callable[[str], bool]) -> bool:
    """Whether ``read`` (row changes of each table read after a position) is where a batch holding
    ``end`` ends.  Counts per table, so a table the filters leave out now (``streamed`` False) does
    not count, and a table let in since (absent from ``end``) is not part of the batch; counts
    recorded as a total (``""``, before they were kept per table) compare as totals."""
    if "" in end or "" in read:
        return sum(read.values()) == sum(end.values())
    return all(read.get(t, 0) == n for t, n in end.items() if streamed(t))


def _beyond(read: Mapping[str, int], end: Mapping[str, int]) -> bool:
    """Whether ``read`` went past the end of a batch holding ``end`` (see :func:`_reaches`)."""
    if "" in end or "" in read:
        return sum(read.values()) > sum(end.values())
    return any(read.get(t, 0) > n for t, n in end.items())


def _described(skip: Mapping[str, int]) -> str:
    """Per-table counts for a log line."""
    return ", ".join(f"{t or 'any table'}: {n}" for t, n in sorted(skip.items())) or "none"


class SchemaRunner:
    """Replicates one configured schema until ``should_stop()`` turns true."""

    def __init__(
        self,
        config: Config,
        schema: SchemaConfig,
        store: StateStore | None,
        should_stop: Callable[[], bool] = lambda: False,
        hooks: EngineHooks | None = None,
    ):
        """``store`` may be None only for planning (``--dry-run``), which writes nothing."""
        self.config = config
        self.schema = schema
        self.name = schema.name
        self._store = store
        self.should_stop = should_stop
        self.hooks = hooks or EngineHooks()  # paused tables, resyncs beside the stream (engine/control.py)
        self.source: Source = self.new_source()
        make_dest = destination_factory(config.destination.type)
        app = f"cartridge-warp {schema.name}"[:63]
        self.dest: Destination = make_dest(config.destination.connection_string, app)
        self.pool = DestinationPool(
            lambda: make_dest(config.destination.connection_string, app), self.dest.capabilities
        )
        caps = self.dest.capabilities
        # the source encodes snapshot rows server-side only in a format the destination loads as it is
        self._bulk_format: str | None = min(
            caps.bulk_formats & frozenset(getattr(self.source, "bulk_formats", ())), default=None
        )
        # written by this thread only; other threads read them (engine/shapes.py)
        self.tables: LockedMap[TableSchema] = LockedMap()
        self.plans: LockedMap[TablePlan] = LockedMap()
        self.appliers: dict[str, TableApplier] = {}
        self.applied_events = 0
        #: "starting", "snapshotting", "streaming" or "stopped": what readiness probes and status report
        self.phase = "starting"
        self.batch_id = 0  # numbers streaming batches in log lines (correlation id)
        self.last_source_ts: float | None = None
        self.global_retry = schema.table_settings("").retry
        # a source that infers table shapes from its data (MongoDB) only ever widens them
        self._infers_shapes = bool(getattr(self.source, "infers_shapes", False))
        # foreign-key actions the source's change log does not carry (refused, emulated or ignored)
        self.cascades = ForeignKeyCascades(self.name, schema, self.source, self._retry)
        if hasattr(self.source, "update_before_keys_only"):
            # the old key is all the engine reads of an UPDATE's before image, unless it emulates
            # foreign-key actions (they read the parent's referenced columns)
            self.source.update_before_keys_only = lambda: not self.cascades.active
        # a source whose every change is a resume point (MongoDB) checkpoints a busy stream too
        self._positions_per_change = bool(getattr(self.source, "positions_per_change", False))
        # orders a change-log event against a copy's start (Source.precedes); None: the source cannot
        self._precedes: Callable[[Position, Position], bool] | None = getattr(self.source, "precedes", None)
        # table -> where the change log stood before its complete copy started: replayed events of the
        # table at or before it are in the copy already, and are skipped (see _in_copy)
        self.copy_positions: dict[str, Position] = {}
        # table -> (the position read before its shape was described, that shape): the start of its next copy
        self._described_at: dict[str, tuple[Position, TableSchema]] = {}
        self.skipped_in_copy: Counter[str] = Counter()
        # the streaming batch being applied by the committer thread while the stream reads on (_flush),
        # for a source that says it gains from it (Source in base.py: pipelined_apply)
        self._pipelined = bool(getattr(self.source, "pipelined_apply", False))
        # a destination whose writes are billed jobs (BigQuery) asks for a pause between two flushes:
        # full batches and the latency bound wait for it, coalescing (schema changes and stops do not)
        self._min_flush = float(self.dest.capabilities.min_flush_interval or 0.0)
        if self._min_flush > 0:
            # its writes are jobs the destination runs while this thread waits on the network: the
            # stream reads on meanwhile, and the next batch holds what arrived during the job
            self._pipelined = True
        # a destination that keeps each row's source order gets it from sources that have one
        self._order_of = (
            getattr(self.source, "order_key", None) if self.dest.capabilities.ordered_writes else None
        )
        self._flushed_at = -math.inf  # monotonic() starts near 0 at boot: the first flush is never held back
        self._committer: ThreadPoolExecutor | None = None
        self._inflight: tuple[Future[None], _Batch] | None = None
        # the destination records each streaming batch in its transactions (Capabilities.fenced_writes)
        self._fenced = bool(self.dest.capabilities.fenced_writes)
        self._fence_where = schema.checkpoint_schema or schema.destination_schema
        self._seq = 0  # the last batch number given (see _Batch.seq)
        self._since_safe: Counter[str] = Counter()  # row changes of each table read since safe_pos moved
        self._skip_left: Counter[str] = Counter()  # row changes the reopened stream repeats, held already
        self._recovery: _Recovery | None = None
        # a fenced batch that failed part way (some parts committed): applied again with the same number
        # and bounds, only what the fence lacks, before anything newer (_apply_failed)
        self._failed: _Batch | None = None
        self._epoch = 0  # this writer's, taken at start (_take_over): a newer one stops it
        self.guard: Fence | None = None  # its check in writes outside streamed batches (Fence.guard)
        self._fault_after = int(os.environ.get(FAULT_AFTER_DEST_COMMIT) or 0)
        self._batches_committed = 0
        self._check_capabilities()

    def describe_destination(self) -> str:
        """What the destination declared and what was negotiated with the source, in one line."""
        caps = self.dest.capabilities
        decimals = (
            f"decimals up to {caps.max_decimal_precision} digits as numbers"
            if caps.max_decimal_precision
            else "decimals of any precision"
        )
        return (
            f"{caps.name}: names up to {caps.max_identifier_length} {caps.identifier_unit} (longer ones renamed), "
            f"{caps.max_columns} columns per table, JSON as {caps.json}, {decimals}, "
            f"{'transactional' if caps.transactional_ddl else 'non-transactional'} DDL; rows of an initial copy "
            + (f"encoded by the source server ({self._bulk_format})" if self._bulk_format else "encoded here")
        )

    def _all_settings(self) -> list[tuple[str, Any]]:
        """The schema's default table settings (name "") and those of each table override."""
        names = ["", *self.schema.table_overrides]
        return [(name, self.schema.table_settings(name)) for name in names]

    def _check_capabilities(self) -> None:
        """Refuse settings the destination cannot honour, before anything is read or written."""
        caps = self.dest.capabilities
        if self._infers_shapes:
            # the overflow column and every metadata column come on top of max_columns
            room = caps.max_columns - 1 - len(RESERVED_COLUMNS)
            for name, settings in self._all_settings():
                if settings.max_columns > room:
                    where = f"table {name!r} of schema {self.name!r}" if name else f"schema {self.name!r}"
                    raise ConfigError(
                        f"max_columns {settings.max_columns} for {where} does not fit the {caps.name} "
                        f"destination, which holds {caps.max_columns} columns per table; set max_columns "
                        f"to {room} or less"
                    )
        if not caps.foreign_key_actions:
            emulated = [
                name or "(schema default)"
                for name, settings in self._all_settings()
                if settings.foreign_key_cascades == "emulate"
            ]
            if emulated:
                raise ConfigError(
                    f"schema {self.name!r}: foreign_key_cascades: emulate is set ({', '.join(emulated)}), but the "
                    f"{caps.name} destination cannot run emulated foreign-key actions; use refuse (the "
                    "default) or ignore, or replicate into PostgreSQL"
                )

    def new_source(self) -> Source:
        """A source connector for this schema, with its per-table settings (another thread's own)."""
        src = self.config.source
        source: Source = source_factory(src.type)(
            src.connection_string, self.schema.source_database, self.name, self.schema.source_options(src)
        )
        configure = getattr(source, "configure", None)
        if configure is not None:
            configure(self.schema.table_settings)  # per-table source settings (e.g. MongoDB flatten_depth)
        return source

    @property
    def store(self) -> StateStore:
        if self._store is None:
            raise RuntimeError("no state store: this runner was built for planning only")
        return self._store

    # -- helpers -------------------------------------------------------------
    def _retry(self, fn: Callable[[], Any], what: str, reset: Callable[[], None] | None = None) -> Any:
        def on_retry(exc: BaseException) -> None:
            metrics.error(self.name, type(exc).__name__)
            self.dest.reset()
            self.source.reset()
            if reset:
                reset()

        return call_with_retry(
            fn,
            self.global_retry,
            is_transient=self._is_transient,
            what=what,
            should_stop=self.should_stop,
            on_retry=on_retry,
        )

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, TransientError) or self.dest.is_transient(exc) or self.source.is_transient(exc)

    def _skippable(self, table: str) -> bool:
        """Whether the source may pass over an event of ``table`` it cannot turn into changes.

        A paused table is copied again on resume, so its events are not needed, unless it is
        the parent of emulated foreign-key actions: its children need every one of its changes.
        """
        return self.hooks.skips(table) and not self.cascades.drives_children(table)

    def _key_override(self, table: str) -> tuple[str, ...] | None:
        return self.schema.table_settings(table).key_columns

    def _plan(self, table: TableSchema) -> TablePlan:
        settings = self.schema.table_settings(table.name)
        return self.dest.plan(
            table,
            self.schema.destination_schema,
            soft_delete=settings.deletes == "soft",
            metadata=settings.metadata_columns,
        )

    def _track(self, table: TableSchema) -> TablePlan:
        """Start (or continue) replicating ``table`` with this shape; prepare the destination."""
        old = self.appliers.pop(table.name, None)
        if old:
            old.close()
        plan = self._place(self._plan(table))
        ddl = self._retry(lambda: self.dest.prepare(plan, **self._guarded()), f"preparing {plan.where}")
        for stmt in ddl:
            log.info("destination DDL: %s", stmt)
        self.tables[table.name] = table
        self.plans[table.name] = plan
        self.appliers[table.name] = applier = TableApplier(
            self.name,
            plan,
            self.schema.table_settings(table.name),
            self.pool,
            self._dead_letter,
            self.should_stop,
        )
        applier.guard = self.guard
        return plan

    def _dead_letter(
        self, table: str, op: str, row: dict[str, Any], reason: str, position: Position | None
    ) -> None:
        self.store.add_dead_letter(self.name, table, op, row, reason, position)

    def _place(self, plan: TablePlan) -> TablePlan:
        """Where ``plan``'s rows go: its live table, or a table beside it while a fresh copy is made.

        A snapshot that starts over an existing destination table of another
        shape (another key, other column types: e.g. a new state directory with
        other ``key_columns``) must not empty it before the new copy is known
        to fit: it copies into a table beside it, swapped in when complete.
        """
        name, where = plan.source.name, plan.where
        beside = beside_plan(plan)
        progress = self.store.snapshot_progress(self.name).get(name)
        status = progress.status if progress is not None else None
        if self._retry(lambda: self.dest.table_exists(beside), f"looking up {beside.dest_table!r}"):
            if status == "done":  # complete, and not swapped in yet (a crash came between the two)
                for stmt in self._retry(
                    lambda: self.dest.swap_in(beside, plan, **self._guarded()), f"swapping {where} in"
                ):
                    log.info("destination DDL: %s", stmt)
                log.warning("%s: the new copy replaced the old table", where)
                return plan
            if status is not None and self._retry(lambda: self.dest.misfit(beside), where) is None:
                return beside  # resume its copy
            self._retry(
                lambda: self.dest.drop(beside, **self._guarded()), f"dropping {beside.dest_table!r}"
            )  # stale
            if status is not None:
                self.store.set_snapshot_progress(self.name, name, "pending", None, 0)
        copying = status is not None and status != "done"
        why = self._retry(lambda: self.dest.misfit(plan), f"checking {where}") if copying else None
        if why is None:
            return plan
        log.warning(
            "%s holds rows of another shape (%s); the new copy is made beside it, in %s.%s, and "
            "replaces it only when complete; until then the old rows stay as they are",
            where,
            why,
            beside.dest_schema,
            beside.dest_table,
        )
        self.store.set_snapshot_progress(self.name, name, "pending", None, 0)
        return beside

    def _restart_copy(self, copying: TableSchema, current: TableSchema) -> None:
        """An interrupted copy of ``copying`` cannot resume: the source table has another shape now.

        Its destination table has the old shape's columns (a column dropped at the source since would
        stay, and the DDL that dropped it is replayed against the new shape, where it changes
        nothing), so the copy starts over from an empty table of the current shape.
        """
        log.warning(
            "schema %s: the interrupted copy of %r was of another shape than the source table has now; "
            "copying it again from the start",
            self.name,
            current.name,
        )
        plan = self._plan(copying)
        for stale in (plan, beside_plan(plan)):
            self._retry(lambda: self.dest.drop(stale, **self._guarded()), f"dropping {stale.dest_table!r}")  # noqa: B023
        self.store.set_snapshot_progress(self.name, current.name, "pending", None, 0)

    def _untrack(self, name: str) -> None:
        applier = self.appliers.pop(name, None)
        if applier:
            applier.close()
        self.copy_positions.pop(name, None)
        self._described_at.pop(name, None)
        self.tables.pop(name, None)
        self.plans.pop(name, None)

    def close(self) -> None:
        if self._inflight is not None:
            try:
                self._drain()  # committed: its checkpoint is worth keeping
            except BaseException as exc:  # noqa: BLE001 - closing after an error; its changes are replayed
                log.debug("schema %s: the batch in flight failed while closing: %s", self.name, exc)
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None
        for applier in self.appliers.values():
            applier.close()
        self.pool.close()
        self.dest.close()
        self.source.close()

    # -- planning (also used by --dry-run) -----------------------------------
    def discover(self) -> dict[str, TableSchema]:
        """Included tables and their current shapes at the source."""
        names = [
            t
            for t in self._retry(self.source.list_tables, "listing source tables")
            if self.schema.includes(t)
        ]
        return {t: self._describe(t) for t in names}

    def _describe(self, table: str) -> TableSchema:
        return self._retry(
            lambda: self.source.describe(table, self._key_override(table)), f"describing {table!r}"
        )

    def plan_of(self, table: str, shape: TableSchema | None = None) -> TablePlan:
        """Where ``table``'s current shape at the source (or ``shape``) is written (``verify``)."""
        return self._plan(self._describe(table) if shape is None else shape)

    def plan_report(self) -> list[dict[str, Any]]:
        out = []
        current = self.discover()
        self.cascades.refresh(current)  # a schema start-up would refuse is refused here too
        for name, table in current.items():
            settings = self.schema.table_settings(name)
            plan = self._plan(table)
            out.append(
                {
                    "table": name,
                    "destination": plan.where,
                    "key": list(table.key) or ["(none: whole-row hash)"],
                    "max_parallel_streams": settings.max_parallel_streams,
                    "batch_size": settings.batch_size,
                    "snapshot_chunk_size": settings.snapshot_chunk_size,
                    "deletes": settings.deletes,
                    "metadata_columns": settings.metadata_columns,
                    "estimated_rows": self.source.estimate_rows(name),
                    "ddl": self.dest.plan_ddl(plan),
                }
            )
        return out

    # -- the run -------------------------------------------------------------
    def run(self) -> None:
        # Change events allocate many short-lived objects and few cycles: a collector that runs every
        # 700 allocations costs ~30 % of a MongoDB stream (scripts/bench/mongodb_to_postgres.py).
        gc.freeze()
        gc.set_threshold(100_000, 20, 20)
        with self.running():
            while True:
                self._start()
                self.phase = "snapshotting"
                self._snapshot_pending()
                if self.should_stop():
                    break
                try:
                    self._stream()
                    break
                except PositionLostError as exc:
                    if self.schema.on_position_lost != "resnapshot":
                        raise
                    log.warning(
                        "schema %s: %s; on_position_lost=resnapshot, so every table is copied again",
                        self.name,
                        exc,
                    )
                    for name in list(self.appliers):
                        self._untrack(name)
                    self.store.reset_schema(self.name)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The life of :meth:`run`: a stop during a retry wait ends it quietly, an error is counted, and
        the connections are closed whatever happens."""
        try:
            yield
        except Stopped:
            log.info("schema %s: stopped while waiting to retry", self.name)
        except Exception as exc:
            metrics.error(self.name, type(exc).__name__)
            raise
        finally:
            self.phase = "stopped"
            self.close()

    def _start(self) -> None:
        self._retry(self.source.check_prerequisites, "checking the source")
        # Fail at start-up, not at the first table: a schema with no table yet would otherwise
        # "stream" happily towards a destination it cannot reach.
        self._retry(self.dest.connect, f"connecting to the {self.dest.capabilities.name} destination")
        caps = self.dest.capabilities
        log.info("schema %s: destination %s", self.name, self.describe_destination())
        for note in caps.notes:
            log.info("schema %s: destination: %s", self.name, note)
        checkpoint = self.store.checkpoint(self.name)
        if checkpoint is not None:
            stored = checkpoint
            try:
                self._retry(lambda: self.source.check_position(stored), "checking the checkpoint")
            except PositionLostError:
                if self.schema.on_position_lost != "resnapshot":
                    raise
                log.warning(
                    "schema %s: checkpoint %s is no longer in the binlog; on_position_lost=resnapshot, "
                    "so every table is copied again",
                    self.name,
                    checkpoint,
                )
                self.store.reset_schema(self.name)
                checkpoint = None
        if self._fenced:
            self._take_over(clear=checkpoint is None)
        described_at = self._copy_start()  # before the shapes are read: see _copy_table
        current = self.discover()
        if described_at is not None:
            for name, shape in current.items():
                self._described_at[name] = (described_at, shape)
        self.cascades.refresh(current)  # a refusal comes before anything is written
        if checkpoint is None:
            position = self._retry(self.source.current_position, "reading the source position")
            self.store.save_checkpoint(self.name, position, seq=0)
            checkpoint = position  # the snapshot versions below are as of this position
            for name in current:
                self.store.set_snapshot_progress(self.name, name, "pending", None, 0)
            log.info(
                "schema %s: %d tables to copy; changes will stream from %s", self.name, len(current), position
            )
        for name, mark in self.store.copied_at(self.name).items():
            self.source.table_copied(name, mark)  # copies the stream may not have caught up with yet
        known = self.store.latest_schemas(self.name)
        progress = self.store.snapshot_progress(self.name)
        for name in sorted(set(current) | {t for t in known if self.schema.includes(t)}):
            if name in known and name in progress and progress[name].status == "done":
                table = known[name]  # the shape as of the checkpoint; the binlog replays later DDL
            elif name in current:
                # an interrupted copy of an inferred shape already widened the destination: keep it
                table = known[name] if self._infers_shapes and name in known else current[name]
                if name in known and name in progress and known[name] != table:
                    self._restart_copy(known[name], table)
                if name not in progress:
                    self.store.set_snapshot_progress(self.name, name, "pending", None, 0)
            else:
                continue
            self.store.record_schema_version(self.name, table, "snapshot", position=checkpoint)
            self._track(table)
        self.cascades.record(self.store, self.tables, checkpoint, self.dest, self.plans)
        self.copy_positions = {
            name: mark for name, mark in self.store.copied_from(self.name).items() if name in self.tables
        }
        if not self.tables:
            log.warning(
                "schema %s: no source table in %r matches the whitelist/blacklist; waiting for "
                "tables to be created",
                self.name,
                self.schema.source_database,
            )

    # -- snapshot ------------------------------------------------------------
    def _snapshot_pending(self) -> None:
        for name, prog in sorted(self.store.snapshot_progress(self.name).items()):
            if prog.status == "done" and name in self.tables:  # copied by an earlier run
                metrics.snapshot_progress(self.name, name, prog.rows_copied, prog.rows_estimated, done=True)
            if prog.status != "done" and name in self.tables and not self.hooks.skips(name):
                if self.should_stop():
                    return
                self._snapshot_table(name)

    def _snapshot_table(
        self, name: str, statement: str | None = None, position: Mapping[str, Any] | None = None
    ) -> None:
        """Copy ``name`` (resuming its last committed chunk); ``statement``/``position`` say why, for a resync."""
        backoff = Backoff(self.global_retry, f"snapshot of {self.name}.{name}", self.should_stop)
        reshaped = 0
        while True:
            try:
                with logs.bind(table=name):
                    self._copy_table(name)
                progress = self.store.snapshot_progress(self.name).get(name)
                if progress is not None and progress.status == "done":  # not paused by a stop
                    mark = self._retry(lambda: self.source.table_copied(name), f"noting the copy of {name!r}")
                    self.store.set_copied_at(self.name, name, mark)
                    started = self.store.copied_from(self.name).get(name)
                    if started is not None:
                        self.copy_positions[name] = started
                    else:
                        self.copy_positions.pop(name, None)
                    if is_beside(self.plans[name]):
                        self._track(self.tables[name])  # swaps the complete copy in
                backoff.succeeded()
                return
            except Exception as exc:  # noqa: BLE001 - transient ones resume from the last committed chunk
                if not self._is_transient(exc):
                    # e.g. "Unknown column": DDL changed the table between describing and reading it
                    if (
                        not self._infers_shapes
                        and reshaped < self.global_retry.max_attempts
                        and self._replan_if_reshaped(name, statement, position)
                    ):
                        reshaped += 1
                        if name not in self.tables:
                            return  # dropped meanwhile; the stream drops it at the destination too
                        log.warning(
                            "%s.%s changed shape while it was copied (%s); copying it again",
                            self.name,
                            name,
                            redact(exc),
                        )
                        continue
                    raise
                metrics.error(self.name, type(exc).__name__)
                delay = backoff.failed(exc, "resuming from the last committed chunk")
                self.source.reset()
                self.dest.reset()
                backoff.wait(delay)

    def _replan_if_reshaped(
        self, name: str, statement: str | None, position: Mapping[str, Any] | None
    ) -> bool:
        """If ``name`` no longer has the shape being copied, start its copy over with the current one."""
        described_at = self._copy_start()
        exists = self._retry(lambda: self.source.table_exists(name), f"looking up {name!r}")
        current = self._describe(name) if exists else None
        if current == self.tables.get(name):
            return False
        plan = self.plans.get(name)
        if plan is not None:
            self._retry(lambda: self.dest.drop(plan, **self._guarded()), f"dropping {plan.dest_table!r}")
        self._untrack(name)
        if current is None:
            self.store.forget_snapshot(self.name, name)
            return True
        self.store.record_schema_version(
            self.name, current, "resync", statement, position or self.store.checkpoint(self.name)
        )
        metrics.schema_evolution(self.name, name, "resync_table")
        self._track(current)
        if described_at is not None:
            self._described_at[name] = (described_at, current)
        self.store.set_snapshot_progress(self.name, name, "pending", None, 0)
        return True

    def _copy_table(self, name: str) -> None:
        table = self.tables[name]
        plan = self.plans[name]
        settings = self.schema.table_settings(name)
        prog = self.store.snapshot_progress(self.name).get(name)
        resume = prog.resume_after if prog else None
        done_rows = prog.rows_copied if prog and resume else 0
        if resume is None:
            self._retry(
                lambda: self.dest.truncate(plan, **self._guarded()),
                f"emptying {plan.dest_table!r} before its snapshot",
            )
        estimate = self.source.estimate_rows(name)
        self.store.set_snapshot_progress(self.name, name, "running", resume, done_rows, estimate)
        if resume is None:
            # Every chunk is read from here on, after this position, and the shape being copied was
            # read after it too: each change committed at or before it is in the copy. Kept while the
            # copy resumes; unknown (None) when the shape was not read after such a position.
            described = self._described_at.get(name)
            started = described[0] if described is not None and described[1] == table else None
            self.store.set_copied_from(self.name, name, started)
        display = SnapshotProgress(self.name, name, estimate, done_rows)
        metrics.snapshot_progress(self.name, name, done_rows, estimate)
        chunks: queue.Queue[Any] = queue.Queue(maxsize=2)
        failure: list[BaseException] = []

        def writer() -> None:
            copied = done_rows
            while True:
                chunk = chunks.get()
                if chunk is None or failure:
                    return
                try:
                    if chunk.schema is not None and chunk.schema != self.tables.get(name):
                        self._evolve(chunk.schema, "snapshot rows need a wider shape", None)
                    self.appliers[name].copy_snapshot(chunk)
                    copied += len(chunk.rows)
                    self.store.set_snapshot_progress(
                        self.name, name, "done" if chunk.done else "running", chunk.resume_after, copied
                    )
                    display.advance(len(chunk.rows))
                    metrics.events_applied(self.name, name, "snapshot", len(chunk.rows))
                    metrics.snapshot_progress(self.name, name, copied, estimate, done=chunk.done)
                except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                    failure.append(exc)
                    return

        thread = threading.Thread(
            target=contextvars.copy_context().run, args=(writer,), name=f"snapshot-{name[:20]}", daemon=True
        )
        thread.start()
        finished = False
        try:
            # a source offering no bulk format is called without the argument
            fmt = {"bulk_format": self._bulk_format} if self._bulk_format else {}
            chunks_read = self.source.snapshot(table, resume, settings.snapshot_chunk_size, **fmt)
            for chunk in activity.current().each(chunks_read, f"reading a snapshot chunk of {name!r}"):
                while not failure:
                    try:
                        chunks.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if failure:
                    break
                if chunk.done:
                    finished = True
                    break
                if self.should_stop():
                    log.info(
                        "snapshot of %s.%s paused at %s rows; it resumes there on restart",
                        self.name,
                        name,
                        f"{display.rows:,}",
                    )
                    break
        finally:
            chunks.put(None)
            thread.join()
        if failure:
            raise failure[0]
        if finished:
            display.finish()

    # -- streaming -----------------------------------------------------------
    def _stream(self) -> None:
        checkpoint = self.store.checkpoint(self.name)
        assert checkpoint is not None
        self.safe_pos: Mapping[str, Any] = dict(checkpoint)
        self.saved_pos = dict(checkpoint)
        self.pending: list[RowChange] = []
        self.pending_counts: dict[str, int] = {}
        self.pending_bytes = 0
        self.batch_started = 0.0
        self.last_saved_at = time.monotonic()
        self._stats_at, self._stats_events = time.monotonic(), 0
        self._seq, skip = self.store.checkpoint_mark(self.name)
        # applied already: the first row changes read of each table (per table, so the count stays
        # right when the table filters changed since: a table left out is not read, a new one not held)
        self._since_safe, self._skip_left = Counter(skip), Counter(skip)
        self._recovery = self._fenced_batch() if self._fenced else None
        backoff = Backoff(self.global_retry, "reading the change stream", self.should_stop)
        log.info("schema %s: streaming changes from %s", self.name, checkpoint)
        self.phase = "streaming"
        while True:
            try:
                for event in self.source.stream(
                    self.safe_pos,
                    self.tables.view(),
                    self.schema.includes,
                    self._key_override,
                    self._skippable,
                ):
                    backoff.succeeded()
                    self._handle(event)
                    if self.should_stop():
                        if self._recovery is not None and not self._at_end_of(self._recovery):
                            log.info(
                                "schema %s: stopped before batch %d was rebuilt; it is rebuilt at the next start",
                                self.name,
                                self._recovery.seq,
                            )
                            return
                        self._flush()
                        log.info("schema %s: stopped at %s", self.name, self.saved_pos)
                        return
                return
            except Exception as exc:  # noqa: BLE001 - the stream is reopened from the last safe position
                if not self._is_transient(exc):
                    raise
                metrics.error(self.name, type(exc).__name__)
                self.source.close()
                self._skip_left = Counter(self._since_safe)  # held already (pending, in flight or applied)
                delay = backoff.failed(exc, f"schema {self.name}: reconnecting from {self.safe_pos}")
                try:
                    backoff.wait(delay)
                except Stopped:
                    if self._recovery is None:
                        self._flush()
                    return

    def _guarded(self) -> dict[str, Any]:
        """``fence=`` for a destination call outside streamed batches (DDL, TRUNCATE, drops): the
        writer's epoch check (Fence.guard), once this process took the schema over."""
        return {} if self.guard is None else {"fence": self.guard}

    def _take_over(self, clear: bool) -> None:
        """Become the schema's writer at the destination: a newer epoch in its fence, which stops any
        other process still writing it; ``clear``: a new state file, whose batch numbers start over."""
        where, dest = self._fence_where, self.dest
        if clear:
            self._retry(
                lambda: dest.clear_fence(where, self.name),  # type: ignore[attr-defined]
                f"clearing the fence of {self.name!r}",
            )
        self._epoch = self._retry(
            lambda: dest.take_over(where, self.name),  # type: ignore[attr-defined]
            f"taking over {self.name!r} in {where}",
        )
        self.guard = Fence.guard(where, self.name, self._epoch)
        for applier in self.appliers.values():
            applier.guard = self.guard
        log.info("schema %s: writing as epoch %d (%s.%s)", self.name, self._epoch, where, FENCE_TABLE)

    def _fenced_batch(self) -> _Recovery | None:
        """The batch the destination fence holds (in part) beyond the state file's checkpoint, if any."""
        rows: list[FenceRow] = self._retry(
            lambda: self.dest.read_fence(self._fence_where, self.name),  # type: ignore[attr-defined]
            f"reading the fence of {self.name!r}",
        )
        ahead = [row for row in rows if row.seq > self._seq and row.table]  # (table "": the epoch)
        if not ahead:
            return None
        last = max(row.seq for row in ahead)
        if any(row.seq != self._seq + 1 for row in ahead):
            # Only the batch right after the state file's starts where the state file stands: a fence
            # further ahead (an older state file restored; a batch that failed part way and was applied
            # again inside a later one) cannot be matched row by row, so those changes apply again.
            log.warning(
                "schema %s: the destination fence holds batches %s after the state file's %d; the changes "
                "since the state file's checkpoint are applied again (at least once)",
                self.name,
                sorted({row.seq for row in ahead}),
                self._seq,
            )
            self._seq = last  # the next batches are numbered after every one the fence holds
            return None
        first = next(row for row in ahead if row.seq == last)
        recovery = _Recovery(last, dict(first.position), _canonical(first.position), first.skip_tables, {})
        for row in ahead:
            if row.seq == last:
                recovery.rows.setdefault(row.table, []).append(row)
        log.info(
            "schema %s: the destination committed batch %d (%s, row changes on: %s) after the state file's "
            "checkpoint; rebuilding it from the stream to apply only what it lacks",
            self.name,
            last,
            recovery.position,
            _described(recovery.skip),
        )
        return recovery

    def _past_end_of(self, recovery: _Recovery) -> bool:
        """Whether the stream read went past the end of the batch being rebuilt without meeting it."""
        here = _canonical(self.safe_pos)
        if here == recovery.position:
            return _beyond(self._since_safe, recovery.skip)
        return self._precedes is not None and not self._precedes(self.safe_pos, recovery.target)

    def _at_end_of(self, recovery: _Recovery) -> bool:
        """Whether the stream read is where the batch being rebuilt ended."""
        return _canonical(self.safe_pos) == recovery.position and _reaches(
            self._since_safe, recovery.skip, self.schema.includes
        )

    def _held(self, table: str) -> bool:
        """Whether the next row change of ``table`` read is one the destination holds already (and
        count it off): the first ones of each table after the checkpoint's position, by its counts;
        counts recorded as a total (``""``) stand for the first row changes of any table."""
        left = self._skip_left
        for key in ("", table):
            if left.get(key, 0) > 0:
                left[key] -= 1
                if not left[key]:
                    del left[key]
                return True
        return False

    def _handle(self, event: Any) -> None:
        now = time.monotonic()
        if isinstance(event, RowChange):
            if self._skip_left and self._held(event.table):
                return  # applied already: the checkpoint (or the stream before it reopened) holds it
            recovery = self._recovery
            if recovery is not None and self._at_end_of(recovery):
                if self.pending:
                    self._flush()  # the rebuilt batch, whole, failed once and is retried before reading on
                else:  # none of its changes is of a table replicated now (the table filters changed)
                    log.info(
                        "schema %s: batch %d, which the destination holds, has no change of the tables "
                        "replicated now; reading on after it",
                        self.name,
                        recovery.seq,
                    )
                    self._recovery = None
                    self._seq = max(self._seq, recovery.seq)
            self._since_safe[event.table] += 1
        if self.copy_positions and self._in_copy(event):
            pass  # its table's copy holds its effect already
        elif isinstance(event, RowChange):
            if self.cascades.active:
                if self.cascades.splits(event) and self._recovery is None:
                    self._flush()
                self.cascades.note(event)
            if not self.pending:
                self.batch_started = now
            self.pending.append(event)
            self.pending_bytes += event.size
            if self._positions_per_change:
                self.safe_pos = event.position  # saved once this change is applied (_flush)
                self._since_safe = Counter()
            count = self.pending_counts.get(event.table, 0) + 1
            self.pending_counts[event.table] = count
            batch_size = self.schema.table_settings(event.table).batch_size
            if self._recovery is not None:
                pass  # flushed once whole again (below)
            elif (
                (count >= batch_size and self._may_flush(now))
                or count >= batch_size * COALESCE_BATCHES  # memory, where the source gives no sizes (MySQL)
                or self.pending_bytes >= BATCH_BYTES
            ):
                self._flush(wait=not self._pipelined)
        elif isinstance(event, Heartbeat):
            if event.position is not None:
                if _canonical(event.position) != _canonical(self.safe_pos):
                    self._since_safe = Counter()
                self.safe_pos = dict(event.position)
                if self.copy_positions:
                    self._caught_up(event.position)
            if event.source_ts is not None:
                self.last_source_ts = event.source_ts
                if not self.pending and self._inflight is None:  # everything before this point is applied
                    metrics.set_lag(self.name, time.time() - event.source_ts)
        elif isinstance(event, (SchemaChange, Truncate)):
            self._flush()
            with self.hooks.changing(event):
                if isinstance(event, Truncate):
                    self._truncate(event)
                else:
                    self._schema_change(event)
                    self.cascades.schema_changed(
                        self.store, self.tables, event.position, self.dest, self.plans
                    )
            self.safe_pos = dict(event.position)
            self._since_safe = Counter()
            self._save(event.source_ts)
        if self._recovery is not None and self.pending:
            if self._at_end_of(self._recovery) or self._past_end_of(self._recovery):
                self._flush()  # the batch the fence holds in part is whole again (or never will be)
        if self._inflight is not None and self._inflight[0].done():
            self._drain()  # committed: store its checkpoint now, not at the next flush
        if (
            self.pending
            and self._recovery is None
            and now - self.batch_started >= self.schema.max_batch_latency
            and self._may_flush(now)
        ):
            self._flush(wait=not self._pipelined)
        elif (
            not self.pending
            and self.safe_pos != self.saved_pos
            and now - self.last_saved_at >= IDLE_CHECKPOINT_SECONDS
        ):
            self._save(self.last_source_ts)
        if now - self._stats_at >= STATS_EVERY_SECONDS:
            rate = (self.applied_events - self._stats_events) / (now - self._stats_at)
            lag = time.time() - self.last_source_ts if self.last_source_ts else 0.0
            log.info("schema %s: %.0f events/s, lag %.1fs, position %s", self.name, rate, lag, self.saved_pos)
            self._stats_at, self._stats_events = now, self.applied_events

    def _may_flush(self, now: float) -> bool:
        """Whether a full or overdue batch may be flushed now.  Always, but for a destination with a
        minimum flush interval: not before the interval since the last flush, and not while a batch
        is still being written (the next one grows meanwhile: one job per table for all of it)."""
        if not self._min_flush:
            return True
        if now - self._flushed_at < self._min_flush:
            return False
        return self._inflight is None or self._inflight[0].done()

    def _copy_start(self) -> Position | None:
        """The source position to read before a copy's shape is, when the source can order events by it."""
        if self._precedes is None:
            return None
        return self._retry(self.source.current_position, "reading the source position")

    def _in_copy(self, event: Any) -> bool:
        """Whether ``event`` is one its table's complete copy already holds (docs/how-it-works.md).

        That copy started (read its shape and then every row) after its ``copy_positions`` mark, so
        a change committed at or before the mark is in it, and replaying it would only take rows
        back to older images (or old shapes, which ask for the table to be copied yet again).
        Renames are not skipped (they concern two names); nothing is skipped while foreign-key
        actions are emulated (a parent's change acts on other tables, copied at other positions).
        """
        if isinstance(event, Heartbeat) or self._precedes is None:
            return False
        if isinstance(event, SchemaChange) and event.kind is SchemaOpKind.RENAME_TABLE:
            return False
        mark = self.copy_positions.get(event.table)
        if mark is None or self.cascades.active:
            return False
        at = getattr(event, "at", None) or event.position
        if not self._precedes(at, mark):
            return False
        if not self.skipped_in_copy[event.table]:
            log.info(
                "schema %s: %r was copied from %s on; replayed changes of it up to there are in the "
                "copy already and are skipped",
                self.name,
                event.table,
                mark,
            )
        self.skipped_in_copy[event.table] += 1
        return True

    def _caught_up(self, position: Position) -> None:
        """The stream (and so any reopening of it) is past ``position``: forget the copy marks before it."""
        assert self._precedes is not None
        for name, mark in list(self.copy_positions.items()):
            if self._precedes(mark, position):
                self.copy_positions.pop(name, None)  # (a resync beside the stream may have just done so)
                skipped = self.skipped_in_copy.pop(name, 0)
                if skipped:
                    log.info(
                        "schema %s: %r: the stream caught up with its copy; %d replayed changes were "
                        "already in it",
                        self.name,
                        name,
                        skipped,
                    )

    def _save(self, source_ts: float | None) -> None:
        self._drain()  # a batch still being applied holds changes from before safe_pos
        # nothing is pending: every batch numbered so far is applied, and every row change read since
        self.store.save_checkpoint(
            self.name, self.safe_pos, source_ts, seq=self._seq, skip=dict(self._since_safe)
        )
        self.saved_pos = dict(self.safe_pos)
        self.last_saved_at = time.monotonic()

    def _flush(self, wait: bool = True) -> None:
        """Apply the pending changes as one batch, then store the checkpoint that covers them.

        With ``wait`` False (a full batch on a busy stream, for a source with
        ``pipelined_apply``) the batch is applied by the committer thread while
        this thread reads on: the next flush,
        checkpoint, schema change or stop first waits for it (:meth:`_drain`),
        and only then stores its checkpoint.  At most one batch is in flight.
        """
        if self._failed is not None:
            self._drain()
            self._apply_failed()
        recovery = self._recovery
        if recovery is not None and not self._at_end_of(recovery):
            # the stream changed course before the end of the batch the fence holds (it cannot, but
            # for a source that resumes elsewhere): its changes are applied whole, at least once
            log.warning(
                "schema %s: the stream did not reach the end of batch %d (%s, row changes on: %s) that the "
                "destination holds in part; its changes are applied again",
                self.name,
                recovery.seq,
                recovery.position,
                _described(recovery.skip),
            )
            self._seq = max(self._seq, recovery.seq)
            self._recovery = recovery = None
        if recovery is not None:
            wait = True
        if not self.pending:
            self._drain()
            if self.safe_pos != self.saved_pos:
                self._save(self.last_source_ts)
            return
        self._drain()  # first: a failed batch in flight goes back in front of the pending changes
        self._flushed_at = time.monotonic()
        self.batch_id += 1
        if recovery is None:
            self._seq += 1
        batch = _Batch(
            self.batch_id,
            self.pending,
            dict(self.safe_pos),
            self.pending[-1].source_ts,
            recovery.seq if recovery is not None else self._seq,
            dict(self._since_safe),
        )
        self.pending = []
        self.pending_counts = {}
        self.pending_bytes = 0
        if wait or self.cascades.active:
            try:
                if self.cascades.active:  # before the batch: its child upserts all follow the parent changes
                    self.cascades.apply(batch.changes, self.dest, self.plans, self.hooks, self.store)
                self._apply(batch)
            except BaseException:
                self._unapplied(batch)
                raise
            self._committed(batch)
            return
        if self._committer is None:
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._inflight = (self._committer.submit(contextvars.copy_context().run, self._apply, batch), batch)

    def _apply(self, batch: _Batch) -> None:
        """Write one batch to the destination, table by table (each in parallel by key)."""
        by_table: dict[str, list[RowChange]] = {}
        for ch in batch.changes:
            by_table.setdefault(ch.table, []).append(ch)
        recovery = self._recovery
        for name, changes in by_table.items():
            applier = self.appliers.get(name)
            if applier is None or self.hooks.skips(name):
                continue
            states = compact(changes, applier.key_of, self._order_of)
            fence: Fence | None = None
            done: dict[int, int] = {}
            if self._fenced:
                stored = recovery.rows.get(name, []) if recovery is not None else []
                fence = Fence(
                    table=name,
                    part=0,
                    seq=batch.seq,
                    position=batch.position,
                    skip=sum(batch.skip.values()),
                    skip_tables=batch.skip,
                    # split as before the crash
                    parts=stored[0].parts if stored else applier.parts_for(len(states)),
                    rows_done=0,
                    epoch=self._epoch,
                    where=self._fence_where,
                    schema=self.name,
                )
                done = {row.part: row.rows_done for row in stored}
            with logs.bind(table=name, batch=batch.id):
                with self.hooks.applying(name, states):
                    applier.apply(states.values(), fence, done)
            # counted as the source produced them, before compaction folded repeated changes
            for op, n in Counter(ch.op.value for ch in changes).items():
                metrics.events_applied(self.name, name, op, n)

    def _unapplied(self, batch: _Batch) -> None:
        """A batch that failed goes back in front of the pending changes, as if never taken: a
        retry, or the stream reopened at ``safe_pos``, applies it again.  A fenced batch keeps its
        number and bounds (``_failed``): it is applied again alone, skipping what its parts committed
        before the failure (:meth:`_apply_failed`); for other destinations replays are harmless."""
        if self._fenced:
            self._failed = batch
            self._recovery = None  # (a rebuilt batch that failed again: the same batch, read afresh)
        self.pending[:0] = batch.changes
        for ch in batch.changes:
            self.pending_counts[ch.table] = self.pending_counts.get(ch.table, 0) + 1
            self.pending_bytes += ch.size
        if self.pending:
            self.batch_started = min(self.batch_started, time.monotonic())

    def _apply_failed(self) -> None:
        """Apply again the fenced batch that failed part way, with its number, position and changes
        (the first of the pending ones), skipping the parts and rows its fence rows show committed."""
        failed = self._failed
        assert failed is not None
        count = len(failed.changes)
        rows: list[FenceRow] = self._retry(
            lambda: self.dest.read_fence(self._fence_where, self.name),  # type: ignore[attr-defined]
            f"reading the fence of {self.name!r}",
        )
        done: dict[str, list[FenceRow]] = {}
        for row in rows:
            if row.table and row.seq == failed.seq:
                done.setdefault(row.table, []).append(row)
        self.batch_id += 1
        batch = _Batch(
            self.batch_id, self.pending[:count], failed.position, failed.source_ts, failed.seq, failed.skip
        )
        rest = self.pending[count:]
        self.pending, self.pending_counts, self.pending_bytes = rest, {}, 0
        for ch in rest:
            self.pending_counts[ch.table] = self.pending_counts.get(ch.table, 0) + 1
            self.pending_bytes += ch.size
        log.info(
            "schema %s: applying batch %d again (%d row changes); %d table part(s) of it were committed "
            "before it failed and are not written again",
            self.name,
            failed.seq,
            count,
            sum(len(v) for v in done.values()),
        )
        self._recovery = _Recovery(
            failed.seq, dict(failed.position), _canonical(failed.position), failed.skip, done
        )
        try:
            if self.cascades.active:
                self.cascades.apply(batch.changes, self.dest, self.plans, self.hooks, self.store)
            self._apply(batch)
        except BaseException:
            self._unapplied(batch)
            raise
        self._recovery = None
        self._failed = None
        self._seq = max(self._seq, batch.seq)
        self._committed(batch)

    def _drain(self) -> None:
        """Wait for the batch in flight, if any; store its checkpoint once it is committed."""
        if self._inflight is None:
            return
        future, batch = self._inflight
        self._inflight = None
        try:
            future.result()
        except BaseException:
            self._unapplied(batch)
            raise  # this thread's error now, as if it had applied the batch itself
        self._committed(batch)

    def _committed(self, batch: _Batch) -> None:
        if self._recovery is not None:
            log.info(
                "schema %s: batch %d was committed to the destination before the state file recorded it; "
                "it was rebuilt from the stream and only what the destination lacked was applied",
                self.name,
                batch.seq,
            )
            self._recovery = None
            self._seq = max(self._seq, batch.seq)
        self._batches_committed += 1
        if self._fault_after and self._batches_committed >= self._fault_after:
            log.warning(
                "schema %s: %s: dying after the destination commit", self.name, FAULT_AFTER_DEST_COMMIT
            )
            logging.shutdown()
            os._exit(137)
        self.applied_events += len(batch.changes)
        if batch.source_ts is not None:
            self.last_source_ts = max(self.last_source_ts or 0.0, batch.source_ts)
        if self.last_source_ts is not None:
            metrics.set_lag(self.name, time.time() - self.last_source_ts)
        self.store.save_checkpoint(
            self.name, batch.position, self.last_source_ts, seq=batch.seq, skip=batch.skip
        )
        self.saved_pos = dict(batch.position)
        self.last_saved_at = time.monotonic()

    def _truncate(self, event: Truncate) -> None:
        plan = self.plans.get(event.table)
        if plan is None:
            return
        if plan.soft_delete:
            log.info("TRUNCATE of %s with soft deletes: marking every row deleted", event.table)
            self._retry(
                lambda: self.dest.soft_delete_all(plan, **self._guarded()), f"truncating {plan.dest_table!r}"
            )
        else:
            self._retry(
                lambda: self.dest.truncate(plan, **self._guarded()), f"truncating {plan.dest_table!r}"
            )

    def _schema_change(self, ch: SchemaChange) -> None:
        K = SchemaOpKind
        log.info("schema %s: %s on %r at %s", self.name, ch.kind.value, ch.table, ch.position)
        if ch.kind is K.RESYNC_TABLE:
            self._resync(ch.table, ch)
            return
        if ch.kind is K.FOREIGN_KEYS:
            return  # no shape change; the caller reads the constraints again
        if ch.kind is K.EVOLVE:
            assert ch.schema is not None
            self._evolve(ch.schema, ch.statement, ch.position)
            return
        if ch.kind is K.DROP_TABLE:
            plan = self.plans.get(ch.table)
            if plan is not None:
                self._retry(lambda: self.dest.drop(plan, **self._guarded()), f"dropping {plan.dest_table!r}")
                # the reader already forgot the table; the plan still has its last shape
                self.store.record_schema_version(
                    self.name, plan.source, "drop_table", ch.statement, ch.position
                )
                metrics.schema_evolution(self.name, ch.table, "drop_table")
            self.store.forget_snapshot(self.name, ch.table)
            self._untrack(ch.table)
            return
        assert ch.schema is not None
        current = self.plans.get(ch.table)
        if ch.kind is K.MODIFY_COLUMN and current is not None and ch.old_name:
            before = current.source.column(ch.old_name)
            after = ch.schema.column(ch.new_name or ch.old_name)
            if before is not None and after is not None and not is_widening(before.type, after.type):
                log.info(
                    "%r: %s -> %s is not a widening; the source rewrote the values itself, so the "
                    "table is copied again",
                    ch.table,
                    before.source_type,
                    after.source_type,
                )
                self._resync(ch.table, ch)
                return
        if ch.kind is K.CREATE_TABLE:
            self._track(ch.schema)
            self.store.set_snapshot_progress(self.name, ch.table, "done", None, 0)
            self.store.set_copied_from(self.name, ch.table, None)  # its rows come from the stream
            self.copy_positions.pop(ch.table, None)
        else:
            old_name = (ch.old_name or ch.table) if ch.kind is K.RENAME_TABLE else ch.table
            old_plan = self.plans[old_name]
            if ch.kind is K.RENAME_TABLE and old_name != ch.schema.name and ch.schema.name in self.plans:
                # The new name is replicated already: found at start-up and copied, while the stream
                # (resumed from before this rename) replayed the table's creation under its old name.
                # The old-named table holds replayed rows of a name the source no longer has: drop it.
                log.info(
                    "schema %s: %r is replicated already (copied at start-up); dropping the replayed %r",
                    self.name,
                    ch.schema.name,
                    old_name,
                )
                self._retry(
                    lambda: self.dest.drop(old_plan, **self._guarded()), f"dropping {old_plan.dest_table!r}"
                )
                self.store.record_schema_version(
                    self.name, old_plan.source, "drop_table", ch.statement, ch.position
                )
                self.store.forget_snapshot(self.name, old_name)
                self._untrack(old_name)
                return
            new_plan = self._plan(ch.schema)
            try:
                ddl = self._retry(
                    lambda: self.dest.schema_change(
                        ch.kind,
                        old_plan,
                        new_plan,
                        ch.old_name if ch.kind is not K.RENAME_TABLE else None,
                        ch.new_name if ch.kind is not K.RENAME_TABLE else None,
                        **self._guarded(),
                    ),
                    f"changing {old_plan.dest_table!r}",
                )
            except Exception as exc:  # noqa: BLE001 - e.g. a type change the destination cannot cast
                if self._is_transient(exc) or isinstance(exc, (Stopped, SupersededError)):
                    raise
                log.warning(
                    "could not apply %s to %r in place (%s); re-copying the table",
                    ch.kind.value,
                    ch.table,
                    redact(exc),
                )
                self._resync(ch.schema.name, ch)
                return
            for stmt in ddl:
                log.info("destination DDL: %s", stmt)
            if ch.kind is K.RENAME_TABLE:
                self._untrack(old_name)
                self.store.forget_snapshot(self.name, old_name)
                self.store.set_snapshot_progress(self.name, ch.schema.name, "done", None, 0)
                self.store.set_copied_from(self.name, ch.schema.name, None)
            self._track(ch.schema)
        self.store.record_schema_version(self.name, ch.schema, ch.kind.value, ch.statement, ch.position)
        metrics.schema_evolution(self.name, ch.schema.name, ch.kind.value)

    def _evolve(self, new: TableSchema, statement: str, position: Mapping[str, Any] | None) -> None:
        """Add and widen columns so the table can hold ``new``'s rows (sources that infer shapes)."""
        old_plan = self.plans.get(new.name)
        if old_plan is None or self.tables.get(new.name) == new:
            return  # not replicated (excluded or dropped meanwhile), or already this shape
        new_plan = self._plan(new)
        if is_beside(old_plan):  # a snapshot copying beside the live table widens its copy
            new_plan = beside_plan(new_plan)
        self.refuse_json_widening(old_plan, new)
        ddl = self._retry(
            lambda: self.dest.evolve(old_plan, new_plan, **self._guarded()),
            f"evolving {old_plan.dest_table!r}",
        )
        for stmt in ddl:
            log.info("destination DDL: %s", stmt)
        self._track(new)
        self.store.record_schema_version(
            self.name, new, "evolve", statement, position or self.store.checkpoint(self.name)
        )
        metrics.schema_evolution(self.name, new.name, "evolve")

    def json_widenings_refused(self, old_plan: TablePlan, new: TableSchema) -> list[str]:
        """The columns ``new`` widens into JSON from ``old_plan``'s shape where the destination cannot
        convert the values in place (no ``json_widening``); [] when it can, or none does."""
        if self.dest.capabilities.json_widening:
            return []
        return [
            c.name
            for c in new.columns
            if c.type.kind is Kind.JSON
            and (before := old_plan.source.column(c.name)) is not None
            and before.type.kind is not Kind.JSON
        ]

    def refuse_json_widening(self, old_plan: TablePlan, new: TableSchema) -> None:
        """FatalError when ``new`` widens columns of ``old_plan`` into JSON and the destination cannot."""
        into_json = self.json_widenings_refused(old_plan, new)
        if into_json:
            raise FatalError(
                f"{new.name!r}: columns {', '.join(map(repr, into_json))} now need JSON, and the "
                f"{self.dest.capabilities.name} destination cannot convert the values it holds in place; "
                f"run warpctl resync {self.name}.{new.name} (or delete the state of this table) to copy "
                "it again in the new shape"
            )

    def _resync(self, name: str, ch: SchemaChange) -> None:
        """Re-copy one table from its current contents; the stream then carries on."""
        log.warning("schema %s: re-copying the table %r: %s", self.name, name, ch.statement[:200])
        described_at = self._copy_start()
        exists = self._retry(lambda: self.source.table_exists(name), f"looking up {name!r}")
        plan = self.plans.get(name)
        if plan is not None:
            self._retry(lambda: self.dest.drop(plan, **self._guarded()), f"dropping {plan.dest_table!r}")
            self._untrack(name)
        if not exists or not self.schema.includes(name):
            self.store.forget_snapshot(self.name, name)
            return
        table = self._describe(name)
        self.store.record_schema_version(self.name, table, "resync", ch.statement, ch.position)
        metrics.schema_evolution(self.name, name, "resync_table")
        self._track(table)
        if described_at is not None:
            self._described_at[name] = (described_at, table)
        self.store.set_snapshot_progress(self.name, name, "pending", None, 0)
        self._snapshot_table(name, ch.statement, ch.position)
