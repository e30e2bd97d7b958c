"""One writer per schema: an exclusive lock the schema process holds for its whole life.

A warpd child and a ``cartridge-warp --mode single`` process alike take
``<state_dir>/run/<schema>.lock`` (``flock``, exclusive) before they write
anything, and keep it until they exit; the kernel releases it however the
process ends, kill -9 included.  A second process for the same schema and
state directory (a replacement started while the old writer still finishes,
or a single-mode process beside warpd) waits a few seconds for the lock and
then refuses to start, naming the process that holds it: two writers on one
schema would interleave their snapshots and batches.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from warpd.engine.status import RUN_DIR, status_path
from warpd.errors import ConfigError
from warpd.state.permissions import ensure_state_dir

WAIT_SECONDS = 5.0


class SchemaLocked(ConfigError):
    """Another process replicates this schema from the same state directory (exit code 2)."""


class SchemaLock:
    """Held from :func:`acquire` until :meth:`release` or the end of the process."""

    def __init__(self, path: str, fd: int):
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None


def lock_path(state_dir: str, schema: str) -> str:
    return status_path(state_dir, schema)[: -len(".json")] + ".lock"


def acquire(state_dir: str, schema: str, wait: float = WAIT_SECONDS) -> SchemaLock:
    """Take the schema's lock, waiting up to ``wait`` seconds; raise :class:`SchemaLocked` if it stays held."""
    path = lock_path(state_dir, schema)
    ensure_state_dir(state_dir)  # private (0700) when the lock is the first thing to create it
    os.makedirs(os.path.join(state_dir, RUN_DIR), mode=0o750, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise SchemaLocked(
                    f"schema {schema!r} is already replicated from the state directory {state_dir} by "
                    f"{holder} (lock file {path}); two writers would corrupt the destination: stop that "
                    "process first, or give this one its own state_dir"
                ) from None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for the message above
    return SchemaLock(path, fd)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode("ascii").strip())
        return f"process {pid}"
    return "another process"
