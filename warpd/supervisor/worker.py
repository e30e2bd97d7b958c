"""What a forked schema process does: set itself up, then run the schema as single mode does.

The supervisor does its work before ``fork()``; everything here runs after
it, in the child (gunicorn's ``init_process``): signal handlers of its own,
a fresh random seed, its own log set-up and process title, and the state
file and database connections opened here, never inherited.

The exit code tells the supervisor why the process ended: 0 stopped on
request, 2 a configuration error (not restarted), 1 anything else
(restarted with backoff).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

from warpd import __version__, logs, metrics
from warpd.config import Config
from warpd.exits import EXIT_OK, run_reporting

log = logging.getLogger("warpd")


class _NotATerminal:
    """stderr, minus the terminal: one live progress line per process would garble a shared tty."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def set_title(title: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:
        pass


def run_schema(config: Config, name: str, close_inherited: Callable[[], None]) -> int:
    """The body of a schema process; returns its exit code."""
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    supervisor_pid = os.getppid()
    _init_process(config, name, signals, close_inherited)
    try:
        return run_reporting(
            lambda: _run(config, name, signals, supervisor_pid),
            f"schema {name}",
            config_errors_to_stderr=False,
        )
    finally:
        logging.shutdown()


def _init_process(
    config: Config, name: str, signals: queue.SimpleQueue[int], close_inherited: Callable[[], None]
) -> None:
    signal.set_wakeup_fd(-1)

    def on_signal(signum: int, _frame: Any) -> None:
        signals.put(signum)  # only record it; the engine checks between events

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)  # reloads are the supervisor's business
    for sig in (signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    close_inherited()
    random.seed()  # the parent's state would give every child the same jitter
    sys.stderr = _NotATerminal(sys.stderr)
    logs.configure(config.monitoring.log_level, config.monitoring.log_format)
    logs.set_context(schema=name)
    set_title(f"warpd: schema {name} [starting]")
    metrics.process_up(name, True)


def _run(config: Config, name: str, signals: queue.SimpleQueue[int], supervisor_pid: int) -> int:
    from warpd.engine import activity, schema_lock
    from warpd.engine.control import ChildControl
    from warpd.engine.runner import SchemaRunner
    from warpd.engine.status import ErrorLog, StatusReporter
    from warpd.state.store import StateStore

    schema = config.schema(name)
    writer_lock = schema_lock.acquire(config.state_dir, name)  # before anything is written; held to the end
    store = StateStore(config.state_dir)
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    stopping = [False]

    def check_supervisor() -> None:
        if os.getppid() != supervisor_pid and not stopping[0]:
            log.warning("schema %s: the supervisor (pid %d) is gone; stopping", name, supervisor_pid)
            signals.put(signal.SIGTERM)

    def on_phase(phase: str) -> None:
        set_title(f"warpd: schema {name} [{'stopping' if stopping[0] and phase != 'stopped' else phase}]")

    reporter = StatusReporter(
        config.state_dir, name, store, errors=errors, on_phase=on_phase, each_second=check_supervisor
    )
    activity.use(reporter.activity)  # statements in flight and retries, for the heartbeat and status

    def should_stop() -> bool:
        reporter.beat()  # the heartbeat: the engine asks between events, chunks and retry waits
        if not signals.empty() and not stopping[0]:
            stopping[0] = True
            set_title(f"warpd: schema {name} [stopping]")
        return stopping[0]

    reporter.start()
    error: str | None = None
    control = ChildControl(name, store, should_stop)
    try:
        log.info(
            "cartridge-warp %s: schema %s from %s to %s (process %d)",
            __version__,
            name,
            config.source.redacted(),
            config.destination.redacted(),
            os.getpid(),
        )
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
        control.close()
        reporter.stop(error)
        writer_lock.release()
