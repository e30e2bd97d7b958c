"""One writer per schema: an exclusive lock the schema process holds for its whole life.

A warpd child and a ``cartridge-warp --mode single`` process alike take
``<state_dir>/run/<schema>.lock`` (``flock``, exclusive) before they write
anything, and keep it until they exit; the kernel releases it however the
process ends, kill -9 included.  A second process for the same schema and
state directory (a replacement started while the old writer still finishes,
or a single-mode process beside warpd) waits a few seconds for the lock and
then refuses to start, naming the process that holds it: two writers on one
schema would interleave their snapshots and batches.

The supervisor itself holds ``<state_dir>/run/.warpd.lock`` (:func:`acquire_master`) for its life, so a
second ``warpd`` on the same state directory refuses to start (exit code 2) rather than forking a second
set of children; its schema processes let go of their copy of that descriptor at fork.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable

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

    def fileno(self) -> int | None:
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None


def lock_path(state_dir: str, schema: str) -> str:
    return status_path(state_dir, schema)[: -len(".json")] + ".lock"


def master_lock_path(state_dir: str) -> str:
    """``<state_dir>/run/.warpd.lock``: no schema's file can have that name (theirs never start with a dot)."""
    return os.path.join(state_dir, RUN_DIR, ".warpd.lock")


def acquire_master(state_dir: str, wait: float = WAIT_SECONDS) -> SchemaLock:
    """The supervisor's lock on the state directory: one ``warpd`` per state directory. Raises
    :class:`SchemaLocked` (exit code 2) naming the warpd that holds it."""
    path = master_lock_path(state_dir)
    return _acquire(
        state_dir,
        path,
        wait,
        lambda holder: (
            f"the state directory {state_dir} is already supervised by another warpd, {holder} (lock file "
            f"{path}); two supervisors would run every schema twice: stop that one first (systemctl stop "
            "cartridge-warp), or give this one its own state_dir"
        ),
    )


def acquire(state_dir: str, schema: str, wait: float = WAIT_SECONDS) -> SchemaLock:
    """Take the schema's lock, waiting up to ``wait`` seconds; raise :class:`SchemaLocked` if it stays held."""
    path = lock_path(state_dir, schema)
    return _acquire(
        state_dir,
        path,
        wait,
        lambda holder: (
            f"schema {schema!r} is already replicated from the state directory {state_dir} by "
            f"{holder} (lock file {path}); two writers would corrupt the destination: stop that "
            "process first, or give this one its own state_dir"
        ),
    )


def held(state_dir: str, schema: str) -> bool:
    """Whether a process holds the schema's lock now (replicates it from ``state_dir``).  Probes with a
    shared lock, released at once: a process taking the lock meanwhile waits for it (``acquire``)."""
    try:
        fd = os.open(lock_path(state_dir, schema), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: never run from here (or unreadable: treated as not running)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (closing releases a lock taken above)
    return False


def _acquire(state_dir: str, path: str, wait: float, refusal: Callable[[str], str]) -> SchemaLock:
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
                raise SchemaLocked(refusal(holder)) from None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for the message above
    return SchemaLock(path, fd)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode("ascii").strip())
        return f"process {pid}"
    return "another process"
