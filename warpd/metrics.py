"""Prometheus metrics shared by every process of one run, and the HTTP endpoints that serve them.

prometheus_client's multiprocess mode is used in both run modes: each
process (the supervisor, every schema child, or the one single-mode process)
writes its samples to memory-mapped files in one directory, and ``/metrics``
sums them up.  :func:`setup` must run before the children are forked; it puts
the directory in ``PROMETHEUS_MULTIPROC_DIR`` (which prometheus_client reads)
and empties it, so values of an earlier run never leak into this one.

The engine reports through the small functions below (:func:`events_applied`,
:func:`set_lag`, ...).  They cost one dictionary lookup and do nothing until
:func:`setup` ran in this process or in the parent it was forked from, so the
engine calls them unconditionally.

Labels are schema, table, operation, kind and error_type: names, never
values, URIs or messages, so a metric can never carry a credential.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import selectors
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from warpd.httpserve import HttpServer, ServingThread

log = logging.getLogger(__name__)

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "cartridge_warp_"

# Seconds; a batch is one transaction per worker, from a few ms to a slow destination's minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Every metric this module exports: name -> (type, labels, help).  The docs, the Grafana
# dashboard and its test are checked against this table.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "events_applied_total": (
        "counter",
        ("schema", "table", "operation"),
        "Source changes applied to the destination (insert, update, delete) and rows copied by snapshots "
        "(snapshot), counted as the source produced them, before a batch folds repeated changes to a row.",
    ),
    "batch_apply_seconds": (
        "histogram",
        ("schema", "table"),
        "Time to apply one streaming batch of one table to the destination (all workers committed).",
    ),
    "replication_lag_seconds": (
        "gauge",
        ("schema",),
        "Seconds between the source commit of the last applied change and now; about 0 when caught up.",
    ),
    "snapshot_rows_copied": (
        "gauge",
        ("schema", "table"),
        "Rows the initial snapshot (or a re-copy) of a table has committed so far.",
    ),
    "snapshot_progress_ratio": (
        "gauge",
        ("schema", "table"),
        "Fraction of a table's snapshot done, 0 to 1 (estimated row count; 1 once it finished).",
    ),
    "schema_evolution_events_total": (
        "counter",
        ("schema", "table", "kind"),
        "Structural changes followed at the destination: create_table, add_column, modify_column (widen), "
        "drop_table, rename_*, resync_table (the table was copied again), ...",
    ),
    "dead_letters_total": (
        "counter",
        ("schema", "table"),
        "Rows the destination could not store, kept in the dead-letter store with the reason.",
    ),
    "errors_total": (
        "counter",
        ("schema", "error_type"),
        "Errors by exception class (e.g. OperationalError, TransientError); retried ones included.",
    ),
    "child_restarts_total": (
        "counter",
        ("schema",),
        "Times the supervisor restarted a schema's process after it died or hung.",
    ),
    "process_up": (
        "gauge",
        ("schema",),
        "1 while the schema's process runs, 0 while it is down (backing off, crashed or stopped).",
    ),
    "batch_rows": (
        "gauge",
        ("schema", "table"),
        "mode: batch: rows the table's last finished run moved (merged or copied; deletes by key_scan not counted).",
    ),
    "batch_run_seconds": (
        "gauge",
        ("schema", "table"),
        "mode: batch: how long the table's last finished run took.",
    ),
    "batch_last_success_timestamp_seconds": (
        "gauge",
        ("schema", "table"),
        "mode: batch: Unix time the table's last successful run finished; alert when time() minus it "
        "grows past a few schedule periods.",
    ),
    "batch_runs_total": (
        "counter",
        ("schema", "table", "result"),
        "mode: batch: finished runs of a table by result (ok, failed).",
    ),
    "verify_differences": (
        "gauge",
        ("schema", "table"),
        "Scheduled verify: keys (missing, extra or different) the table's last finished verify found, "
        "before any repair; alert when above 0.",
    ),
    "verify_last_success_timestamp_seconds": (
        "gauge",
        ("schema", "table"),
        "Scheduled verify: Unix time the table's last verify finished (equal or not); alert when time() "
        "minus it grows past a few verify periods (verify stopped finishing).",
    ),
    "verify_repaired_keys_total": (
        "counter",
        ("schema", "table"),
        "Scheduled verify with repair: true: differing keys re-copied from the source.",
    ),
    "verify_runs_total": (
        "counter",
        ("schema", "result"),
        "Scheduled verify: runs over a schema's tables by result (equal, different, failed: could not finish).",
    ),
}


class _Metrics:
    """The metric objects of one run; built by :func:`setup` once the directory is known."""

    def __init__(self, directory: str):
        from prometheus_client import Counter, Gauge, Histogram, values

        # prometheus_client picks its value class when it is first imported; re-pick it now that
        # the directory is set, in case something imported it earlier, and start with fresh files.
        values.ValueClass = values.get_value_class()
        self.directory = directory

        def doc(name: str) -> dict[str, Any]:
            _type, labels, text = METRICS[name]
            # registry=None: in multiprocess mode only the collector reading the files is served
            base = name.removesuffix("_total")
            return {"name": PREFIX + base, "documentation": text, "labelnames": labels, "registry": None}

        def counter(name: str) -> Any:
            return Counter(**doc(name))  # prometheus_client appends the _total itself

        # live*: a dead process's value is dropped by mark_dead(); one writer per schema, so max = its value
        self.events = counter("events_applied_total")
        self.batch = Histogram(**doc("batch_apply_seconds"), buckets=LATENCY_BUCKETS)
        self.lag = Gauge(**doc("replication_lag_seconds"), multiprocess_mode="livemax")
        self.snapshot_rows = Gauge(**doc("snapshot_rows_copied"), multiprocess_mode="livemax")
        self.snapshot_ratio = Gauge(**doc("snapshot_progress_ratio"), multiprocess_mode="livemax")
        self.evolution = counter("schema_evolution_events_total")
        self.dead_letters = counter("dead_letters_total")
        self.errors = counter("errors_total")
        self.restarts = counter("child_restarts_total")
        self.up = Gauge(**doc("process_up"), multiprocess_mode="livemax")
        # not "live": the last run's figures stay on the scrape while the process waits or restarts
        self.batch_rows = Gauge(**doc("batch_rows"), multiprocess_mode="mostrecent")
        self.batch_seconds = Gauge(**doc("batch_run_seconds"), multiprocess_mode="mostrecent")
        self.batch_success = Gauge(**doc("batch_last_success_timestamp_seconds"), multiprocess_mode="max")
        self.batch_runs = counter("batch_runs_total")
        self.verify_differences = Gauge(**doc("verify_differences"), multiprocess_mode="mostrecent")
        self.verify_success = Gauge(**doc("verify_last_success_timestamp_seconds"), multiprocess_mode="max")
        self.verify_repaired = counter("verify_repaired_keys_total")
        self.verify_runs = counter("verify_runs_total")


_metrics: _Metrics | None = None
_setup_lock = threading.Lock()


# The files prometheus_client's multiprocess mode writes: <type>_<pid>.db, gauges with their mode
# (gauge_livemax_123.db).  setup() deletes these and nothing else.
_OWN_FILE = re.compile(r"(counter|histogram|summary|gauge_(live)?(all|min|max|sum|mostrecent))_[0-9]+\.db")


def setup(multiproc_dir: str | None, state_dir: str | None = None) -> str:
    """Prepare this run's metrics directory and metric objects; return the directory used.

    ``PROMETHEUS_MULTIPROC_DIR`` wins when set; otherwise ``multiproc_dir`` (created if
    needed), or a new temporary directory when that is None too.  prometheus_client's files
    left by an earlier run are deleted (only those: a directory shared with anything else
    keeps its other files).  A directory that is, or contains, ``state_dir`` or any state
    file is refused with a ConfigError.  Call it once, before forking any child that reports
    metrics.
    """
    global _metrics
    directory = os.environ.get(ENV_DIR) or multiproc_dir or tempfile.mkdtemp(prefix="cartridge-warp-metrics-")
    _refuse_state_dir(directory, state_dir)
    with _setup_lock:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for stale in glob.glob(os.path.join(glob.escape(directory), "*.db")):
            if _OWN_FILE.fullmatch(os.path.basename(stale)):
                os.remove(stale)
        os.environ[ENV_DIR] = directory
        _metrics = _Metrics(directory)
    return directory


def _refuse_state_dir(directory: str, state_dir: str | None) -> None:
    from warpd.errors import ConfigError
    from warpd.state.store import STATE_FILE_NAME

    real = os.path.realpath(directory)
    state_real = os.path.realpath(state_dir) if state_dir else None
    holds_state = os.path.exists(os.path.join(real, STATE_FILE_NAME))
    if holds_state or (
        state_real is not None and (state_real + os.sep).startswith(real.rstrip(os.sep) + os.sep)
    ):
        raise ConfigError(
            f"{ENV_DIR}: {directory!r} is (or contains) a state directory; the metrics files need a "
            "directory of their own: point the variable elsewhere or unset it"
        )


def attach() -> str | None:
    """In a process started by exec (not forked) from one that ran :func:`setup`: report into the
    same directory, found in ``PROMETHEUS_MULTIPROC_DIR``, without emptying it.  Returns the
    directory, or None (and reporting stays off) when the variable is not set."""
    global _metrics
    path = os.environ.get(ENV_DIR)
    if not path:
        return None
    with _setup_lock:
        if _metrics is None or _metrics.directory != path:
            _metrics = _Metrics(path)
    return path


def directory() -> str | None:
    """The metrics directory of this run, or None before :func:`setup`."""
    return _metrics.directory if _metrics is not None else None


def mark_dead(pid: int) -> None:
    """Forget the live gauges of a child that exited (call after reaping it); counters keep their totals."""
    if _metrics is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, _metrics.directory)


# -- what the engine and the supervisor report -------------------------------------------------


def events_applied(schema: str, table: str, operation: str, n: int) -> None:
    """``n`` changes of one ``operation`` (insert, update, delete, snapshot) applied to ``table``."""
    if _metrics is not None and n:
        _metrics.events.labels(schema, table, operation).inc(n)


def observe_batch(schema: str, table: str, seconds: float) -> None:
    """One streaming batch of ``table`` took ``seconds`` to apply."""
    if _metrics is not None:
        _metrics.batch.labels(schema, table).observe(seconds)


def set_lag(schema: str, seconds: float) -> None:
    """Replication lag of ``schema``: now minus the source time of the last applied change."""
    if _metrics is not None:
        _metrics.lag.labels(schema).set(max(0.0, seconds))


def snapshot_progress(
    schema: str, table: str, rows_copied: int, estimated_rows: int, done: bool = False
) -> None:
    """Rows of ``table``'s snapshot committed so far, out of an estimate; ``done`` makes the ratio 1."""
    if _metrics is None:
        return
    total = max(estimated_rows, rows_copied)
    ratio = 1.0 if done else (rows_copied / total if total else 0.0)
    _metrics.snapshot_rows.labels(schema, table).set(rows_copied)
    _metrics.snapshot_ratio.labels(schema, table).set(min(ratio, 1.0))


def schema_evolution(schema: str, table: str, kind: str) -> None:
    """A structural change of ``kind`` (add_column, modify_column, resync_table, ...) was followed."""
    if _metrics is not None:
        _metrics.evolution.labels(schema, table, kind).inc()


def dead_letter(schema: str, table: str, n: int = 1) -> None:
    if _metrics is not None:
        _metrics.dead_letters.labels(schema, table).inc(n)


def batch_run(
    schema: str, table: str, ok: bool, rows: int, seconds: float, last_success: float | None
) -> None:
    """A batch-mode run of ``table`` finished (``ok`` or failed) after moving ``rows`` in ``seconds``."""
    if _metrics is None:
        return
    _metrics.batch_runs.labels(schema, table, "ok" if ok else "failed").inc()
    _metrics.batch_rows.labels(schema, table).set(rows)
    _metrics.batch_seconds.labels(schema, table).set(seconds)
    if last_success is not None:
        _metrics.batch_success.labels(schema, table).set(last_success)


def verify_table(schema: str, table: str, differing: int, repaired: int, finished_at: float) -> None:
    """A scheduled verify of ``table`` finished at ``finished_at``, finding ``differing`` keys and repairing
    ``repaired`` of them."""
    if _metrics is None:
        return
    _metrics.verify_differences.labels(schema, table).set(differing)
    _metrics.verify_success.labels(schema, table).set(finished_at)
    if repaired:
        _metrics.verify_repaired.labels(schema, table).inc(repaired)


def verify_run(schema: str, result: str) -> None:
    """A scheduled verify of ``schema`` ended: ``equal``, ``different`` or ``failed``."""
    if _metrics is not None:
        _metrics.verify_runs.labels(schema, result).inc()


def error(schema: str, error_type: str) -> None:
    """An error of class ``error_type`` happened (pass ``type(exc).__name__``, never the message)."""
    if _metrics is not None:
        _metrics.errors.labels(schema, error_type).inc()


def child_restart(schema: str) -> None:
    if _metrics is not None:
        _metrics.restarts.labels(schema).inc()


def process_up(schema: str, up: bool) -> None:
    if _metrics is not None:
        _metrics.up.labels(schema).set(1 if up else 0)


# -- the HTTP endpoints ------------------------------------------------------------------------

Probe = Callable[[], dict[str, Any]]


@dataclass
class Server:
    """A running metrics/health endpoint (:class:`warpd.httpserve.HttpServer`).

    Started with ``threaded=True`` it answers from a loop in its own thread.  With
    ``threaded=False`` nothing runs by itself: :meth:`register` it with the caller's
    selector, call each ready key's ``data(mask)`` and :meth:`tick` every turn, so a
    process that forks (the supervisor) stays single-threaded.
    """

    http: HttpServer
    serving: ServingThread | None = None

    @property
    def host(self) -> str:
        return self.http.host

    @property
    def port(self) -> int:
        return self.http.port

    def register(self, selector: selectors.BaseSelector) -> None:
        self.http.register(selector)

    def tick(self) -> None:
        self.http.tick()

    def fds(self) -> list[int]:
        return self.http.fds()

    def stop(self) -> None:
        if self.serving is not None:
            self.serving.stop()
            self.serving = None
        else:
            self.http.close()


def serve(host: str, port: int, health: Probe, ready: Probe, *, threaded: bool = True) -> Server:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (port 0: any free port).

    ``/healthz`` answers 200 while ``health()["ok"]`` is true and 503 otherwise, with the
    dict as its JSON body; ``/readyz`` the same with ``ready()``.  :func:`setup` must have run.
    An address that cannot be bound raises OSError.
    """
    if _metrics is None:
        raise RuntimeError("metrics.setup() must run before metrics.serve()")
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=_metrics.directory)
    probes = {"/healthz": health, "/readyz": ready}

    def answer(path: str) -> tuple[int, bytes, str]:
        if path == "/metrics":
            return 200, generate_latest(registry), CONTENT_TYPE_LATEST
        if path in probes:
            try:
                doc = dict(probes[path]())
            except Exception as exc:  # noqa: BLE001 - a failing probe is an unhealthy answer, not a crash
                doc = {"ok": False, "error": type(exc).__name__}
            body = json.dumps(doc, default=str).encode() + b"\n"
            return (200 if doc.get("ok") else 503), body, "application/json"
        if path == "/":
            return 200, b"cartridge-warp: /metrics /healthz /readyz\n", "text/plain; charset=utf-8"
        return 404, b"not found; try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8"

    server = Server(HttpServer(host, port, answer))
    if threaded:
        server.serving = ServingThread(server.http)
    log.info(
        "metrics on http://%s:%d/metrics (health: /healthz, readiness: /readyz)", server.host, server.port
    )
    return server
