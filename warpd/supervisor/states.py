"""One schema process's life, as a state machine the supervisor ticks.

As in supervisor's ``process.py``, every transition happens in one of two
places: :meth:`ChildProcess.tick` (time passed: start, give up waiting,
declare healthy, kill a hung process) and :meth:`ChildProcess.exited` (the
process was reaped: classify why it died).  Time is ``time.monotonic()``
passed in by the caller, and every system call goes through a
:class:`~warpd.supervisor.system.System`, so tests drive it by hand.

::

    STOPPED --goal RUN--> STARTING --heartbeat--> RUNNING
       ^                     |                       |
       |                 died: exit 2 -> FATAL       | died: exit 1, a signal, no heartbeat
       |                 otherwise  -> BACKOFF <-----+  (CRASHLOOP once it died crash_loop_threshold
       |                                |               times within crash_loop_window: retried at the cap)
       |                 next_start --> STARTING
    STOPPING <--goal PAUSE/STOP, or a changed config-- STARTING/RUNNING
       |--exit--> STOPPED (or PAUSED); a changed config then starts again
"""

from __future__ import annotations

import collections
import enum
import logging
import signal
from collections.abc import Callable
from typing import Any, Protocol

from warpd import metrics
from warpd.config import SupervisorConfig
from warpd.supervisor.system import describe_exit

log = logging.getLogger(__name__)

EXIT_USAGE = 2  # a configuration or usage error: restarting cannot fix it


class State(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backing off"
    CRASHLOOP = "crash-looping"
    STOPPING = "stopping"
    PAUSED = "paused"
    FATAL = "fatal"


ALIVE = (State.STARTING, State.RUNNING, State.STOPPING)


class Goal(enum.Enum):
    RUN = "run"
    PAUSE = "pause"  # warpctl pause SCHEMA: stop and stay stopped (across restarts of warpd, too)
    STOP = "stop"  # removed from the configuration, or warpd is shutting down


class SystemCalls(Protocol):
    def spawn(self, target: Callable[[], int]) -> int: ...

    def kill(self, pid: int, sig: int) -> None: ...

    def random(self) -> float: ...


def restart_delay(policy: SupervisorConfig, attempt: int, crash_looping: bool, rand: float) -> float:
    """Seconds before restart number ``attempt`` (1 = the first after a healthy run).

    ``base * 2 ** (attempt - 1)`` up to the cap, varied by +/- 20 % so that
    schemas that died together do not restart in lockstep, and never above
    the cap.  A crash-looping schema waits the cap (less up to 20 %).
    """
    base, cap = policy.restart_backoff_base, policy.restart_backoff_cap
    delay = cap if crash_looping else min(cap, base * 2.0 ** min(attempt - 1, 60))
    return max(0.0, min(cap, delay * (1.0 + 0.2 * (2.0 * rand - 1.0))))


class ChildProcess:
    """A schema's process: what it should be doing (``goal``) and what it is doing (``state``)."""

    def __init__(
        self,
        name: str,
        target: Callable[[], int],
        fingerprint: Any,
        policy: SupervisorConfig,
        system: SystemCalls,
    ):
        self.name = name
        self.target = target  # what the forked process runs; returns its exit code
        self.fingerprint = fingerprint  # the configuration it runs with, compared on reload
        self.policy = policy
        self.system = system
        self.state = State.STOPPED
        self.goal = Goal.RUN
        self.pid: int | None = None
        self.spawned_at = 0.0
        self.running_since: float | None = None
        self.heartbeat: float | None = None  # monotonic time of the process's last sign of progress
        self.attempt = 0  # deaths since the process last ran healthily
        self.deaths: collections.deque[float] = collections.deque()  # within crash_loop_window
        self.restarts = 0
        self.next_start: float | None = None
        self.stop_deadline: float | None = None
        self.killed = False
        self.kill_reason: str | None = None
        self.last_exit: str | None = None
        self.pending: tuple[Callable[[], int], Any] | None = (
            None  # a changed config, once the old one stopped
        )

    # -- what the supervisor asks ----------------------------------------------
    @property
    def alive(self) -> bool:
        return self.pid is not None

    def reconfigure(self, target: Callable[[], int], fingerprint: Any) -> None:
        """Run with a changed configuration: stop the running process first, never two at once."""
        if self.alive:
            self.pending = (target, fingerprint)
        else:
            self._apply(target, fingerprint)

    def retry(self) -> None:
        """Start again now (warpctl resume, a reload) if waiting in BACKOFF, CRASHLOOP or FATAL."""
        if self.state in (State.BACKOFF, State.CRASHLOOP, State.FATAL):
            self.state = State.STOPPED
            self.next_start = None

    # -- transitions ---------------------------------------------------------------
    def tick(self, now: float) -> None:
        state = self.state
        if state in (State.STARTING, State.RUNNING):
            if self.goal is not Goal.RUN or self.pending is not None:
                self._terminate(now)
                return
            if self.heartbeat is not None and self.heartbeat >= self.spawned_at and state is State.STARTING:
                self.state = State.RUNNING
                self.running_since = now
            if (
                self.state is State.RUNNING
                and (self.attempt or self.deaths)
                and self.running_since is not None
                and now - self.running_since >= self.policy.healthy_after
            ):
                log.info(
                    "schema %s: healthy for %.0fs; its restart backoff is reset",
                    self.name,
                    now - self.running_since,
                )
                self.attempt = 0
                self.deaths.clear()
            last_sign = max(self.heartbeat or 0.0, self.spawned_at)
            if not self.killed and now - last_sign > self.policy.heartbeat_timeout:
                self.kill_reason = f"no heartbeat for {now - last_sign:.0f}s"
                log.error(
                    "schema %s: process %s shows %s; killing it (SIGKILL)",
                    self.name,
                    self.pid,
                    self.kill_reason,
                )
                self._kill()
        elif state is State.STOPPING:
            if not self.killed and self.stop_deadline is not None and now >= self.stop_deadline:
                self.kill_reason = f"did not stop within {self.policy.stop_timeout:g}s"
                log.warning(
                    "schema %s: process %s %s; killing it (SIGKILL)", self.name, self.pid, self.kill_reason
                )
                self._kill()
        elif state in (State.BACKOFF, State.CRASHLOOP):
            if self.goal is not Goal.RUN:
                self.state = State.PAUSED if self.goal is Goal.PAUSE else State.STOPPED
            elif self.next_start is not None and now >= self.next_start:
                self.restarts += 1
                metrics.child_restart(self.name)
                self._spawn(now)
        elif state in (State.STOPPED, State.PAUSED):
            if self.goal is Goal.RUN:
                self._spawn(now)
            elif self.goal is Goal.PAUSE:
                self.state = State.PAUSED
        # FATAL waits for a reload or warpctl resume (retry())

    def exited(self, code: int, now: float) -> None:
        """The process was reaped with ``code`` (negative: killed by that signal)."""
        how = describe_exit(code) + (f" ({self.kill_reason})" if self.kill_reason else "")
        pid, self.pid = self.pid, None
        self.running_since = None
        self.heartbeat = None
        metrics.process_up(self.name, False)
        if self.state is State.STOPPING:
            self.last_exit = f"stopped ({how})" if code != 0 else "stopped"
            log.info("schema %s: process %s stopped (%s)", self.name, pid, describe_exit(code))
            self.state = State.PAUSED if self.goal is Goal.PAUSE else State.STOPPED
            if self.pending is not None:
                self._apply(*self.pending)
            return
        self.last_exit = how
        if self.goal is not Goal.RUN:
            self.state = State.PAUSED if self.goal is Goal.PAUSE else State.STOPPED
            return
        if code == EXIT_USAGE:
            self.state = State.FATAL
            log.error(
                "schema %s: process %s %s: a configuration error, so it is not restarted; fix the "
                "configuration and reload (warpctl reload), or warpctl resume %s",
                self.name,
                pid,
                how,
                self.name,
            )
            return
        self.attempt += 1
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > self.policy.crash_loop_window:
            self.deaths.popleft()
        looping = len(self.deaths) >= self.policy.crash_loop_threshold
        delay = restart_delay(self.policy, self.attempt, looping, self.system.random())
        self.next_start = now + delay
        self.state = State.CRASHLOOP if looping else State.BACKOFF
        log.warning(
            "schema %s: process %s %s; %s, restarting in %.1fs",
            self.name,
            pid,
            how,
            f"crash-looping ({len(self.deaths)} deaths within {self.policy.crash_loop_window:g}s)"
            if looping
            else f"failure {self.attempt}",
            delay,
        )

    def describe(self, now: float) -> str:
        """The state as warpctl shows it: ``backing off (next try in 4s)``."""
        if self.state in (State.BACKOFF, State.CRASHLOOP) and self.next_start is not None:
            return f"{self.state.value} (next try in {max(0.0, self.next_start - now):.0f}s)"
        if self.state is State.FATAL:
            return "fatal (configuration error; fix it and reload)"
        return self.state.value

    # -- helpers -------------------------------------------------------------------
    def _apply(self, target: Callable[[], int], fingerprint: Any) -> None:
        self.target, self.fingerprint, self.pending = target, fingerprint, None
        self.attempt = 0
        self.deaths.clear()
        self.retry()

    def _spawn(self, now: float) -> None:
        self.pid = self.system.spawn(self.target)
        self.state = State.STARTING
        self.spawned_at = now
        self.heartbeat = None
        self.killed = False
        self.kill_reason = None
        self.stop_deadline = None
        self.next_start = None
        log.info("schema %s: started process %s", self.name, self.pid)

    def _terminate(self, now: float) -> None:
        assert self.pid is not None
        self.state = State.STOPPING
        self.stop_deadline = now + self.policy.stop_timeout
        self.system.kill(self.pid, signal.SIGTERM)

    def _kill(self) -> None:
        assert self.pid is not None
        self.killed = True
        self.system.kill(self.pid, signal.SIGKILL)
