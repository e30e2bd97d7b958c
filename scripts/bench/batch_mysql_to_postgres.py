#!/usr/bin/env python3
"""Benchmark: cartridge-warp ``mode: batch``, MariaDB -> PostgreSQL: a full refresh and incremental runs
against the raw read and write limits of the same run.

What it does (``make bench-batch`` runs it with the defaults; this is not a test):

1. waits (``--quiet-wait``) for an idle machine, then creates the MariaDB database
   ``warp_bench_batch_<random>`` with one table ``items`` of ``--rows`` rows: a ``BIGINT`` key, seven
   typical columns and the cursor ``updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON
   UPDATE CURRENT_TIMESTAMP(6)`` with an index on it, generated server-side from the SEQUENCE engine
   (``sql_log_bin=0``).  The loaded rows' ``updated_at`` lie in the past (2024), so the default
   ``safety_lag`` (1 minute) re-reads only a few dozen of them;
2. raw limits of all the rows (skip with ``--skip-raw``): (a) PostgreSQL ``COPY ... FROM STDIN`` into
   a plain table with cartridge-warp's DDL (the COPY text, encoded by the server, is produced
   beforehand; that read is (b2)); (b) ``SELECT *`` through PyMySQL's unbuffered SSCursor (the MySQL
   source's driver and cursor), typed values;
3. full refresh: ``python -m warpd --mode single`` on a schema with ``mode: batch``, ``sync:
   full_refresh`` and ``schedule: {every: 1d}``, so exactly one run happens, at start-up; the end of
   the run is read from the state file (``StateStore.batch_tables``), then SIGTERM.  Rows/s from
   process start and of the run alone (the run's own start and end in the state file);
4. incremental: another process on another destination schema, ``cursor_column: updated_at``
   (schedule ``every: 1d``).  Its first run reads every row by the cursor.  Then ``--changed`` rows
   (default 10 % of ``--rows``, spread over the table, in statements of 1,000 rows) are updated, so
   their cursor moves, and a second run is asked for as ``warpctl sync`` does (a ``sync`` request in
   the state file, carried out between runs); that run is timed alone: rows/s of the rows it moved;
5. raw limits of the changed rows: (b') the same ``SELECT`` the run does (``updated_at >=`` the
   first run's mark minus the 1-minute safety lag), typed, through the SSCursor; (a') COPY of those
   rows into an empty plain table;
6. verifies count, sum(quantity) and max(updated_at) of the source against both destinations, prints
   the figures (and JSON with ``--json``), and drops the MariaDB database and the PostgreSQL schemas
   (``--keep`` keeps them and the state directories).

Every warp figure is printed with its ratio to the raw read and the raw COPY of the same rows, and to
both in series (1 / (1/read + 1/COPY): one reader and one writer sharing the machine one after the
other).  On a small shared VM absolute rates vary a lot between runs; the ratios within one run are
steadier.

Needs the local databases of scripts/setup-databases.sh: MariaDB on 127.0.0.1:3306 (root without
password; user warp/warp), PostgreSQL on 127.0.0.1:5432 (user warp/warp, database warp_test).  Warp's
own settings can be varied with CARTRIDGE_WARP_* variables (docs/configuration.md, e.g.
CARTRIDGE_WARP_SNAPSHOT_CHUNK_SIZE), which the child processes inherit.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import uuid
from typing import Any

import pymysql
import pymysql.cursors
from batch_common import TABLE, BatchSource, add_arguments, changed_rows, run, when
from common import BenchError, rate, say  # the checkout's warpd, first on sys.path (see common.py)
from mysql_common import copy_text_expr, machine, machine_header, mysql, raw_read
from pg_common import raw_copy

from warpd.connectors.mysql.source import MySQLSource
from warpd.connectors.postgresql.destination import make_plan

LOAD_CHUNK = 100_000
UPDATE_STATEMENT_ROWS = 1_000

CREATE_TABLE = f"""CREATE TABLE {TABLE} (
    id          BIGINT NOT NULL PRIMARY KEY,
    customer_id INT NOT NULL,
    sku         VARCHAR(32) NOT NULL,
    name        VARCHAR(64) NOT NULL,
    price       DECIMAL(12,2) NOT NULL,
    quantity    INT NOT NULL,
    status      VARCHAR(16) NOT NULL,
    note        TEXT,
    created_at  DATETIME(6) NOT NULL,
    updated_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    KEY ix_updated_at (updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

# ~200 bytes a row, every value derived from the sequence number; updated_at in the past, one second
# apart (plus microseconds), so the cursor is unique and the safety lag re-reads few rows.
LOAD_SQL = (  # the table name is TABLE, spelled out
    "INSERT INTO items (id, customer_id, sku, name, price, quantity, status, note, created_at, updated_at) "
    "SELECT seq, seq % 50000, CONCAT('SKU-', LPAD(seq % 100000, 6, '0')), "
    "CONCAT('item ', seq, ' ', LEFT(MD5(seq), 16)), (seq % 1000000) / 100, seq % 1000, "
    "ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'done'), IF(seq % 5 = 0, NULL, CONCAT('note ', MD5(seq))), "
    "TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND, "
    "TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL ((seq * 7919) % 1000000) MICROSECOND "
    "FROM seq_{a}_to_{b}"
)


# --------------------------------------------------------------------------- data
def create_source(db: str, rows: int) -> dict[str, Any]:
    say(f"creating MariaDB database {db} with {rows:,} rows (SEQUENCE engine, sql_log_bin=0)")
    t0 = time.monotonic()
    conn = mysql()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
            cur.execute(f"USE `{db}`")
            cur.execute(CREATE_TABLE)
            for a in range(1, rows + 1, LOAD_CHUNK):
                cur.execute(LOAD_SQL.format(a=a, b=min(rows, a + LOAD_CHUNK - 1)))
            cur.execute(f"ANALYZE TABLE {TABLE}")
            cur.fetchall()
            cur.execute(
                "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_NAME = %s",
                (db, TABLE),
            )
            size = int(cur.fetchone()[0] or 0)
    finally:
        conn.close()
    seconds = time.monotonic() - t0
    say(f"  loaded in {seconds:.1f}s ({size / 2**20:,.0f} MiB of InnoDB data and index)")
    return {"load_seconds": round(seconds, 2), "innodb_mib": round(size / 2**20, 1)}


def change_rows(db: str, rows: int, changed: int) -> dict[str, Any]:
    """Update ``changed`` rows spread over the table (every ``step``-th id), in statements of
    UPDATE_STATEMENT_ROWS rows; ON UPDATE CURRENT_TIMESTAMP(6) moves their cursor."""
    step = max(1, rows // changed)
    say(
        f"changing {changed:,} rows (every {step}th id, {UPDATE_STATEMENT_ROWS:,} a statement, sql_log_bin=0)"
    )
    conn = mysql(db)
    done = 0
    t0 = time.monotonic()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            a = 1
            while done < changed and a <= rows:
                b = a + step * UPDATE_STATEMENT_ROWS - 1
                n = min(UPDATE_STATEMENT_ROWS, changed - done)
                cur.execute(
                    f"UPDATE {TABLE} SET quantity = quantity + 1, status = 'changed' "  # noqa: S608 - constants
                    "WHERE id BETWEEN %s AND %s AND id %% %s = 0 ORDER BY id LIMIT %s",
                    (a, b, step, n),
                )
                done += cur.rowcount
                a = b + 1
    finally:
        conn.close()
    seconds = time.monotonic() - t0
    say(f"  {done:,} rows changed in {seconds:.1f}s")
    return {"rows": done, "every_nth_id": step, "seconds": round(seconds, 2)}


# --------------------------------------------------------------------------- raw limits
def raw_limits(db: str, raw_schema: str, floor: Any | None, label: str) -> dict[str, Any]:
    """(b) typed SSCursor read, (b2) server-encoded COPY lines read and (a) COPY into an empty plain
    table of cartridge-warp's DDL, of the rows of ``items`` at or after ``floor`` (all when None), in
    the order a batch run reads them."""
    where, args = ("WHERE updated_at >= %s", (floor,)) if floor is not None else ("", ())
    order = "ORDER BY updated_at, id" if where else "ORDER BY id"
    what = "the changed rows" if where else "all rows"
    out = {"read": raw_read(db, TABLE, None, f"raw (b{label})", f"{where} {order}", args, what)}

    src = MySQLSource(f"mysql://warp:warp@127.0.0.1:3306/{db}", db, server_id=4_242_031)
    try:
        plan = make_plan(src.describe(TABLE), raw_schema, soft_delete=False, metadata=False)
    finally:
        src.close()
    say(f"raw (b2{label}): reading {what} as COPY lines the server encodes (the text for raw (a{label}))")
    select = ", ".join(copy_text_expr(c) for c in plan.source.columns)
    buf = io.BytesIO()
    conn = mysql(db, cursorclass=pymysql.cursors.SSCursor)
    encoded = 0
    try:
        t0 = time.monotonic()
        with conn.cursor() as cur:
            cur.execute(f"SELECT CONCAT_WS(CHAR(9), {select}) FROM {TABLE} {where} {order}", args)  # noqa: S608
            while batch := cur.fetchmany(20_000):
                encoded += len(batch)
                buf.write(("\n".join(r[0] for r in batch) + "\n").encode("utf-8"))
        seconds = time.monotonic() - t0
    finally:
        conn.close()
    if encoded != out["read"]["rows"]:
        raise BenchError(f"raw: read {out['read']['rows']} rows, then {encoded} encoded")
    out["read_encoded"] = rate(encoded, seconds)
    say(f"  {encoded / seconds:,.0f} rows/s ({seconds:.2f}s)")
    out["copy"] = raw_copy(plan, buf, encoded, f"raw (a{label})")
    return out


# --------------------------------------------------------------------------- the source
class MariaDBItems:
    """The MariaDB side of the benchmark (scripts/bench/batch_common.py): the database ``name`` and its
    table ``items``."""

    read_label = "PyMySQL SSCursor read, typed"
    errors: tuple[type[BaseException], ...] = (pymysql.err.MySQLError,)

    def __init__(self, name: str):
        self.name = name
        self.connection_string = f"mysql://warp:warp@127.0.0.1:3306/{name}"

    def machine(self) -> dict[str, Any]:
        return machine()

    def header(self, fig: dict[str, Any]) -> list[str]:
        return machine_header("cartridge-warp benchmark: mode: batch, MariaDB -> PostgreSQL", fig)

    def load(self, rows: int) -> dict[str, Any]:
        return create_source(self.name, rows)

    def raw_limits(self, raw_schema: str, floor: Any | None, label: str) -> dict[str, Any]:
        return raw_limits(self.name, raw_schema, floor, label)

    def change(self, rows: int, changed: int) -> dict[str, Any]:
        return change_rows(self.name, rows, changed)

    def max_cursor(self) -> Any:
        return self._one(f"SELECT max(updated_at) FROM {TABLE}")[0]  # noqa: S608 - constants

    def checksum(self) -> tuple[int, int, str]:
        n, s, m = self._one(f"SELECT count(*), sum(quantity), max(updated_at) FROM {TABLE}")  # noqa: S608
        return int(n), int(s or 0), when(m)

    def _one(self, statement: str) -> tuple[Any, ...]:
        conn = mysql(self.name)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return tuple(cur.fetchone())
        finally:
            conn.close()

    def drop(self) -> None:
        conn = mysql()
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        conn.close()


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(p, default_rows=1_000_000)
    args = p.parse_args(argv)
    changed = changed_rows(p, args)
    source: BatchSource = MariaDBItems(f"warp_bench_batch_{uuid.uuid4().hex[:8]}")
    return run(source, args, changed, {})


if __name__ == "__main__":
    sys.exit(main())
