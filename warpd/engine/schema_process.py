"""One schema in this process, from its lock to its last status line.

``cartridge-warp --mode single`` and every schema process warpd forks run
:func:`run_schema`, so both stop, report and take stored warpctl requests
the same way:

* **stop**: SIGTERM and SIGINT are only queued by their handler
  (:func:`stop_on_signals`); the engine asks ``should_stop()`` between
  events, chunks and retry waits, commits its batch in flight and returns;
* **one writer**: the schema's lock (:mod:`warpd.engine.schema_lock`) is
  taken before anything is written and held until the end;
* **status and heartbeat**: ``<state_dir>/run/<schema>.json`` is rewritten
  every second (:class:`~warpd.engine.status.StatusReporter`); its ``beat``
  is what warpd's supervisor watches and what single mode's ``/healthz``
  reads, and ``warpctl status`` shows it;
* **control**: paused tables and the resync and dead-letter replay requests
  stored in the state file are served by
  :class:`~warpd.engine.control.ChildControl`'s thread.

What differs between the two is a :class:`Role`: the program named in the
process title, the supervisor whose death stops a child, and whether the
process serves ``/metrics``, ``/healthz`` and ``/readyz`` itself (single
mode does; warpd's master serves them for all its children).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from warpd import __version__
from warpd.errors import WarpError
from warpd.exits import EXIT_OK

if TYPE_CHECKING:
    from warpd.config import Config
    from warpd.engine.status import StatusReporter

log = logging.getLogger("warpd")

# /healthz fails when the engine has not checked for a stop request for this long (a hung loop),
# unless a statement is in flight (a long ALTER TABLE or lock wait is not a hang)
HEALTH_STALL_SECONDS = 300.0


@dataclass(frozen=True)
class Role:
    """Who runs the schema: single mode, or a child of warpd's supervisor."""

    program: str  # "cartridge-warp" or "warpd": the process title starts with it
    supervisor_pid: int | None = None  # a warpd child stops once this process is gone
    serve_probes: bool = False  # serve /metrics, /healthz and /readyz (if monitoring.prometheus is on)


def stop_on_signals(signals: queue.SimpleQueue[int]) -> None:
    """SIGTERM and SIGINT ask the engine to stop: the handler only records them (house rule 1)."""

    def on_signal(signum: int, _frame: Any) -> None:
        signals.put(signum)  # the engine checks between events

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)


def set_title(title: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:
        pass


def run_schema(config: Config, name: str, signals: queue.SimpleQueue[int], role: Role) -> int:
    """Replicate schema ``name`` until a signal arrives in ``signals``; returns 0 once stopped cleanly.

    Errors propagate (callers turn them into exit codes with
    :func:`warpd.exits.run_reporting`), after the status file says ``failed``.
    """
    from warpd.engine import activity, schema_lock
    from warpd.engine.control import ChildControl
    from warpd.engine.runner import SchemaRunner
    from warpd.engine.status import ErrorLog, StatusReporter
    from warpd.state.store import StateStore

    schema = config.schema(name)
    writer_lock = schema_lock.acquire(config.state_dir, name)  # before anything is written; held to the end
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    reporter: StatusReporter | None = None
    control: ChildControl | None = None
    endpoint: Any = None
    error: str | None = None
    stopping = False

    def check_supervisor() -> None:
        if role.supervisor_pid is not None and os.getppid() != role.supervisor_pid and not stopping:
            log.warning("schema %s: the supervisor (pid %d) is gone; stopping", name, role.supervisor_pid)
            signals.put(signal.SIGTERM)

    def on_phase(phase: str) -> None:
        set_title(
            f"{role.program}: schema {name} [{'stopping' if stopping and phase != 'stopped' else phase}]"
        )

    def should_stop() -> bool:
        nonlocal stopping
        assert reporter is not None
        reporter.beat()  # the heartbeat: the engine asks between events, chunks and retry waits
        if not signals.empty() and not stopping:
            stopping = True
            set_title(f"{role.program}: schema {name} [stopping]")
        return stopping

    try:
        store = StateStore(config.state_dir)
        reporter = StatusReporter(
            config.state_dir, name, store, errors=errors, on_phase=on_phase, each_second=check_supervisor
        )
        activity.use(reporter.activity)  # statements in flight and retries, for the heartbeat and status
        reporter.start()
        control = ChildControl(name, store, should_stop)
        log.info(
            "cartridge-warp %s: schema %s from %s to %s (process %d, state %s)",
            __version__,
            name,
            config.source.redacted(),
            config.destination.redacted(),
            os.getpid(),
            store.path,
        )
        if role.serve_probes:
            endpoint = _serve_probes(config, name, reporter)
        if schema.batch:
            from warpd.engine.batch_mode import BatchRunner

            runner: SchemaRunner = BatchRunner(config, schema, store, should_stop=should_stop, hooks=control)
        else:
            runner = SchemaRunner(config, schema, store, should_stop=should_stop, hooks=control)
        control.attach(runner)
        reporter.attach(runner, control)
        control.start()
        runner.run()
        log.info("schema %s: stopped cleanly", name)
        return EXIT_OK
    except BaseException as exc:
        error = str(exc) or type(exc).__name__
        raise
    finally:
        if endpoint is not None:
            endpoint.stop()
        if control is not None:
            control.close()
        if reporter is not None:
            reporter.stop(error)
        logging.getLogger().removeHandler(errors)
        writer_lock.release()


def _serve_probes(config: Config, name: str, reporter: StatusReporter) -> Any:
    """Serve /metrics, /healthz and /readyz for this one schema when monitoring.prometheus is enabled.

    Healthy while the engine's loop runs and keeps asking whether to stop, or
    waits for a statement in flight (the status file's heartbeat); ready once
    the schema streams changes (its snapshot is done).
    """
    prom = config.monitoring.prometheus
    if not prom.enabled:
        return None
    from warpd import metrics

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if safe != name:  # keep two odd names from sharing a directory
        safe += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    metrics.setup(os.path.join(config.state_dir, "run", f"metrics-{safe}"), state_dir=config.state_dir)
    metrics.process_up(name, True)

    def health() -> dict[str, Any]:
        quiet = reporter.seconds_since_beat()
        busy, retry = reporter.activity.oldest(), reporter.activity.retry()
        phase = reporter.phase()
        ok = phase != "stopped" and (quiet < HEALTH_STALL_SECONDS or busy is not None)
        return {
            "ok": ok,
            "schema": name,
            "phase": phase,
            "seconds_since_progress": round(quiet, 1),
            "busy": {"what": busy.what, "since": busy.since} if busy is not None else None,
            "retrying": retry.document() if retry is not None else None,
        }

    def ready() -> dict[str, Any]:
        doc = health()
        # streaming: the snapshot is done; a batch schema between runs or in one is serving its last run
        doc["ok"] = doc["ok"] and doc["phase"] in ("streaming", "waiting", "syncing")
        return doc

    try:
        return metrics.serve(prom.host, prom.port, health, ready)
    except OSError as exc:
        raise WarpError(
            f"cannot serve metrics on {prom.host}:{prom.port}: {exc.strerror or exc}; "
            "choose another monitoring.prometheus.port (or host), or disable monitoring.prometheus"
        ) from exc
