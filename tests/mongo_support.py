"""MongoDB back ends for the integration tests, and how to compare a database with its copy.

Every MongoDB integration test runs twice: against the wire-protocol test
server under ``tests/mongo_wire`` (always), and against a real replica set
when one is available: ``WARP_TEST_MONGO_URI`` (e.g.
``mongodb://127.0.0.1:27017/?replicaSet=rs0``), else ``tests/docker-compose.yml``
through pytest-docker when a Docker engine answers.  Without either, the real
variant is skipped and pytest prints why (``-ra``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from psycopg2 import sql

from tests.destinations import DestinationUnderTest, destination_under_test

PG_DSN = os.environ.get("WARP_TEST_PG_DSN", "postgresql://warp:warp@127.0.0.1:5432/warp_test")
REAL_URI = os.environ.get("WARP_TEST_MONGO_URI", "")
SKIP_REAL = (
    "no real MongoDB replica set: set WARP_TEST_MONGO_URI=mongodb://HOST:PORT/?replicaSet=rs0, or run the "
    "tests where a Docker engine answers (tests/docker-compose.yml, MongoDB 7 single-node replica set)"
)


def with_database(uri: str, database: str) -> str:
    """``uri`` with its path set to ``/database`` (query string kept)."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


class Backend:
    """A MongoDB deployment under test; ``server`` is the wire test server, None for a real one."""

    def __init__(self, kind: str, uri: str, server: Any = None):
        self.kind = kind
        self.uri = uri
        self.server = server

    @property
    def is_wire(self) -> bool:
        return self.server is not None


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def backend(kind: str, request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The back end of one parametrised test module (see the module docstring)."""
    if kind == "wire":
        from tests.mongo_wire import MongoTestServer

        server = MongoTestServer().start()
        try:
            yield Backend(kind, server.uri, server)
        finally:
            server.stop()
        return
    if REAL_URI:
        yield Backend(kind, REAL_URI)
        return
    if not _docker_engine():
        pytest.skip(SKIP_REAL)
    services = request.getfixturevalue("docker_services")
    port = services.port_for("mongo", 27017)
    uri = f"mongodb://127.0.0.1:{port}/?replicaSet=rs0&directConnection=true"

    def ready() -> bool:
        import pymongo

        try:
            with pymongo.MongoClient(uri, serverSelectionTimeoutMS=1000) as client:
                return bool(client.admin.command("hello").get("isWritablePrimary"))
        except Exception:  # noqa: BLE001 - not up yet
            return False

    services.wait_until_responsive(check=ready, timeout=120.0, pause=1.0)
    yield Backend(kind, uri)


class MongoDatabases:
    """One test's MongoDB database (``warp_t_<hex>``) and its destination schema (``dest``).

    PostgreSQL's schema has the database's name; MySQL's database is named
    ``warp_t_<hex>_d`` (see ``tests/destinations.py``).
    """

    def __init__(self, back: Backend, kind: str = "postgresql"):
        import pymongo

        self.backend = back
        self.name = f"warp_t_{uuid.uuid4().hex[:10]}"
        self.source_uri = with_database(back.uri, self.name)
        self.dest: DestinationUnderTest = destination_under_test(kind, self.name)
        self.dest_uri = self.dest.uri
        self.client: Any = pymongo.MongoClient(back.uri, tz_aware=True)
        self.db = self.client[self.name]
        self.pg = psycopg2.connect(PG_DSN)
        self.pg.autocommit = True

    def pg_rows(self, query: Any, args: Any = None) -> list[tuple[Any, ...]]:
        with self.pg.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall()) if cur.description else []

    @property
    def dest_schema(self) -> str:
        return self.dest.schema

    def pg_count(self, table: str) -> int | None:
        if self.dest.kind != "postgresql":
            return self.dest.count(table)
        try:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(self.name, table))
            return int(self.pg_rows(query)[0][0])
        except psycopg2.errors.UndefinedTable:
            return None

    def drop(self) -> None:
        try:
            self.client.drop_database(self.name)
        finally:
            self.client.close()
            with self.pg.cursor() as cur:
                cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.name)))
            self.pg.close()
            try:
                self.dest.drop()
            finally:
                self.dest.close()


def column(m: MongoDatabases, name: str) -> str:
    """``name`` quoted as a column of ``m``'s destination (backticks for MySQL and BigQuery, double quotes
    else)."""
    if m.dest.kind == "mysql":
        return "`" + name.replace("`", "``") + "`"
    if m.dest.kind == "bigquery":
        return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
    return '"' + name.replace('"', '""') + '"'


def dest_rows(
    m: MongoDatabases, table: str, *columns: str, order: str = "_id", where: str = ""
) -> list[tuple[Any, ...]]:
    """``SELECT columns FROM table [WHERE where] ORDER BY order`` at ``m``'s destination, names quoted."""
    cols = ", ".join(column(m, c) for c in columns) or "*"
    text = f"SELECT {cols} FROM {{}}" + (f" WHERE {where}" if where else "") + f" ORDER BY {column(m, order)}"
    return m.dest.query(text, table)


def json_value(m: MongoDatabases, value: Any) -> Any:
    """A JSON column's value as Python data: ``jsonb`` and BigQuery's JSON arrive decoded (a JSON string as a
    str), MySQL's as text."""
    if m.dest.kind in ("postgresql", "bigquery") or value is None:
        return value
    return json.loads(value)


def mongo_converged(
    m: MongoDatabases,
    state_dir: str,
    soft_delete: bool = False,
    flatten_depth: int = 0,
    max_columns: int | None = None,
) -> list[str]:
    """Differences between every collection and its destination table; [] when equal.

    The destination's shape is the one the engine recorded in the state file;
    each document is mapped with it (docs/mongodb-mapping.md) and compared with
    the row read back from the destination.
    """
    from warpd.config.model import TableSettings
    from warpd.connectors.mongodb.source import MongoSource
    from warpd.state.store import StateStore
    from warpd.verify import table_difference

    store = StateStore(state_dir)
    source = MongoSource(m.source_uri, m.name, m.name, {})
    settings = TableSettings(flatten_depth=flatten_depth)
    if max_columns is not None:  # the schema's, when the test sets one
        settings = dataclasses.replace(settings, max_columns=max_columns)
    source.configure(lambda _t: settings)
    dest = m.dest.connector()
    problems = []
    try:
        shapes = store.latest_schemas(m.name)
        for coll in source.list_tables():
            shape = shapes.get(coll)
            if shape is None:
                problems.append(f"{coll}: no shape recorded yet")
                continue
            plan = dest.plan(shape, m.dest_schema, soft_delete=soft_delete, metadata=False)
            problem = table_difference(source, dest, plan)
            if problem:
                problems.append(problem)
    finally:
        source.close()
        dest.close()
        store.close()
    return problems
