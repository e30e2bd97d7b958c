"""What a forked schema process does: set itself up, then run the schema as single mode does.

The supervisor does its work before ``fork()``; everything here runs after
it, in the child (gunicorn's ``init_process``): signal handlers of its own,
a fresh random seed, its own log set-up and process title, and the state
file and database connections opened here, never inherited.  The schema
itself runs in :func:`warpd.engine.schema_process.run_schema`, the body
``cartridge-warp --mode single`` runs too.

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

from warpd import logs, metrics
from warpd.config import Config
from warpd.engine import schema_process
from warpd.engine.schema_process import Role, set_title, stop_on_signals
from warpd.exits import run_reporting


class _NotATerminal:
    """stderr, minus the terminal: one live progress line per process would garble a shared tty."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def run_schema(config: Config, name: str, close_inherited: Callable[[], None]) -> int:
    """The body of a schema process; returns its exit code."""
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    role = Role(program="warpd", supervisor_pid=os.getppid())
    _init_process(config, name, signals, close_inherited)
    try:
        return run_reporting(
            lambda: schema_process.run_schema(config, name, signals, role),
            f"schema {name}",
            config_errors_to_stderr=False,
        )
    finally:
        logging.shutdown()


def _init_process(
    config: Config, name: str, signals: queue.SimpleQueue[int], close_inherited: Callable[[], None]
) -> None:
    signal.set_wakeup_fd(-1)
    stop_on_signals(signals)
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
