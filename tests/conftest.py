"""Fixtures for tests against the real local MariaDB and PostgreSQL.

Each test gets its own MariaDB source database (``warp_t_<id>``) and its own
destination schema, dropped afterwards.  A test marked ``destinations`` (or in
a module with ``pytestmark = pytest.mark.destinations``) runs once per
destination kind (``[postgresql]``, ``[mysql]``: see ``tests/destinations.py``);
any other test writes to PostgreSQL.  ``scripts/setup-databases.sh`` must have
run (``make test`` and ``.ci/run`` do that).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pymysql
import pytest
from google.api_core.exceptions import GoogleAPICallError
from psycopg2 import sql

from tests.destinations import (
    BIGQUERY,
    KINDS,
    DestinationUnderTest,
    destination_under_test,
    with_destination_schema,
)
from tests.lifeline import tied_to_this_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MYSQL_HOST = os.environ.get("WARP_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("WARP_TEST_MYSQL_PORT", "3306"))
PG_DSN = os.environ.get("WARP_TEST_PG_DSN", "postgresql://warp:warp@127.0.0.1:5432/warp_test")
PG_SUPERUSER = os.environ.get("WARP_TEST_PG_SUPERUSER", "postgres")  # as scripts/setup-databases.sh


def pg_superuser() -> psycopg2.extensions.connection:
    """An autocommit connection as the superuser, to the server and database of ``PG_DSN``."""
    params = psycopg2.extensions.parse_dsn(PG_DSN)
    conn = psycopg2.connect(
        host=params.get("host", "127.0.0.1"),
        port=params.get("port", "5432"),
        dbname=params.get("dbname", "warp_test"),
        user=PG_SUPERUSER,
    )
    conn.autocommit = True
    return conn


def mysql_root(database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=MYSQL_HOST,
        port=MYSQL_PORT,
        user="root",
        password="",
        database=database,
        charset="utf8mb4",
        autocommit=True,
    )


def wait_until(
    check: Callable[[], Any], timeout: float = 60.0, what: str = "condition", interval: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_stopped(pid: int, timeout: float = 10.0) -> None:
    """After SIGSTOP (delivered asynchronously): wait until every thread of ``pid`` is stopped."""

    def stopped() -> bool:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/stat", encoding="ascii") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        return all(state == "T" for state in states)

    wait_until(stopped, timeout, f"process {pid} to stop", interval=0.01)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # tests marked ``destinations`` run once per destination kind
    # (``destinations(bigquery=True)``: also against the BigQuery emulator, tests/bigquery_support.py)
    marker = metafunc.definition.get_closest_marker("destinations")
    if "destination_kind" in metafunc.fixturenames and marker:
        kinds = KINDS + ((BIGQUERY,) if marker.kwargs.get("bigquery") else ())
        metafunc.parametrize("destination_kind", kinds, indirect=True)


@pytest.fixture
def destination_kind(request: pytest.FixtureRequest) -> str:
    """``postgresql`` or ``mysql``; PostgreSQL for a test not marked ``destinations``."""
    return str(getattr(request, "param", "postgresql"))


class Databases:
    """A test's MariaDB source database and its destination schema (``dest``)."""

    def __init__(self, name: str, kind: str = "postgresql"):
        self.name = name
        self.source_uri = f"mysql://warp:warp@{MYSQL_HOST}:{MYSQL_PORT}/{name}"
        self._my = mysql_root()
        with self._my.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        self._my.select_db(name)
        self.dest: DestinationUnderTest = destination_under_test(kind, name)
        self.dest_uri = self.dest.uri
        self.pg = psycopg2.connect(PG_DSN)
        self.pg.autocommit = True

    @property
    def dest_schema(self) -> str:
        return self.dest.schema

    def sql(self, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement at the MariaDB source (as root) and return its rows."""
        with self._my.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall())

    def many(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        with self._my.cursor() as cur:
            cur.executemany(statement, rows)

    def pg_rows(self, query: str, args: Any = None) -> list[tuple[Any, ...]]:
        """A query at PostgreSQL (the destination of tests not marked ``destinations``)."""
        with self.pg.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall()) if cur.description else []

    def pg_count(self, table: str) -> int | None:
        if self.dest.kind != "postgresql":
            return self.dest.count(table)
        try:
            # quoted by psycopg2: hostile test table names must not become SQL
            return self.pg_rows(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(self.name, table)))[
                0
            ][0]
        except psycopg2.errors.UndefinedTable:
            return None

    def source_count(self, table: str) -> int:
        return self.sql("SELECT COUNT(*) FROM `{}`".format(table.replace("`", "``")))[0][0]

    def drop(self) -> None:
        with self._my.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        self._my.close()
        with self.pg.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        self.pg.close()
        try:
            self.dest.drop()
        finally:
            self.dest.close()


@pytest.fixture
def dbs(destination_kind: str) -> Iterator[Databases]:
    d = Databases(f"warp_t_{uuid.uuid4().hex[:10]}", destination_kind)
    try:
        yield d
    finally:
        d.drop()


class Warp:
    """A ``cartridge-warp --mode single`` process under test."""

    def __init__(
        self, dbs: Databases, state_dir: str, config: str | None, extra: list[str], env: dict[str, str]
    ):
        self.cmd = [
            sys.executable,
            "-m",
            "warpd",
            "--mode",
            "single",
            "--source",
            dbs.source_uri,
            "--destination",
            dbs.dest_uri,
            "--schema",
            dbs.name,
            "--state-dir",
            state_dir,
            *extra,
        ]
        config = _config_for(dbs, config, state_dir)
        if config:
            self.cmd += ["--config", config]
        self.env = {**os.environ, "PYTHONPATH": ROOT, **env}
        self.log_path = os.path.join(state_dir, f"warp-{uuid.uuid4().hex[:6]}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Warp:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(  # stopped with SIGTERM if the test run dies (tests/lifeline.py)
            tied_to_this_process(self.cmd), stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT
        )
        return self

    @property
    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self._log.close()
        return rc


def _config_for(dbs: Databases, config: str | None, state_dir: str) -> str | None:
    """``config`` with the schema sent to the test's destination schema (a copy when it must change)."""
    text = None
    if config:
        with open(config, encoding="utf-8") as f:
            text = f.read()
    changed = with_destination_schema(text, dbs.name, dbs.dest)
    if changed == text:
        return config
    path = os.path.join(state_dir, f"config-{dbs.dest.kind}-{uuid.uuid4().hex[:6]}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(changed or "")
    return path


@pytest.fixture
def warp(dbs: Databases, tmp_path: Any) -> Iterator[Callable[..., Warp]]:
    started: list[Warp] = []
    state_dir = str(tmp_path / "state")
    os.makedirs(state_dir, exist_ok=True)

    def make(
        config: str | None = None,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        start: bool = True,
    ) -> Warp:
        w = Warp(dbs, state_dir, config, extra or [], env or {})
        started.append(w)
        return w.start() if start else w

    yield make
    for w in started:
        if w.alive():
            w.kill()


def write_config(tmp_path: Any, text: str) -> str:
    path = os.path.join(str(tmp_path), "config.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def converged(dbs: Databases, tables: list[str] | None = None, soft_delete: bool = False) -> list[str]:
    """Differences between every (or the given) source table and its destination copy; [] when equal."""
    from warpd.connectors.mysql.source import MySQLSource
    from warpd.verify import table_difference

    source = MySQLSource(dbs.source_uri, dbs.name, server_id=999)
    dest = dbs.dest.connector()
    problems = []
    try:
        for table in tables or source.list_tables():
            plan = dest.plan(source.describe(table), dbs.dest_schema, soft_delete=soft_delete, metadata=False)
            problem = table_difference(source, dest, plan)
            if problem:
                problems.append(problem)
    finally:
        source.close()
        dest.close()
    return problems


def wait_converged(
    dbs: Databases, w: Warp | None, timeout: float, tables: list[str] | None = None, soft_delete: bool = False
) -> None:
    """Wait until every (or the given) source table equals its destination copy, while ``w`` stays up."""
    wait_matching(lambda: converged(dbs, tables, soft_delete), w, timeout)


def wait_matching(
    differences: Callable[[], list[str]],
    w: Warp | None,
    timeout: float,
    passing: tuple[type[BaseException], ...] = (psycopg2.Error, pymysql.err.MySQLError, GoogleAPICallError),
) -> None:
    """Wait until ``differences()`` is empty while ``w`` stays up; ``passing`` errors count as differences."""
    problems: list[str] = []

    def check() -> bool:
        if w is not None:
            assert w.alive(), f"cartridge-warp exited with {w.proc.poll()}:\n{w.output[-6000:]}"
        try:
            problems[:] = differences()
        except passing as exc:  # e.g. a rename not applied yet
            problems[:] = [f"{type(exc).__name__}: {exc}".strip()]
        return not problems

    try:
        wait_until(check, timeout, "the destination to match the source", interval=0.5)
    except AssertionError as exc:
        if "timed out" not in str(exc):
            raise
        tail = w.output[-4000:] if w is not None else ""
        raise AssertionError(
            f"not converged after {timeout}s: {problems}\n--- log tail ---\n{tail}"
        ) from None


# the warpd daemon's fixtures (daemon, daemon_home, databases) for test_daemon.py and test_warpctl.py
pytest_plugins = ["daemon_support"]
