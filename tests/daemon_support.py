"""Running the real ``warpd`` and ``warpctl`` in tests (test_daemon.py, test_warpctl.py).

The state directory lives in a short directory under /tmp: a UNIX socket path
may not exceed 107 bytes, and pytest's tmp_path can.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest
from conftest import MYSQL_HOST, MYSQL_PORT, PG_DSN, ROOT, Databases, mysql_root, wait_until
from lifeline import tied_to_this_process

SUPERVISOR = """\
supervisor:
  restart_backoff_base: 0.3
  restart_backoff_cap: 2
  crash_loop_threshold: 3
  crash_loop_window: 60
  healthy_after: 30
  heartbeat_timeout: 8
  stop_timeout: 20
"""


def config_text(state_dir: str, schemas: list[str], extra: str = "", schema_extra: str = "") -> str:
    """A warpd configuration: one schema per MariaDB database of the same name."""
    entries = "".join(f"  - name: {name}\n{schema_extra}" for name in schemas)
    return (
        f'source:\n  connection_string: "mysql://warp:warp@{MYSQL_HOST}:{MYSQL_PORT}"\n'
        f'destination:\n  connection_string: "{PG_DSN}"\n'
        f"state_dir: {state_dir}\n"
        "max_batch_latency_ms: 50\n"
        f"{SUPERVISOR}{extra}"
        f"schemas:\n{entries}"
    )


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CARTRIDGE_WARP_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    env["PYTHONPATH"] = ROOT
    env.update(extra or {})
    return env


class Daemon:
    """A ``warpd --config FILE`` process and the warpctl that talks to it."""

    def __init__(self, home: str, launcher: list[str] | None = None, env: dict[str, str] | None = None):
        self.home = home
        self.state_dir = os.path.join(home, "state")
        self.config_path = os.path.join(home, "config.yaml")
        self.launcher = launcher or [sys.executable, "-m", "warpd.supervisor.main"]
        self.env = clean_env(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = ""
        self._log: Any = None

    def write_config(
        self, schemas: list[str], extra: str = "", schema_extra: str = "", text: str | None = None
    ) -> None:
        with open(self.config_path, "w", encoding="utf-8") as handle:
            handle.write(
                text if text is not None else config_text(self.state_dir, schemas, extra, schema_extra)
            )

    def start(self) -> Daemon:
        self.log_path = os.path.join(self.home, f"warpd-{uuid.uuid4().hex[:6]}.log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(  # stopped with SIGTERM if the test run dies (tests/lifeline.py)
            tied_to_this_process([*self.launcher, "--config", self.config_path]),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
        )
        return self

    @property
    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def stop(self, timeout: float = 40) -> int:
        if self.alive():
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    # -- warpctl -------------------------------------------------------------
    def warpctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run_warpctl("--config", self.config_path, *args, env=self.env, timeout=timeout)

    def status(self) -> dict[str, Any]:
        result = self.warpctl("status", "--json")
        assert result.returncode == 0, (result.returncode, result.stderr, self.tail())
        return json.loads(result.stdout)

    def schema(self, name: str) -> dict[str, Any] | None:
        result = self.warpctl("status", "--json")
        if result.returncode == 3 and self.alive():
            return None  # still starting: no socket yet
        assert result.returncode == 0, (result.returncode, result.stderr, self.tail())
        for entry in json.loads(result.stdout)["schemas"]:
            if entry["name"] == name:
                return entry
        return None

    def wait_for(
        self, name: str, check: Callable[[dict[str, Any]], Any], timeout: float = 60, what: str = ""
    ) -> dict[str, Any]:
        """Wait until ``check(status of schema name)`` holds, failing early if warpd died."""
        last: list[Any] = [None]

        def probe() -> Any:
            assert self.alive(), (
                f"warpd exited with {self.proc.poll() if self.proc else None}:\n{self.tail()}"
            )
            entry = self.schema(name)
            last[0] = entry
            return entry if entry is not None and check(entry) else None

        try:
            return wait_until(probe, timeout, what or f"schema {name}", interval=0.3)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast status: {last[0]}\n--- warpd log ---\n{self.tail()}") from None

    def streaming(self, name: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_for(
            name, lambda s: s["display"] == "streaming" and s["live"], timeout, f"{name} streaming"
        )

    def tail(self, n: int = 6000) -> str:
        return self.output[-n:] if self.log_path else ""


def run_warpctl(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warpd.supervisor.warpctl", *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        cwd=ROOT,
        timeout=timeout,
        **kwargs,
    )


@pytest.fixture
def daemon_home() -> Iterator[str]:
    home = tempfile.mkdtemp(prefix="wd", dir="/tmp")
    try:
        yield home
    finally:
        for _ in range(10):  # a schema process may still be writing its last status file
            shutil.rmtree(home, ignore_errors=True)
            if not os.path.exists(home):
                break
            time.sleep(0.3)


@pytest.fixture
def daemon(daemon_home: str) -> Iterator[Daemon]:
    d = Daemon(daemon_home)
    try:
        yield d
    finally:
        if d.alive():
            d.signal(signal.SIGKILL)
            d.wait(10)
        # a child of a warpd killed above stops by itself once it sees its parent gone; make sure
        for name in (
            os.listdir(os.path.join(d.state_dir, "run"))
            if os.path.isdir(os.path.join(d.state_dir, "run"))
            else []
        ):
            if name.endswith(".json"):
                try:
                    with open(os.path.join(d.state_dir, "run", name), encoding="utf-8") as handle:
                        os.kill(int(json.load(handle)["pid"]), signal.SIGKILL)
                except (OSError, ValueError, KeyError):
                    pass


@pytest.fixture
def databases() -> Iterator[Callable[[], Databases]]:
    """More test databases (the ``dbs`` fixture gives one): ``databases()`` makes another."""
    made: list[Databases] = []

    def make() -> Databases:
        d = Databases(f"warp_t_{uuid.uuid4().hex[:10]}")
        made.append(d)
        return d

    yield make
    for d in made:
        d.drop()


class Writer:
    """Changes rows of one table in a thread: inserts, updates and deletes, until stopped."""

    def __init__(self, database: str, table: str = "items", start_id: int = 100_000):
        self.database, self.table, self.next_id = database, table, start_id
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            conn = mysql_root(self.database)
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    i = self.next_id
                    self.next_id += 1
                    t = f"`{self.table}`"
                    cur.execute(f"INSERT INTO {t} (id, v) VALUES (%s, %s)", (i, f"w{i}"))  # noqa: S608
                    cur.execute(f"UPDATE {t} SET v = CONCAT(v, '+') WHERE id = %s", (i - 3,))  # noqa: S608
                    if i % 4 == 0:
                        cur.execute(f"DELETE FROM {t} WHERE id = %s", (i - 7,))  # noqa: S608
                    self.count += 1
                    time.sleep(0.005)
            conn.close()
        except pymysql.err.MySQLError as exc:
            self.error = exc


def make_items(d: Databases, rows: int = 200, table: str = "items") -> None:
    d.sql(f"CREATE TABLE `{table}` (id INT PRIMARY KEY, v VARCHAR(200))")
    if rows:
        d.many(f"INSERT INTO `{table}` (id, v) VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, rows + 1)])


def schema_connections(dbs: Databases) -> int:
    """PostgreSQL sessions of the schema's process (its writers' and its resync, replay and verify ones)."""
    rows = dbs.pg_rows(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
        (f"cartridge-warp {dbs.name}%",),
    )
    return int(rows[0][0])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def proc_title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()


class DestinationLock:
    """An ACCESS EXCLUSIVE lock on a destination table, held in an open transaction until released.

    The schema process's next write to the table waits for it, as behind a
    long ``ALTER TABLE`` or a busy destination.
    """

    def __init__(self, dbs: Databases, table: str = "items"):
        import psycopg2
        from psycopg2 import sql

        self.dbs = dbs
        self.conn = psycopg2.connect(PG_DSN)
        with self.conn.cursor() as cur:
            cur.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(dbs.name, table))
            )

    def __enter__(self) -> DestinationLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()

    def waiters(self) -> int:
        """How many of the schema's destination sessions wait for a lock."""
        rows = self.dbs.pg_rows(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
            (f"cartridge-warp {self.dbs.name}"[:63],),
        )
        return int(rows[0][0])


class TcpProxy:
    """A TCP forwarder to PostgreSQL that the test can cut and restore: a destination outage that
    stops no server.  While cut, every connection through it is closed and new ones are refused."""

    def __init__(self, dsn: str = PG_DSN):
        from urllib.parse import urlsplit

        parts = urlsplit(dsn)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        self.dsn = parts._replace(netloc=f"{userinfo}127.0.0.1:{self.port}").geturl()
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closed.set()
        self.listener.close()
        self.cut()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def restore(self) -> None:
        self._cut.clear()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, 10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
