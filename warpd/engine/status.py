"""A schema process's status file: its heartbeat, and what ``warpctl status`` shows.

``<state_dir>/run/<schema>.json`` is rewritten (write to a temporary file,
then rename, so a reader never sees half a file) every second by a thread of
the schema process.  It holds:

``pid``
    the process that wrote it; a reader ignores a file written by an earlier
    process of the same schema.
``beat``
    ``time.monotonic()`` of the last sign of progress: the engine's loop
    asked whether to stop (it does so between events, chunks and retry
    waits), or this thread found a statement in flight (see ``busy``) while
    the main thread lives.  This is the heartbeat: CLOCK_MONOTONIC is shared
    by every process of the machine, so the supervisor compares it with its
    own clock and kills a process that showed no progress for
    ``supervisor.heartbeat_timeout`` seconds: one that is frozen (SIGSTOP, a
    thread holding the interpreter) writes no file at all, and one whose loop
    is stuck with nothing in flight writes an old ``beat``.  A long statement
    (an ``ALTER TABLE`` rewriting a big table, a lock wait) is not a hang.
``busy``
    the operation in flight for the longest time, once it has lasted
    :data:`BUSY_AFTER_SECONDS`: ``what``, ``since`` (epoch seconds);
``retrying``
    the operation being retried, if any: ``what``, ``failures``,
    ``max_attempts``, ``next_try_at`` (epoch seconds) and the redacted
    ``error``.  When it succeeds again the warnings its failures logged are
    retired from ``last_error``;
``phase``, ``position``, ``lag_seconds``, ``events_per_second``, ``events_applied``, ``rows_applied``, ``last_error``
    the schema as a whole;
``verify``
    with ``verify: {every: ...}``: the schedule, ``running_since``, ``next_at`` and the ``last`` run
    (``finished_at``, ``result``: equal, different or failed, ``differing_keys``, ``repaired_keys``,
    ``error``); engine/verify_schedule.py;
``tables``
    per table: ``state`` (streaming, snapshotting, resyncing, paused, ...),
    ``percent`` while copying, ``rows_applied``, ``rows_copied``,
    ``dead_letters`` and ``last_error``.

Nothing in it is a secret: messages pass through :func:`warpd.redact.redact`.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from warpd.engine.activity import Tracker
from warpd.redact import redact

if TYPE_CHECKING:
    from warpd.engine.control import ChildControl
    from warpd.engine.runner import SchemaRunner
    from warpd.state.store import StateStore

log = logging.getLogger(__name__)

RUN_DIR = "run"
WRITE_EVERY_SECONDS = 1.0
BUSY_AFTER_SECONDS = 2.0  # shorter operations are not worth a mention in warpctl status
RATE_WINDOW_SECONDS = 10.0


def status_path(state_dir: str, schema: str) -> str:
    """``<state_dir>/run/<schema>.json``, the name made safe for any schema name (``/`` and all)."""
    safe = quote(schema, safe="")
    if safe.startswith("."):
        safe = "%2E" + safe[1:]
    return os.path.join(state_dir, RUN_DIR, safe + ".json")


def read_status(path: str) -> dict[str, Any] | None:
    """The status document at ``path``, or None if there is none (or it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def batch_table_document(state: Any) -> dict[str, Any]:
    """A batch-mode table's last run and high-water mark (a :class:`~warpd.state.store.BatchTable`)."""
    from warpd.engine.batch_mode import mark_text

    return {
        "sync": state.sync,
        "last_run": {
            "started_at": state.run_started,
            "finished_at": state.run_finished,
            "status": state.run_status,
            "rows": state.rows_moved,
            "deleted": state.deleted,
            "seconds": round(state.duration, 3) if state.duration is not None else None,
            "error": state.run_error,
        },
        "last_success_at": state.last_success,
        "high_water_mark": mark_text(state.mark),
    }


def percent(rows: int, estimated: int) -> float:
    total = max(estimated, rows)
    return round(100.0 * rows / total, 1) if total else 0.0


class ErrorLog(logging.Handler):
    """Keeps the last warning or error of the process, and of each table, for the status file."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.last: dict[str, Any] | None = None
        self.by_table: dict[str, dict[str, Any]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {"at": record.created, "level": record.levelname, "message": redact(record.getMessage())}
        except Exception:  # noqa: BLE001 - a bad log call must not break the process
            return
        self.last = entry
        table = getattr(record, "table", None)
        if isinstance(table, str):
            self.by_table[table] = entry

    def retire_warnings(self, until: float) -> None:
        """Forget warnings logged up to ``until`` (the retries they reported are over); errors stay."""
        if self.last is not None and self.last["level"] == "WARNING" and self.last["at"] <= until:
            self.last = None
        for table, entry in list(self.by_table.items()):
            if entry["level"] == "WARNING" and entry["at"] <= until:
                self.by_table.pop(table, None)


class StatusReporter:
    """Writes the status file every second from its own thread; :meth:`beat` is the heartbeat."""

    def __init__(
        self,
        state_dir: str,
        schema: str,
        store: StateStore,
        *,
        errors: ErrorLog,
        on_phase: Callable[[str], None] = lambda _phase: None,
        every: float = WRITE_EVERY_SECONDS,
        each_second: Callable[[], None] = lambda: None,
    ):
        self.path = status_path(state_dir, schema)
        self.schema = schema
        self.store = store
        self.errors = errors
        self.on_phase = on_phase
        self.every = every
        self.each_second = each_second  # e.g. the schema process checking that its supervisor lives
        self.runner: SchemaRunner | None = None
        self.control: ChildControl | None = None
        self.pid = os.getpid()
        self.started = time.time()
        self._beat = time.monotonic()
        self._rates: collections.deque[tuple[float, int]] = collections.deque()
        self._phase = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.final_error: str | None = None
        self.activity = Tracker(on_recovered=errors.retire_warnings)
        os.makedirs(os.path.dirname(self.path), mode=0o750, exist_ok=True)

    def beat(self) -> None:
        """The engine's loop made progress (called from ``should_stop``; cheap)."""
        self._beat = time.monotonic()

    def seconds_since_beat(self) -> float:
        """How long the engine's loop has shown no progress (single mode's ``/healthz`` reads it)."""
        return time.monotonic() - self._beat

    def attach(self, runner: SchemaRunner, control: ChildControl | None) -> None:
        self.runner, self.control = runner, control

    def start(self) -> None:
        self.write()
        self._thread = threading.Thread(target=self._loop, name="status", daemon=True)
        self._thread.start()

    def stop(self, error: str | None = None) -> None:
        """Write the last status (``stopped``, or ``failed`` with ``error``) and end the thread."""
        self.final_error = redact(error) if error else None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.write(final=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.each_second()
                if self.activity.oldest() is not None and threading.main_thread().is_alive():
                    self.beat()  # waiting for a statement is not a hang; a frozen process writes nothing
                self.write()
            except Exception as exc:  # noqa: BLE001 - e.g. a full disk; the next second tries again
                log.warning("cannot write the status file %s: %s", self.path, exc)

    # -- the document --------------------------------------------------------
    def phase(self, final: bool = False) -> str:
        if final:
            return "failed" if self.final_error else "stopped"
        runner = self.runner
        return runner.phase if runner is not None else "starting"

    def document(self, final: bool = False) -> dict[str, Any]:
        now_mono, now = time.monotonic(), time.time()
        runner, control = self.runner, self.control
        phase = self.phase(final)
        applied = runner.applied_events if runner is not None else 0
        self._rates.append((now_mono, applied))
        while len(self._rates) > 2 and now_mono - self._rates[0][0] > RATE_WINDOW_SECONDS:
            self._rates.popleft()
        first_at, first_n = self._rates[0]
        rate = (applied - first_n) / (now_mono - first_at) if now_mono > first_at else 0.0
        position = getattr(runner, "saved_pos", None) if runner is not None else None
        if position is None:
            position = self.store.checkpoint(self.schema)
        last_ts = runner.last_source_ts if runner is not None else None
        error = self.errors.last
        if final and self.final_error:
            error = {"at": now, "level": "ERROR", "message": self.final_error}
        oldest = None if final else self.activity.oldest()
        retry = None if final else self.activity.retry()
        return {
            "schema": self.schema,
            "pid": self.pid,
            "beat": self._beat,
            "written": now_mono,
            "updated_at": now,
            "started_at": self.started,
            "phase": phase,
            "position": position,
            "lag_seconds": round(max(0.0, now - last_ts), 3) if last_ts and phase == "streaming" else None,
            "events_per_second": round(rate, 1),
            "events_applied": applied,
            "rows_applied": sum(dict(control.rows_applied).values()) if control is not None else 0,
            "last_error": error,
            "busy": {"what": oldest.what, "since": oldest.since}
            if oldest is not None and now_mono - oldest.since_monotonic >= BUSY_AFTER_SECONDS
            else None,
            "retrying": retry.document() if retry is not None else None,
            "tables": self._tables(phase),
            **self._batch(),
            **(
                {"verify": control.verifier.document()}
                if control is not None and control.verifier is not None
                else {}
            ),
        }

    def _batch(self) -> dict[str, Any]:
        """A batch-mode schema's schedule and next run (engine/batch_mode.py); nothing for a streaming one."""
        document = getattr(self.runner, "batch_document", None)
        return {"batch": document()} if document is not None else {}

    def _tables(self, phase: str) -> dict[str, dict[str, Any]]:
        runner, control = self.runner, self.control
        progress = self.store.snapshot_progress(self.schema)
        letters = self.store.dead_letter_counts(self.schema)
        paused = control.paused_tables if control is not None else frozenset()
        resyncing = control.resyncing() if control is not None else frozenset()
        batch = self.store.batch_tables(self.schema) if hasattr(runner, "batch_document") else {}
        names = set(progress) | set(paused) | set(batch)
        if runner is not None:
            names |= set(runner.tables.snapshot())
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(names):
            prog = progress.get(name)
            pct = percent(prog.rows_copied, prog.rows_estimated) if prog is not None else None
            if name in paused:
                state = "paused"
            elif name in resyncing:
                state = "resyncing"
            elif prog is not None and prog.status == "running":
                state = "snapshotting"
            elif prog is not None and prog.status == "pending":
                state = "snapshot pending"
            else:
                state = phase if phase in ("starting", "streaming", "stopped", "failed") else "copied"
            out[name] = {
                "state": state,
                "percent": pct if state in ("snapshotting", "resyncing") else None,
                "rows_copied": prog.rows_copied if prog is not None else 0,
                "rows_applied": control.rows_applied.get(name, 0) if control is not None else 0,
                "dead_letters": letters.get(name, 0),
                "last_error": self.errors.by_table.get(name),
            }
            if name in batch:
                out[name].update(batch_table_document(batch[name]))
                out[name]["state"] = (
                    "syncing"
                    if batch[name].run_status == "running" and phase == "syncing"
                    else ("failed" if batch[name].run_status == "failed" else phase)
                )
        return out

    def write(self, final: bool = False) -> None:
        doc = self.document(final)
        phase = doc["phase"]
        if phase != self._phase:
            self._phase = phase
            self.on_phase(phase)
        tmp = f"{self.path}.{self.pid}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, default=str, ensure_ascii=False)
        os.replace(tmp, self.path)
