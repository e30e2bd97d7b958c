"""Stopping and starting the test databases, identified by port and pid file.

Fault tests restart MariaDB and PostgreSQL.  The machine may run other
instances of either (another port, another data directory), so a server is
never found by process name: MariaDB is the process whose pid is in the
``@@pid_file`` of the server answering on the test port, restarted with the
command line it was running with; PostgreSQL is the cluster whose
``config_file`` the server on the test port reports.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass

import psycopg2
import pymysql
from conftest import MYSQL_HOST, MYSQL_PORT, PG_DSN, mysql_root, pg_superuser, wait_until


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our own child, not yet reaped) is as good as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def mariadb_answers() -> bool:
    try:
        mysql_root().close()
        return True
    except pymysql.err.MySQLError:
        return False


def postgres_answers() -> bool:
    try:
        psycopg2.connect(PG_DSN, connect_timeout=3).close()
        return True
    except psycopg2.Error:
        return False


@dataclass(frozen=True)
class MariaDBServer:
    """The MariaDB answering on the test port: its pid file and how it was started."""

    pid_file: str
    argv: tuple[str, ...]

    @classmethod
    def discover(cls) -> MariaDBServer:
        conn = mysql_root()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@pid_file")
                (pid_file,) = cur.fetchone()
        finally:
            conn.close()
        pid = _read_pid(pid_file)
        if pid is None:
            raise AssertionError(f"MariaDB on {MYSQL_HOST}:{MYSQL_PORT} has no pid in {pid_file}")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = tuple(a.decode() for a in f.read().split(b"\0") if a)
        return cls(pid_file, argv)

    def pid(self) -> int | None:
        pid = _read_pid(self.pid_file)
        return pid if pid is not None and pid_alive(pid) else None

    def stop(self) -> None:
        pid = self.pid()
        subprocess.run(
            ["mariadb", "-uroot", f"-h{MYSQL_HOST}", f"-P{MYSQL_PORT}", "-e", "shutdown"], check=True
        )
        if pid is None:
            return
        try:
            wait_until(lambda: not pid_alive(pid), 60, f"MariaDB (pid {pid}) to stop")
        except AssertionError:
            # a thread that ignores KILL (e.g. a long REPLACE() evaluation) holds up shutdown
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), 30, f"MariaDB (pid {pid}) to die")

    def start(self, *extra_args: str) -> None:
        """Start this server as it ran before (plus ``extra_args``) and wait until it answers."""
        if not mariadb_answers():
            pid = self.pid()
            if pid is not None:  # still shutting down
                wait_until(lambda: not pid_alive(pid) or mariadb_answers(), 60, "MariaDB to finish stopping")
        if not mariadb_answers():
            subprocess.Popen(  # noqa: S603 - the server's own command line, read from /proc
                [*self.argv, *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_until(mariadb_answers, 120, "MariaDB to answer", interval=0.5)

    def restart(self, *extra_args: str) -> None:
        self.stop()
        self.start(*extra_args)


@dataclass(frozen=True)
class PostgresCluster:
    """The PostgreSQL cluster answering on the test DSN (Debian's pg_ctlcluster VERSION NAME)."""

    version: str
    name: str

    @classmethod
    def discover(cls) -> PostgresCluster:
        conn = pg_superuser()  # config_file is for superusers (or pg_read_all_settings) only
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW config_file")
                (config_file,) = cur.fetchone()
        finally:
            conn.close()
        # /etc/postgresql/<version>/<cluster>/postgresql.conf
        parts = config_file.split("/")
        if len(parts) < 3 or parts[-1] != "postgresql.conf":
            raise AssertionError(f"PostgreSQL's config_file {config_file!r} is not a Debian cluster's")
        return cls(parts[-3], parts[-2])

    def _ctl(self, action: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action],
            capture_output=True,
        )

    def stop(self) -> None:
        """Stop the cluster (pg_ctlcluster's default, fast shutdown); ``ensure()`` starts it again."""
        result = self._ctl("stop")
        if result.returncode != 0:
            raise AssertionError(result.stderr.decode(errors="replace").strip())

    def restart(self) -> None:
        result = self._ctl("restart")
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        self.ensure()

    def ensure(self) -> None:
        if not postgres_answers():
            self._ctl("start")
        wait_until(postgres_answers, 120, "PostgreSQL to answer", interval=0.5)


def _read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None
