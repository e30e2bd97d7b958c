"""The schema process's side of warpctl: paused tables, resyncs beside the stream, dead-letter replays.

warpctl talks to the supervisor; the supervisor records what was asked in
the state file (``paused`` and ``control_requests``, migration 3), so a
request survives a restart of the schema process and needs no channel of its
own.  A thread here reads both twice a second:

* a paused table's changes are skipped by the engine (:meth:`skips`); the
  checkpoint still moves, so on resume the table is copied again beside the
  stream (``warpctl resume`` queues that resync in the same transaction that
  clears the pause), and nothing the pause skipped is lost;
* ``resync`` requests start a :class:`~warpd.engine.resync.TableResync`;
* ``dlq_replay`` requests run :func:`~warpd.engine.replay.replay`;
* ``repair`` requests (``cartridge-warp verify --repair``) re-copy keys with
  :func:`~warpd.engine.repair.repair_keys`, under the table's lock.

Requests wait until the engine streams: a table's first copy and the
snapshot of others come first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Hashable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from warpd.connectors.base import SchemaChange, SchemaOpKind
from warpd.engine.batch import FinalState
from warpd.engine.hooks import EngineHooks
from warpd.engine.repair import repair_keys
from warpd.engine.replay import replay
from warpd.engine.resync import TableResync
from warpd.engine.verify_schedule import ScheduledVerify
from warpd.errors import FatalError
from warpd.redact import redact

if TYPE_CHECKING:
    from collections.abc import Callable

    from warpd.engine.runner import SchemaRunner
    from warpd.state.store import ControlRequest, StateStore

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


class ChildControl(EngineHooks):
    """Engine hooks driven by the state file's pause flags and requests."""

    def __init__(self, schema: str, store: StateStore, should_stop: Callable[[], bool] = lambda: False):
        self.name = schema
        self.store = store
        self.should_stop = should_stop
        self.paused_tables: frozenset[str] = self._read_paused()
        # one writer at a time for paused_tables: the polling thread, and renames/drops in the stream
        self._paused_guard = threading.Lock()
        self.rows_applied: dict[str, int] = {}
        self.runner: SchemaRunner | None = None
        self.verifier: ScheduledVerify | None = None  # verify: {every: ...} (engine/verify_schedule.py)
        self._resyncs: dict[str, TableResync] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="control", daemon=True)
        if self.paused_tables:
            log.info(
                "schema %s: paused tables (changes skipped until warpctl resume): %s",
                schema,
                ", ".join(sorted(self.paused_tables)),
            )

    def attach(self, runner: SchemaRunner) -> None:
        self.runner = runner
        schedule = runner.schema.verify
        if schedule is not None and self.verifier is None:
            self.verifier = ScheduledVerify(
                runner, schedule, self.lock, lambda: self.paused_tables | self.resyncing()
            )

    def start(self) -> None:
        self._thread.start()
        if self.verifier is not None:
            self.verifier.start()
            log.info("schema %s: verify %s (docs/verify.md)", self.name, self.verifier.schedule.describe())

    def close(self) -> None:
        """Stop polling and cancel running copies (their tables are copied again at the next start)."""
        self._stop.set()
        if self.verifier is not None:
            self.verifier.close()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for resync in list(self._resyncs.values()):
            resync.cancel()
        for resync in list(self._resyncs.values()):
            resync.join(timeout=30)

    def resyncing(self) -> frozenset[str]:
        return frozenset(name for name, r in list(self._resyncs.items()) if r.alive())

    def lock(self, table: str) -> threading.RLock:
        """The lock that serialises writes to one table: stream batches, resync chunks, replays, DDL."""
        with self._locks_guard:
            found = self._locks.get(table)
            if found is None:
                found = self._locks[table] = threading.RLock()
            return found

    # -- engine hooks ----------------------------------------------------------
    def skips(self, table: str) -> bool:
        return table in self.paused_tables

    @contextlib.contextmanager
    def applying(self, table: str, states: Mapping[Hashable, FinalState]) -> Iterator[None]:
        with self.lock(table):
            yield
            resync = self._resyncs.get(table)
            if resync is not None:
                resync.note_applied(states)
        self.rows_applied[table] = self.rows_applied.get(table, 0) + len(states)

    @contextlib.contextmanager
    def changing(self, event: Any) -> Iterator[None]:
        names = {event.table}
        renamed = isinstance(event, SchemaChange) and event.kind is SchemaOpKind.RENAME_TABLE
        if renamed:
            names |= {n for n in (event.old_name, event.new_name) if n}
        with contextlib.ExitStack() as stack:
            for name in sorted(names):  # one order everywhere; a copy only ever holds one of them
                stack.enter_context(self.lock(name))
            yield
            if isinstance(event, SchemaChange):
                self._follow(event)
            for name in names:
                resync = self._resyncs.get(name)
                if resync is not None and resync.alive():
                    resync.restart()
                    if renamed and name == event.old_name and event.new_name:
                        self.store.add_request(
                            self.name, "resync", {"table": event.new_name, "why": "renamed"}
                        )

    def _follow(self, change: SchemaChange) -> None:
        """A paused table keeps its pause under its new name, and loses it when dropped.

        Otherwise a renamed table would stream without the changes skipped
        while it was paused, ``warpctl resume`` would not find it, and a later
        table of the old name would start paused.
        """
        if change.kind is SchemaOpKind.RENAME_TABLE:
            old, new = change.old_name, change.new_name
        elif change.kind is SchemaOpKind.DROP_TABLE:
            old, new = change.table, None
        else:
            return
        with self._paused_guard:
            if old not in self.paused_tables or not self.store.move_paused(self.name, old, new):
                return
            self.paused_tables = self._read_paused()
        if new:
            log.info("%s.%s renamed to %s while paused: %s is paused now", self.name, old, new, new)
        else:
            log.info("%s.%s dropped while paused: the pause is gone with it", self.name, old)

    # -- polling the state file --------------------------------------------------
    def _read_paused(self) -> frozenset[str]:
        return frozenset(t for t in self.store.paused(self.name).get(self.name, set()) if t)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - e.g. a locked state file; try again shortly
                log.warning("schema %s: reading warpctl requests failed: %s", self.name, redact(exc))

    def poll(self) -> None:
        with self._paused_guard:
            self._poll_paused()
        runner = self.runner
        if runner is None or runner.phase != "streaming":
            return
        for request in self.store.pending_requests(self.name):
            if self._stop.is_set():
                return
            if request.kind == "resync":
                self._resync(runner, request)
            elif request.kind == "dlq_replay":
                self._replay(runner, request)
            elif request.kind == "repair":
                self._repair(runner, request)
            else:
                self.store.finish_request(request.id, False, {"message": f"unknown request {request.kind!r}"})

    def _poll_paused(self) -> None:
        paused = self._read_paused()
        if paused != self.paused_tables:
            for table in sorted(paused - self.paused_tables):
                log.info("%s.%s paused: its changes are skipped until warpctl resume", self.name, table)
                resync = self._resyncs.get(table)
                if resync is not None:
                    resync.cancel()
            for table in sorted(self.paused_tables - paused):
                log.info("%s.%s resumed", self.name, table)
            self.paused_tables = paused

    def _resync(self, runner: SchemaRunner, request: ControlRequest) -> None:
        table = str(request.args.get("table", ""))
        if table in self.paused_tables:
            self.store.finish_request(
                request.id,
                False,
                {"message": f"{self.name}.{table} is paused; warpctl resume copies it again"},
            )
            return
        if table not in runner.plans:
            known = ", ".join(sorted(runner.plans)) or "none"
            self.store.finish_request(
                request.id,
                False,
                {"message": f"schema {self.name!r} does not replicate a table {table!r} (tables: {known})"},
            )
            return
        current = self._resyncs.get(table)
        if current is not None and current.alive():
            with self.lock(table):
                current.restart()
            message = f"the resync of {self.name}.{table} that was running starts over"
        else:
            resync = TableResync(runner, table, self.lock(table), on_done=self._resync_done)
            self._resyncs[table] = resync
            resync.start()
            message = f"resync of {self.name}.{table} started; warpctl status shows its progress"
        log.info("%s (%s)", message, request.args.get("why", "warpctl resync"))
        self.store.finish_request(request.id, True, {"message": message})

    def _resync_done(self, resync: TableResync) -> None:
        if self._resyncs.get(resync.table) is resync:
            del self._resyncs[resync.table]

    def _replay(self, runner: SchemaRunner, request: ControlRequest) -> None:
        ids = request.args.get("ids")
        letters = self.store.dead_letters(self.name, ids=[int(i) for i in ids] if ids is not None else None)
        result = replay(runner, letters, self.lock, self._stop.is_set)
        self.store.finish_request(
            request.id,
            True,
            {
                **result,
                "message": f"{self.name}: {len(result['replayed'])} replayed, {len(result['failed'])} kept",
            },
        )

    def _repair(self, runner: SchemaRunner, request: ControlRequest) -> None:
        table = str(request.args.get("table", ""))
        keys = [tuple(k) for k in request.args.get("keys") or []]
        try:
            written = self.repair(runner, table, keys)
        except Exception as exc:  # noqa: BLE001 - reported to the asking verify; the stream goes on
            message = (
                f"repair of {self.name}.{table} failed: {redact(str(exc).strip() or type(exc).__name__)}"
            )
            log.warning("%s", message)
            self.store.finish_request(request.id, False, {"message": message})
            return
        message = f"{self.name}.{table}: repaired {written} key(s)"
        log.info("%s (verify --repair)", message)
        self.store.finish_request(request.id, True, {"repaired": written, "message": message})

    def repair(self, runner: SchemaRunner, table: str, keys: list[tuple[str | None, ...]]) -> int:
        """Re-copy ``keys`` of ``table`` beside the stream, with a source connection of its own."""
        if table in self.paused_tables:
            raise FatalError(f"{self.name}.{table} is paused; warpctl resume copies it again")
        plan = runner.plans.get(table)
        if plan is None:
            raise FatalError(f"schema {self.name!r} does not replicate a table {table!r}")
        source = runner.new_source()
        try:
            return repair_keys(
                self.name,
                source,
                runner.pool,
                plan,
                runner.schema.table_settings(table),
                keys,
                lock=self.lock(table),
                should_stop=self._stop.is_set,
                fence=runner.guard,
            )
        finally:
            source.close()
