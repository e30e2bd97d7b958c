"""One set of tests over every destination: what a test needs to know of the destination it writes to.

A test that takes the ``destination`` fixture (or ``dbs``/``mongo``, which
take it) runs once per destination kind: PostgreSQL (a schema of the test's
name in the ``warp_test`` database) and MySQL/MariaDB (a database of its own
on the local MariaDB, beside the source database: MariaDB -> MariaDB).  The
way dlt's test suite runs one set of tests over every destination.

Tests read the destination only through :class:`DestinationUnderTest`:

- ``query(sql, *tables, args=...)`` runs one statement in which each ``{}``
  stands for a table of the destination schema, quoted the destination's way;
  ``%s`` parameters work on both drivers.  Plain SQL common to both
  dialects (``SELECT``, ``count(*)``, ``WHERE``, ``ORDER BY``) is enough for
  the assertions tests make; where a dialect differs, branch on ``kind``.
- ``count``, ``tables``, ``columns``, ``column_types`` read the catalogue
  (``information_schema`` on both).
- ``connector()`` builds the destination connector of the run (for
  :mod:`warpd.verify` comparisons).

Run one kind only with ``-m 'not mysql_destination'`` style selection:
``pytest -k '[postgresql]'`` or ``-k '[mysql]'``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import psycopg2
import pymysql
from psycopg2 import sql

from warpd.connectors.base import FENCE_TABLE

MYSQL_HOST = os.environ.get("WARP_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("WARP_TEST_MYSQL_PORT", "3306"))
PG_DSN = os.environ.get("WARP_TEST_PG_DSN", "postgresql://warp:warp@127.0.0.1:5432/warp_test")

KINDS = ("postgresql", "mysql")
# tests marked ``destinations(bigquery=True)`` also run against the BigQuery emulator (or real BigQuery:
# WARP_TEST_BIGQUERY_PROJECT); tests/bigquery_support.py
BIGQUERY = "bigquery"


class DestinationUnderTest:
    """The destination of one test: its URI, its schema, and how to read it back."""

    kind = ""
    uri = ""
    conn: Any = None  # an autocommit DB-API connection, as the test's superuser

    def __init__(self, schema: str):
        self.schema = schema  # the destination schema (PostgreSQL) or database (MySQL)

    # -- reading --------------------------------------------------------------
    def ident(self, table: str) -> str:
        raise NotImplementedError

    def query(self, statement: str, *tables: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run ``statement`` with each ``{}`` replaced by a quoted table of the destination schema."""
        text = statement.format(*(self.ident(t) for t in tables)) if tables else statement
        with self.conn.cursor() as cur:
            cur.execute(text, args)
            return list(cur.fetchall()) if cur.description else []

    def count(self, table: str) -> int | None:
        """Rows in ``table``; None when it does not exist."""
        if table not in self.tables():
            return None
        return int(self.query("SELECT count(*) FROM {}", table)[0][0])

    def tables(self) -> list[str]:
        """The tables replicated into the schema (not the fence of streamed batches, FENCE_TABLE)."""
        return sorted(
            r[0]
            for r in self.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                args=(self.schema,),
            )
            if r[0] != FENCE_TABLE
        )

    def columns(self, table: str) -> list[str]:
        """Column names of ``table`` in their order."""
        return [name for name, _type in self.column_types(table)]

    def column_types(self, table: str) -> list[tuple[str, str]]:
        """(name, data type as the catalogue spells it, lower case) of each column, in order."""
        rows = self.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            args=(self.schema, table),
        )
        return [(str(n), str(t).lower()) for n, t in rows]

    def json(self, value: Any) -> Any:
        """A JSON column's value as Python data (PostgreSQL's jsonb arrives decoded, MySQL's as text)."""
        return value

    def connector(self) -> Any:
        """A fresh destination connector for this run (close it after use)."""
        from warpd.connectors.registry import destination_factory

        return destination_factory(self.kind)(self.uri, application_name="cartridge-warp tests")

    def kill_sessions(self, pid: int) -> int:
        """End the destination sessions of process ``pid`` (a cartridge-warp under test); how many.

        Sessions are found by the client's TCP port, so other processes on
        the same server (other tests, other users) are left alone.
        """
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.kind} destination {self.schema}>"


class PostgresUnderTest(DestinationUnderTest):
    kind = "postgresql"

    def __init__(self, schema: str, dsn: str = PG_DSN):
        super().__init__(schema)
        self.uri = dsn
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def ident(self, table: str) -> str:
        return sql.Identifier(self.schema, table).as_string(self.conn)

    def kill_sessions(self, pid: int) -> int:
        ports = list(local_ports(pid))
        if not ports:
            return 0
        rows = self.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND client_port = ANY(%s)",
            args=(ports,),
        )
        return sum(1 for r in rows if r[0])

    def drop(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))

    def close(self) -> None:
        self.conn.close()


class MySQLUnderTest(DestinationUnderTest):
    """A database of its own on the local MariaDB (the source's server: MariaDB -> MariaDB)."""

    kind = "mysql"

    def __init__(self, schema: str):
        super().__init__(schema)
        self.uri = f"mysql://warp:warp@{MYSQL_HOST}:{MYSQL_PORT}/"
        self.conn = pymysql.connect(
            host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", charset="utf8mb4", autocommit=True
        )
        with self.conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")

    def json(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, (str, bytes)) else value

    def ident(self, table: str) -> str:
        return ".".join("`" + part.replace("`", "``") + "`" for part in (self.schema, table))

    def kill_sessions(self, pid: int) -> int:
        ports = local_ports(pid)
        # the source's binlog connection shares the server (MariaDB -> MariaDB): leave it alone
        ids = [
            session
            for session, host, command in self.query(
                "SELECT id, host, command FROM information_schema.processlist WHERE id <> CONNECTION_ID()"
            )
            if command != "Binlog Dump"
            and host.rpartition(":")[2].isdigit()
            and int(host.rpartition(":")[2]) in ports
        ]
        ended = 0
        for session in ids:
            try:
                self.query(f"KILL CONNECTION {int(session)}")
                ended += 1
            except pymysql.err.MySQLError:  # gone already
                pass
        return ended

    def drop(self) -> None:
        self.query("DROP DATABASE IF EXISTS `{}`".format(self.schema.replace("`", "``")))

    def close(self) -> None:
        self.conn.close()


class BigQueryUnderTest(DestinationUnderTest):
    """A dataset of its own in the BigQuery emulator (tests/bigquery_support.py), read through the
    client's DB-API (``%s`` parameters work as on the other drivers)."""

    kind = BIGQUERY

    def __init__(self, schema: str):
        from google.cloud.bigquery import dbapi

        from tests import bigquery_support

        super().__init__(schema)
        self.uri = bigquery_support.destination_uri()
        self.client = bigquery_support.client()
        self.project = self.client.project
        self.conn = dbapi.connect(self.client)

    def ident(self, table: str) -> str:
        return "`" + f"{self.project}.{self.schema}.{table}".replace("`", "\\`") + "`"

    def query(self, statement: str, *tables: str, args: Any = None) -> list[tuple[Any, ...]]:
        text = statement.format(*(self.ident(t) for t in tables)) if tables else statement
        cur = self.conn.cursor()
        try:
            cur.execute(text, args)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        finally:
            cur.close()

    def tables(self) -> list[str]:
        from google.api_core.exceptions import NotFound

        try:
            return sorted(
                t.table_id
                for t in self.client.list_tables(f"{self.project}.{self.schema}")
                if not t.table_id.startswith("_warp_stage_")
            )
        except NotFound:
            return []

    def column_types(self, table: str) -> list[tuple[str, str]]:
        # tables.get, not INFORMATION_SCHEMA (the emulator's misses columns added later)
        t = self.client.get_table(f"{self.project}.{self.schema}.{table}")
        # _warp_order (the position guard's, docs/bigquery.md) is on every table: tests compare the
        # replicated columns, and tests/test_bigquery_destination.py checks the guard itself
        return [(f.name, f.field_type.lower()) for f in t.schema if f.name != "_warp_order"]

    def kill_sessions(self, pid: int) -> int:
        raise NotImplementedError("BigQuery has no sessions to end; the fault tests use an HTTP proxy")

    def drop(self) -> None:
        self.client.delete_dataset(f"{self.project}.{self.schema}", delete_contents=True, not_found_ok=True)

    def close(self) -> None:
        self.conn.close()
        self.client.close()


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process ``pid`` holds open (read from /proc)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[9] in inodes:
                        ports.add(int(fields[1].rpartition(":")[2], 16))
        except OSError:
            continue
    return ports


def destination_under_test(kind: str, source_name: str) -> DestinationUnderTest:
    """The destination for a test whose source database (or schema name) is ``source_name``."""
    if kind == "postgresql":
        return PostgresUnderTest(source_name)
    if kind == "mysql":
        # another database on the source's server: it cannot have the source database's name
        return MySQLUnderTest(source_name + "_d")
    if kind == BIGQUERY:
        return BigQueryUnderTest(source_name)
    raise ValueError(f"no destination kind {kind!r}")


def with_destination_schema(
    config_text: str | None, schema_name: str, dest: DestinationUnderTest
) -> str | None:
    """A configuration (YAML text) that sends ``schema_name`` to ``dest.schema``.

    Returns ``config_text`` unchanged when the destination schema already is
    the schema's name (PostgreSQL), or when the file sets one itself.
    """
    import yaml

    if dest.schema == schema_name:
        return config_text
    data: dict[str, Any] = (yaml.safe_load(config_text) if config_text else None) or {}
    schemas: Sequence[Any] = data.setdefault("schemas", []) or []
    data["schemas"] = schemas = list(schemas)
    for entry in schemas:
        if isinstance(entry, dict) and entry.get("name") == schema_name:
            entry.setdefault("destination_schema", dest.schema)
            break
    else:
        schemas.append({"name": schema_name, "destination_schema": dest.schema})
    return yaml.safe_dump(data, sort_keys=False)
