"""warpd's master process: one child per schema, kept running.

The loop (gunicorn's arbiter, supervisor's state machine, patroni's reload):

* signal handlers only put the signal on a queue (and Python's wakeup fd
  interrupts the ``selectors`` wait); the loop calls ``handle_<signal>()``;
* every child that exited is reaped and classified by its exit code;
* heartbeats are read from the children's status files;
* every child's state machine is ticked (:mod:`warpd.supervisor.states`);
* the control socket and the metrics endpoint are served from the same
  loop: the master has no threads, so every fork is clean;
* systemd hears READY/RELOADING/STOPPING/STATUS and the watchdog ping.

Reload (SIGHUP or ``warpctl reload``, one code path) validates the new file
first and keeps the running configuration if it is invalid; otherwise it
acts only on the difference: new schemas start, removed ones stop, changed
ones stop and then start, unchanged ones keep their process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from warpd import __version__, logs, metrics
from warpd.config import CliOverrides, Config, load_config
from warpd.engine import schema_lock
from warpd.engine.schema_process import set_title
from warpd.engine.status import read_status, status_path
from warpd.errors import ConfigError, WarpError
from warpd.redact import redact
from warpd.state.store import StateStore
from warpd.supervisor.commands import Commands
from warpd.supervisor.control import ControlServer, Deferred
from warpd.supervisor.report import status_document
from warpd.supervisor.sdnotify import Notifier
from warpd.supervisor.states import ChildProcess, Goal, State
from warpd.supervisor.system import System
from warpd.supervisor.worker import run_schema

log = logging.getLogger("warpd.supervisor")

TICK_SECONDS = 0.25
_SIGNALS = {
    signal.SIGHUP: "hup",
    signal.SIGTERM: "term",
    signal.SIGINT: "int",
    signal.SIGQUIT: "quit",
    signal.SIGCHLD: "chld",
}


def fingerprint(config: Config, name: str) -> Any:
    """Everything a schema process runs with; equal fingerprints keep the process on reload."""
    return (config.source, config.destination, config.schema(name), config.state_dir, config.dry_run)


class Supervisor:
    """The master: ``run()`` returns the exit code once every child has stopped."""

    def __init__(
        self,
        config: Config,
        config_path: str | None,
        cli: CliOverrides | None = None,
        system: System | None = None,
    ):
        self.config = config
        self.config_path = config_path
        self.cli = cli or CliOverrides()
        self.system = system or System()
        self.selector = selectors.DefaultSelector()
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.children: dict[str, ChildProcess] = {}
        self.notifier = Notifier()
        self.commands = Commands(self)
        self.control = ControlServer(
            config.supervisor.control_socket, self.selector, self.handle_command, self.system.monotonic
        )
        self.stopping = False
        self.started_at = time.time()
        self.metrics_server: Any = None
        self._quit = False
        self._master_lock: schema_lock.SchemaLock | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- the loop --------------------------------------------------------------
    def run(self) -> int:
        set_title("warpd: master")
        self._master_lock = schema_lock.acquire_master(self.config.state_dir)  # one warpd per state_dir
        self._install_signals()
        try:
            self.control.open()
        except BaseException:
            self._master_lock.release()
            raise
        try:
            self._serve_metrics()
            with self.store() as store:
                paused = store.paused()
            for schema in self.config.schemas:
                self._add(schema.name, self.config, paused_schema="" in paused.get(schema.name, set()))
            log.info(
                "warpd %s: supervising %d schema(s): %s (pid %d, config %s)",
                __version__,
                len(self.children),
                ", ".join(self.children),
                os.getpid(),
                self.config_path or "(none)",
            )
            self._tick()  # fork the children before telling systemd we are up
            self.notifier.ready(self.status_line())
            while not self._quit:
                for key, mask in self.selector.select(TICK_SECONDS):
                    self._dispatch(key, mask)
                self._tick()
                if self.stopping and not any(c.alive for c in self.children.values()):
                    break
            with self.store():
                pass  # the last connection to close folds the WAL into the state file: one file to back up
            log.info("warpd stopped")
            return 0
        finally:
            self.control.flush()
            self.control.close()
            if self.metrics_server is not None:
                self.metrics_server.stop()
            self.notifier.close()
            signal.set_wakeup_fd(-1)
            self._master_lock.release()

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        """One ready socket's callback; whatever a client sends, its failure never ends the loop."""
        try:
            key.data(mask)
        except Exception:  # noqa: BLE001 - logged; the children, warpctl and systemd still need the loop
            log.exception("internal error while serving a connection (please report it); carrying on")

    def _tick(self) -> None:
        self._handle_signals()
        if self._quit:
            return
        now = self.system.monotonic()
        for pid, code in self.system.reap():
            child = self._by_pid(pid)
            metrics.mark_dead(pid)
            if child is not None:
                child.exited(code, now)
        self._read_heartbeats()
        for child in list(self.children.values()):
            child.tick(now)
            if child.goal is Goal.STOP and not child.alive and not self.stopping:
                del self.children[child.name]  # removed by a reload, and now stopped
                log.info("schema %s: removed", child.name)
        self.control.tick()
        if self.metrics_server is not None:
            self.metrics_server.tick()
        self.notifier.watchdog(now)
        self.notifier.status(self.status_line())

    def _by_pid(self, pid: int) -> ChildProcess | None:
        for child in self.children.values():
            if child.pid == pid:
                return child
        return None

    def _read_heartbeats(self) -> None:
        for child in self.children.values():
            if child.alive:
                doc = read_status(status_path(self.config.state_dir, child.name))
                if (
                    doc is not None
                    and doc.get("pid") == child.pid
                    and isinstance(doc.get("beat"), int | float)
                ):
                    child.heartbeat = float(doc["beat"])

    # -- children --------------------------------------------------------------
    def _add(self, name: str, config: Config, paused_schema: bool = False) -> ChildProcess:
        child = ChildProcess(
            name, self._target(config, name), fingerprint(config, name), config.supervisor, self.system
        )
        if paused_schema:
            child.goal = Goal.PAUSE
            log.info("schema %s: paused (warpctl resume %s starts it)", name, name)
        self.children[name] = child
        return child

    def _target(self, config: Config, name: str) -> Callable[[], int]:
        return lambda: run_schema(config, name, self._close_inherited)

    def _close_inherited(self) -> None:
        """In a freshly forked child: let go of the master's sockets, pipes and selector."""
        master_lock = self._master_lock.fileno() if self._master_lock is not None else None
        for fd in [self._wake_r, self._wake_w, *self.control.fds(), *([master_lock] if master_lock else [])]:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.metrics_server is not None:
            for fd in self.metrics_server.fds():
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.notifier.close()
        with contextlib.suppress(OSError):
            self.selector.close()

    # -- signals -----------------------------------------------------------------
    def _install_signals(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            self.signals.put(signum)  # nothing else here: the loop acts on it

        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wakeup)
        for sig in _SIGNALS:
            signal.signal(sig, on_signal)

    def _drain_wakeup(self, _mask: int) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._wake_r, 512):
                pass

    def _handle_signals(self) -> None:
        while True:
            try:
                signum = self.signals.get_nowait()
            except queue.Empty:
                return
            getattr(self, f"handle_{_SIGNALS[signal.Signals(signum)]}")()

    def handle_hup(self) -> None:
        self.reload("SIGHUP")

    def handle_term(self) -> None:
        self.stop("SIGTERM")

    def handle_int(self) -> None:
        self.stop("SIGINT")

    def handle_quit(self) -> None:
        log.warning("SIGQUIT: killing every schema process now (no checkpoint for batches in flight)")
        self.notifier.stopping()
        for child in self.children.values():
            if child.pid is not None:
                self.system.kill(child.pid, signal.SIGKILL)
        for child in self.children.values():
            if child.pid is not None:
                self.system.wait(child.pid)
                metrics.mark_dead(child.pid)
                child.pid = None
        self._quit = True

    def handle_chld(self) -> None:
        pass  # reaping happens every tick; the signal only wakes the loop up

    # -- what signals and warpctl do (one code path each) ------------------------------
    def stop(self, why: str) -> dict[str, Any]:
        if not self.stopping:
            self.stopping = True
            log.info(
                "stopping (%s): every schema process commits its batch in flight and exits (within %gs)",
                why,
                self.config.supervisor.stop_timeout,
            )
            self.notifier.stopping()
            for child in self.children.values():
                child.goal = Goal.STOP
        return {"ok": True, "message": "warpd is stopping; each schema commits its batch in flight first"}

    def reload(self, why: str) -> dict[str, Any]:
        if self.stopping:
            return {"ok": False, "error": "warpd is stopping; not reloading"}
        self.notifier.reloading()
        try:
            try:
                new = load_config(self.config_path, cli=self.cli)
                self._check_reloadable(new)
            except ConfigError as exc:
                reason = redact(str(exc))
                log.error(
                    "reload (%s) refused, the running configuration stays in force: %s",
                    why,
                    reason.replace("\n", "; "),
                )
                return {"ok": False, "error": f"invalid configuration, not reloaded:\n{reason}"}
            return self._apply(new, why)
        finally:
            self.notifier.ready(self.status_line())

    def _check_reloadable(self, new: Config) -> None:
        old = self.config
        for what, before, after in (
            ("state_dir", old.state_dir, new.state_dir),
            ("supervisor.control_socket", old.supervisor.control_socket, new.supervisor.control_socket),
        ):
            if before != after:
                raise ConfigError(
                    f"{what}: cannot change while warpd runs ({before!r} -> {after!r}); restart warpd"
                )

    def _apply(self, new: Config, why: str) -> dict[str, Any]:
        added: list[str] = []
        removed: list[str] = []
        changed: list[str] = []
        unchanged: list[str] = []
        wanted = set(new.schema_names)
        for name, running in list(self.children.items()):
            if name not in wanted and running.goal is not Goal.STOP:
                running.goal = Goal.STOP
                removed.append(name)
        with self.store() as store:
            paused = store.paused()
        for name in new.schema_names:
            child = self.children.get(name)
            fp = fingerprint(new, name)
            if child is None:
                self._add(name, new, paused_schema="" in paused.get(name, set()))
                added.append(name)
                continue
            if child.goal is Goal.STOP:  # removed by an earlier reload, listed again
                child.goal = Goal.PAUSE if "" in paused.get(name, set()) else Goal.RUN
            if child.fingerprint == fp:
                unchanged.append(name)
                child.retry()  # a FATAL schema gets another chance: its cause may be fixed elsewhere
            else:
                child.reconfigure(self._target(new, name), fp)
                changed.append(name)
        for child in self.children.values():
            child.policy = new.supervisor
        if new.monitoring.prometheus != self.config.monitoring.prometheus:
            log.warning("monitoring.prometheus changed: the metrics endpoint changes when warpd restarts")
        self.config = new
        logs.configure(new.monitoring.log_level, new.monitoring.log_format)

        def show(names: list[str]) -> str:
            return ", ".join(names) or "none"

        summary = (
            f"started {show(added)}; stopped {show(removed)}; restarted {show(changed)}; "
            f"unchanged {show(unchanged)}"
        )
        log.info("reloaded (%s): %s", why, summary)
        return {
            "ok": True,
            "message": f"reloaded: {summary}",
            "data": {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged},
        }

    # -- warpctl -------------------------------------------------------------------
    def handle_command(self, command: str, args: dict[str, Any], peer: str) -> dict[str, Any] | Deferred:
        return self.commands.handle(command, args, peer)

    def status_document(self) -> dict[str, Any]:
        return status_document(self)

    @contextlib.contextmanager
    def store(self) -> Iterator[StateStore]:
        """The state file, opened for one command and closed again: nothing stays open across a fork."""
        store = StateStore(self.config.state_dir)
        try:
            yield store
        finally:
            store.close()

    # -- what status shows --------------------------------------------------------------
    def status_line(self) -> str:
        counts: dict[str, int] = {}
        for child in self.children.values():
            counts[child.state.value] = counts.get(child.state.value, 0) + 1
        parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        return f"{len(self.children)} schema(s): {parts}" if self.children else "no schemas"

    # -- metrics --------------------------------------------------------------------------
    def _serve_metrics(self) -> None:
        prom = self.config.monitoring.prometheus
        if not prom.enabled:
            return
        metrics.setup(os.path.join(self.config.state_dir, "run", "metrics"), state_dir=self.config.state_dir)
        try:
            self.metrics_server = metrics.serve(
                prom.host, prom.port, self._health, self._ready, threaded=False
            )
        except OSError as exc:
            raise WarpError(
                f"cannot serve metrics on {prom.host}:{prom.port}: {exc.strerror or exc}; choose another "
                "monitoring.prometheus.port (or host), or disable monitoring.prometheus"
            ) from exc
        self.metrics_server.register(self.selector)  # non-blocking, in this loop: no client can stall it

    def _health(self) -> dict[str, Any]:
        # answered from the loop itself: if it answers, the loop turns
        return {"ok": not self.stopping, "schemas": {n: c.state.value for n, c in self.children.items()}}

    def _ready(self) -> dict[str, Any]:
        wanted = [c for c in self.children.values() if c.goal is Goal.RUN]
        ok = not self.stopping and all(c.state is State.RUNNING for c in wanted)
        return {"ok": ok, "schemas": {n: c.state.value for n, c in self.children.items()}}
