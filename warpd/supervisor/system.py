"""The supervisor's system calls and clocks, behind one small object.

The state machine (:mod:`warpd.supervisor.states`) and the master only call
these methods, so tests replace :class:`System` with a fake that records
kills, hands out made-up pids and moves time by hand: the supervisor's logic
is tested without forking (as supervisor's ``DummyOptions`` does).
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class System:
    """The real thing: fork, waitpid, kill, CLOCK_MONOTONIC, random."""

    def spawn(self, target: Callable[[], int]) -> int:
        """Fork; the child runs ``target`` and exits with its return value. Returns the child's pid."""
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never return into the supervisor's code
            code = 1
            try:
                die_with_parent(parent)
                code = target()
            except BaseException:  # noqa: BLE001 - the exit code is the child's only report
                code = 1
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:  # noqa: BLE001 - a closed pipe; exit anyway
                        pass
                os._exit(code)
        return pid

    def reap(self) -> list[tuple[int, int]]:
        """(pid, exit code) of every child that has exited; a negative code is the signal that killed it."""
        out = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            out.append((pid, os.waitstatus_to_exitcode(status)))
        return out

    def wait(self, pid: int) -> int | None:
        """Block until ``pid`` exits; its exit code, or None if it was not our child."""
        try:
            _pid, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return None
        return os.waitstatus_to_exitcode(status)

    def kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # already gone; the reaper will see it

    def monotonic(self) -> float:
        return time.monotonic()

    def random(self) -> float:
        return random.random()


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """In a freshly forked child: be sent ``sig`` (SIGKILL) when ``parent`` dies, and exit now if it already has.

    A schema process must not outlive its supervisor: a replacement supervisor
    would start a second writer for the same schema.  SIGKILL, not SIGTERM: a
    child stopping slowly (inside a long statement, committing a large batch)
    would keep its schema's lock past the 5 s its replacement waits for it, and
    the replacement would exit 2 (FATAL until a reload or ``warpctl resume``).
    Killed, it holds nothing: the kernel drops its lock and closes its
    connections (what they had begun is rolled back), and the next child
    replays from the checkpoint.  The second check closes the window between
    ``fork()`` and ``prctl()`` in which the parent may die.

    The kernel sends ``sig`` when the *thread* that forked this process exits,
    not its process: fork from a thread that lives as long as the parent
    (warpd's master has no other thread).
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        except (OSError, AttributeError) as exc:
            log.warning("prctl(PR_SET_PDEATHSIG) is not available: %s", exc)
    if os.getppid() != parent:
        os._exit(1)


def describe_exit(code: int) -> str:
    """``exited with status 1`` or ``killed by SIGKILL``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with status {code}"
