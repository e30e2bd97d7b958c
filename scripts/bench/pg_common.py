"""What the benchmarks into PostgreSQL share: the connection, a CHECKPOINT between phases, the server's
settings for the report header, and the raw write limit: COPY FROM STDIN into a table of cartridge-warp's
DDL.

Imported as ``pg_common`` by the scripts beside it; it imports ``common`` first, which puts this
checkout's ``warpd/`` first on ``sys.path``.
"""

from __future__ import annotations

import io
import os
import time
from typing import Any

import psycopg2
from common import BenchError, CpuWindow, rate, say
from psycopg2 import sql

from warpd.connectors.postgresql.destination import create_table_sql

PG_DSN = "postgresql://warp:warp@127.0.0.1:5432/warp_test"
PG_SUPERUSER = os.environ.get("WARP_BENCH_PG_SUPERUSER", "postgres")
SETTINGS = ("shared_buffers", "synchronous_commit", "max_wal_size", "wal_level")  # the report header's


def pg(dsn: str = PG_DSN) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn, application_name="warp-bench")
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    conn.commit()
    return conn


def pg_superuser_checkpoint() -> None:
    """Flush PostgreSQL's dirty buffers between phases so one phase's WAL does not slow the next."""
    try:
        conn = psycopg2.connect(
            host="127.0.0.1", port=5432, user=PG_SUPERUSER, dbname="warp_test", connect_timeout=5
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
        conn.close()
    except psycopg2.Error as exc:
        say(f"(no CHECKPOINT between phases: {str(exc).strip()})")


def pg_facts() -> dict[str, str]:
    """PostgreSQL's version and the settings that move the figures (the report header)."""
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT n, current_setting(n) FROM unnest(%s::text[]) AS n", (["server_version", *SETTINGS],)
        )
        got = dict(cur.fetchall())
    conn.close()
    return {
        "postgresql": got.pop("server_version"),
        "postgresql_settings": ", ".join(f"{k}={v}" for k, v in got.items()),
    }


def raw_copy(plan: Any, data: io.BytesIO, rows: int, label: str = "raw (a)") -> dict[str, Any]:
    """COPY FROM STDIN of ``data`` (``rows`` lines of COPY text, read from its start) into an empty table
    made by cartridge-warp's DDL for ``plan``, one transaction, timed alone; the plan's schema is dropped
    first and afterwards, and the count loaded is checked.  A CHECKPOINT comes just before, so the WAL of
    an earlier phase is not flushed in this one's time."""
    size = len(data.getbuffer())
    schema = sql.Identifier(plan.dest_schema)
    target = sql.Identifier(plan.dest_schema, plan.dest_table)
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        for stmt in create_table_sql(plan):
            cur.execute(stmt)
    pg_superuser_checkpoint()
    columns = sql.SQL(", ").join(map(sql.Identifier, plan.data_columns()))
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(target, columns).as_string(conn)
    say(
        f"{label}: COPY of {rows:,} rows ({size / 2**20:,.1f} MiB of text) into "
        f"{plan.dest_schema}.{plan.dest_table}"
    )
    data.seek(0)
    cpu = CpuWindow()
    t0 = time.monotonic()
    with conn.cursor() as cur:
        cur.copy_expert(copy, data, size=1 << 20)
    conn.commit()
    seconds = time.monotonic() - t0
    busy = cpu.stop()
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(target))
        copied = cur.fetchone()[0]
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
    conn.close()
    if copied != rows:
        raise BenchError(f"{label}: COPY loaded {copied} rows, expected {rows}")
    say(f"  {rows / seconds:,.0f} rows/s ({seconds:.2f}s)")
    return rate(rows, seconds, mib=round(size / 2**20, 1), **busy)
