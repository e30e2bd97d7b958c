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
import datetime as dt
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any

import psycopg2
import pymysql
import pymysql.cursors
from common import (  # the checkout's warpd, first on sys.path (see common.py)
    BenchError,
    CpuWindow,
    Warp,
    ratio,
    report_tail,
    say,
    wait_for_quiet,
    warpd_revision,
)
from mysql_common import PG_DSN, copy_text_expr, machine, machine_header, mysql, pg, pg_superuser_checkpoint

from warpd.connectors.mysql.source import MySQLSource
from warpd.connectors.postgresql.destination import create_table_sql, make_plan

TABLE = "items"
LOAD_CHUNK = 100_000
UPDATE_STATEMENT_ROWS = 1_000
SAFETY_LAG_S = 60  # the default safety_lag of a date/time cursor (warpd/engine/batch_mode.py)
STATE_POLL = 0.1

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


def drop_everything(db: str, pg_schemas: list[str]) -> None:
    conn = mysql()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
    conn.close()
    conn = pg()
    with conn, conn.cursor() as cur:
        for schema in pg_schemas:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    conn.close()


# --------------------------------------------------------------------------- raw limits
def raw_limits(db: str, raw_schema: str, where: str = "", args: tuple[Any, ...] = ()) -> dict[str, Any]:
    """(b) typed SSCursor read, (b2) server-encoded COPY lines read and (a) COPY into an empty plain
    table of cartridge-warp's DDL, of the rows of ``items`` that ``where`` selects (all by default),
    in the cursor's order as a batch run reads them."""
    order = "ORDER BY updated_at, id" if where else "ORDER BY id"
    label = "the changed rows" if where else "all rows"
    out: dict[str, Any] = {}

    say(f"raw (b): reading {label} with PyMySQL SSCursor, typed values")
    conn = mysql(db, cursorclass=pymysql.cursors.SSCursor)
    count = 0
    try:
        cpu = CpuWindow(os.getpid())
        t0 = time.monotonic()
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {TABLE} {where} {order}", args)  # noqa: S608 - constants
            while batch := cur.fetchmany(10_000):
                count += len(batch)
        seconds = time.monotonic() - t0
        used = cpu.stop()
    finally:
        conn.close()
    out["read"] = {"rows": count, "seconds": round(seconds, 3), "rows_per_s": round(count / seconds)}
    out["read"] |= {"machine_busy_pct": used["machine_busy_pct"], "client_cpu_s": used["warp_cpu_s"]}
    say(f"  {count / seconds:,.0f} rows/s ({seconds:.2f}s, {count:,} rows)")

    src = MySQLSource(f"mysql://warp:warp@127.0.0.1:3306/{db}", db, server_id=4_242_031)
    try:
        plan = make_plan(src.describe(TABLE), raw_schema, soft_delete=False, metadata=False)
    finally:
        src.close()
    say(f"raw (b2): reading {label} as COPY lines the server encodes (the text for raw (a))")
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
    out["read_encoded"] = {
        "rows": encoded,
        "seconds": round(seconds, 3),
        "rows_per_s": round(encoded / seconds),
    }
    say(f"  {encoded / seconds:,.0f} rows/s ({seconds:.2f}s)")

    size = buf.tell()
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{raw_schema}" CASCADE')
        cur.execute(f'CREATE SCHEMA "{raw_schema}"')
        for stmt in create_table_sql(plan):
            cur.execute(stmt)
    pg_superuser_checkpoint()
    columns = ", ".join(f'"{c}"' for c in plan.data_columns())
    say(f"raw (a): COPY of {encoded:,} rows ({size / 2**20:,.1f} MiB of text) into {raw_schema}.{TABLE}")
    buf.seek(0)
    cpu = CpuWindow()
    t0 = time.monotonic()
    with conn.cursor() as cur:
        cur.copy_expert(f'COPY "{raw_schema}".{TABLE} ({columns}) FROM STDIN', buf, size=1 << 20)
    conn.commit()
    seconds = time.monotonic() - t0
    busy = cpu.stop()
    with conn, conn.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{raw_schema}".{TABLE}')  # noqa: S608 - constants
        copied = cur.fetchone()[0]
        cur.execute(f'DROP SCHEMA "{raw_schema}" CASCADE')
    conn.close()
    if copied != count or encoded != count:
        raise BenchError(f"raw: read {count}, encoded {encoded}, COPY loaded {copied} rows")
    out["copy"] = {"rows": copied, "seconds": round(seconds, 3), "rows_per_s": round(copied / seconds)}
    out["copy"] |= {"mib": round(size / 2**20, 1)} | busy
    say(f"  {copied / seconds:,.0f} rows/s ({seconds:.2f}s)")
    return out


# --------------------------------------------------------------------------- cartridge-warp
def write_config(path: str, db: str, dest_schema: str, incremental: bool) -> None:
    schema: dict[str, Any] = {
        "name": db,
        "destination_schema": dest_schema,
        "mode": "batch",
        "schedule": {"every": "1d"},  # one run at start-up; later runs only when asked for
        "sync": "full_refresh",
    }
    if incremental:
        schema["tables"] = [{"name": TABLE, "cursor_column": "updated_at"}]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(
            {
                "source": {"connection_string": f"mysql://warp:warp@127.0.0.1:3306/{db}"},
                "destination": {"connection_string": PG_DSN},
                "schemas": [schema],
            },
            f,
        )


def wait_run(warp: Warp, schema: str, after: float, rows: int, label: str) -> dict[str, Any]:
    """Poll the state file until a run of ``items`` started after ``after`` (Unix time) has finished;
    its rows, its own duration (start and end as the state file has them) and the process's CPU."""
    cpu = CpuWindow(warp.pid)
    store = warp.store()
    deadline = time.monotonic() + max(900.0, rows / 200)
    while time.monotonic() < deadline:
        t = store.batch_tables(schema).get(TABLE)
        if t is not None and t.run_started and t.run_started > after and t.run_status in ("ok", "failed"):
            seen = time.monotonic()
            if t.run_status != "ok":
                raise BenchError(f"the {label} run failed: {t.run_error}\n{warp.log_tail()}")
            run_s = float(t.run_finished) - float(t.run_started)
            out = {
                "rows": t.rows_moved,
                "run_seconds": round(run_s, 3),
                "rows_per_s": round(t.rows_moved / run_s) if run_s > 0 else None,
                "seen_at": seen,
                "run_started": t.run_started,
            }
            out |= cpu.stop()
            if t.rows_moved:
                out["cpu_s_per_million_rows"] = round(out["warp_cpu_s"] * 1e6 / t.rows_moved, 2)
            return out
        warp.check_alive()
        time.sleep(STATE_POLL)
    raise BenchError(f"timed out waiting for the {label} run:\n{warp.log_tail()}")


def first_run(warp: Warp, schema: str, rows: int, label: str) -> dict[str, Any]:
    """Start the process and time its start-up run (schedule every 1d: the only one)."""
    say(f"{label}: starting cartridge-warp (log {warp.log_path})")
    before = time.time()
    started = warp.start()
    out = wait_run(warp, schema, before, rows, label)
    total = out.pop("seen_at") - started
    out["seconds_from_start"] = round(total, 2)
    out["rows_per_s_from_start"] = round(out["rows"] / total)
    out["startup_seconds"] = round(out["run_started"] - before, 2)  # process start -> run start (approx.)
    say(
        f"  {out['rows']:,} rows: {out['rows_per_s']:,} rows/s in the run ({out['run_seconds']}s), "
        f"{out['rows_per_s_from_start']:,} rows/s from process start ({total:.2f}s)"
    )
    return out


def checksum_source(db: str) -> tuple[int, int, str]:
    conn = mysql(db)
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*), sum(quantity), max(updated_at) FROM {TABLE}")  # noqa: S608
        n, s, m = cur.fetchone()
    conn.close()
    return int(n), int(s or 0), _when(m)


def checksum_pg(schema: str) -> tuple[int, int, str]:
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(f'SELECT count(*), sum(quantity), max(updated_at) FROM "{schema}".{TABLE}')  # noqa: S608
        n, s, m = cur.fetchone()
    conn.close()
    return int(n), int(s or 0), _when(m)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, dt.datetime) else str(value)


# --------------------------------------------------------------------------- report
def report(fig: dict[str, Any]) -> str:
    raw, raw_c = fig.get("raw", {}), fig.get("raw_changed", {})
    rows: list[tuple[str, str, str]] = []

    def add(label: str, value: str, note: str = "") -> None:
        rows.append((label, value, note))

    def limits(r: dict[str, Any], tag: str, what: str) -> tuple[int | None, int | None, int | None]:
        read = r.get("read", {}).get("rows_per_s")
        copy = r.get("copy", {}).get("rows_per_s")
        enc = r.get("read_encoded", {}).get("rows_per_s")
        if not read:
            add(f"raw ({tag}) limits, {what}", "skipped")
            return None, None, None
        add(
            f"raw (b{tag}) PyMySQL SSCursor read, typed",
            f"{read:,} rows/s",
            f"{r['read']['rows']:,} rows ({what}) in {r['read']['seconds']}s; client CPU "
            f"{r['read']['client_cpu_s']}s; machine {r['read']['machine_busy_pct']}% busy",
        )
        add(
            f"raw (b2{tag}) PyMySQL read, server-encoded lines",
            f"{enc:,} rows/s",
            f"{r['read_encoded']['seconds']}s (the read side of warp's copy into PostgreSQL)",
        )
        add(
            f"raw (a{tag}) PostgreSQL COPY FROM STDIN",
            f"{copy:,} rows/s",
            f"{r['copy']['seconds']}s, {r['copy']['mib']} MiB, one transaction, plain table; machine "
            f"{r['copy']['machine_busy_pct']}% busy",
        )
        series = round(1 / (1 / read + 1 / copy))
        add(f"raw (b{tag}) then (a{tag}) in series", f"{series:,} rows/s", "1 / (1/read + 1/COPY)")
        return read, copy, series

    def warp_line(label: str, run: dict[str, Any], lim: tuple[int | None, int | None, int | None]) -> None:
        add(
            label,
            f"{run['rows_per_s']:,} rows/s",
            f"{run['rows']:,} rows in {run['run_seconds']}s (the run, per the state file); warp CPU "
            f"{run['warp_cpu_s']}s{' from process start' if 'seconds_from_start' in run else ''} ({run.get('cpu_s_per_million_rows', '-')}s per million rows); machine "
            f"{run['machine_busy_pct']}% busy",
        )
        if "rows_per_s_from_start" in run:
            add(
                "  from process start",
                f"{run['rows_per_s_from_start']:,} rows/s",
                f"{run['seconds_from_start']}s, of which ~{run['startup_seconds']}s before the run started",
            )
        read, copy, series = lim
        add("  / raw read (typed)", ratio(run["rows_per_s"], read))
        add("  / raw COPY", ratio(run["rows_per_s"], copy))
        add("  / raw read then COPY in series", ratio(run["rows_per_s"], series))

    add(
        "rows / changed",
        f"{fig['rows']:,} / {fig['changed']['rows']:,}",
        f"every {fig['changed']['every_nth_id']}th id",
    )
    full = limits(raw, "", "all rows")
    warp_line("full refresh (copy beside, swap in)", fig["full_refresh"], full)
    warp_line("incremental, first run (all rows by cursor)", fig["incremental_first"], full)
    changed = limits(raw_c, "'", "the rows the second run reads")
    second = fig["incremental_second"]
    warp_line("incremental, second run (changed rows)", second, changed)
    add(
        "  request -> run done",
        f"{second['request_to_done_s']}s",
        "the sync request (as warpctl sync) is picked up within 0.5 s",
    )
    for key, label in (("full_refresh", "full refresh"), ("incremental", "incremental")):
        v = fig["verify"][key]
        add(
            f"verification, {label}",
            "OK" if v["equal"] else "MISMATCH",
            f"count, sum(quantity), max(updated_at): source {v['source']} / destination {v['destination']}",
        )
    lines = machine_header("cartridge-warp benchmark: mode: batch, MariaDB -> PostgreSQL", fig)
    lines += report_tail(fig, rows)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the table (default 1,000,000)")
    p.add_argument(
        "--changed", type=int, default=0, help="rows changed before the second run (default: 10%% of --rows)"
    )
    p.add_argument("--skip-raw", action="store_true", help="do not measure the raw limits")
    p.add_argument("--keep", action="store_true", help="keep the databases, schemas and state directories")
    p.add_argument("--json", action="store_true", help="print the figures as JSON too")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        metavar="S",
        help="wait up to S seconds for an idle machine before starting (default 60)",
    )
    args = p.parse_args(argv)
    changed = args.changed or max(1, args.rows // 10)
    if args.rows < 10 or not 1 <= changed <= args.rows:
        p.error("--rows must be >= 10 and --changed between 1 and --rows")

    db = f"warp_bench_batch_{uuid.uuid4().hex[:8]}"  # MariaDB database and cartridge-warp schema name
    dest_full, dest_inc, raw_schema = f"{db}_full", f"{db}_inc", f"{db}_raw"
    fig: dict[str, Any] = {"rows": args.rows, "database": db}
    fig["machine"] = machine()
    fig["load"] = wait_for_quiet(args.quiet_wait)
    fig["loadavg"] = " ".join(open("/proc/loadavg", encoding="ascii").read().split()[:3])
    fig["warpd"] = warpd_revision()
    dirs = [tempfile.mkdtemp(prefix=f"warp-bench-batch-{what}-") for what in ("full", "inc")]
    warps = []
    for state_dir, dest, incremental in ((dirs[0], dest_full, False), (dirs[1], dest_inc, True)):
        config = os.path.join(state_dir, "config.json")
        write_config(config, db, dest, incremental)
        warps.append(
            Warp(state_dir, os.path.join(state_dir, "warpd.log"), ["--config", config, "--schema", db])
        )
    full_warp, inc_warp = warps
    ok = False
    try:
        fig["source"] = create_source(db, args.rows)
        if not args.skip_raw:
            fig["raw"] = raw_limits(db, raw_schema)
        pg_superuser_checkpoint()

        fig["full_refresh"] = first_run(full_warp, db, args.rows, "full refresh")
        full_warp.stop()
        src_before = checksum_source(db)
        dst_full = checksum_pg(dest_full)
        pg_superuser_checkpoint()

        fig["incremental_first"] = first_run(inc_warp, db, args.rows, "incremental, first run")
        if fig["incremental_first"]["rows"] < args.rows:
            raise BenchError(f"the first incremental run moved {fig['incremental_first']['rows']} rows")
        conn = mysql(db)
        with conn.cursor() as cur:
            cur.execute(f"SELECT max(updated_at) FROM {TABLE}")  # noqa: S608 - constants
            first_max = cur.fetchone()[0]  # the first run's mark
        conn.close()
        fig["changed"] = change_rows(db, args.rows, changed)
        pg_superuser_checkpoint()
        time.sleep(1.0)

        say("incremental, second run: asking for it as warpctl sync does (a request in the state file)")
        store = inc_warp.store()
        before = time.time()
        asked = time.monotonic()
        request = store.add_request(db, "sync", {"table": TABLE})
        second = wait_run(
            inc_warp, db, fig["incremental_first"]["run_started"], changed, "incremental, second"
        )
        while (req := store.request(request)) is not None and req.status == "pending":
            inc_warp.check_alive()
            time.sleep(STATE_POLL)
        second["request_to_done_s"] = round(second.pop("seen_at") - asked, 2)
        second["request_to_run_start_s"] = round(second["run_started"] - before, 2)
        fig["incremental_second"] = second
        say(
            f"  {second['rows']:,} rows: {second['rows_per_s']:,} rows/s in the run ({second['run_seconds']}s)"
        )
        inc_warp.stop()

        if not args.skip_raw:
            floor = first_max - dt.timedelta(seconds=SAFETY_LAG_S)
            fig["raw_changed"] = raw_limits(db, raw_schema, "WHERE updated_at >= %s", (floor,))
            if fig["raw_changed"]["read"]["rows"] != second["rows"]:
                say(
                    f"  (the second run moved {second['rows']:,} rows, the raw read of updated_at >= "
                    f"{floor} found {fig['raw_changed']['read']['rows']:,})"
                )

        say("verifying count, sum(quantity) and max(updated_at) on both sides")
        src_after = checksum_source(db)
        dst_inc = checksum_pg(dest_inc)
        fig["verify"] = {
            "full_refresh": {"equal": src_before == dst_full, "source": src_before, "destination": dst_full},
            "incremental": {"equal": src_after == dst_inc, "source": src_after, "destination": dst_inc},
        }
        ok = all(v["equal"] for v in fig["verify"].values())
    except BenchError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    except (pymysql.err.MySQLError, psycopg2.Error, OSError) as exc:
        say(f"benchmark failed: {type(exc).__name__}: {exc} (was a database restarted meanwhile?)")
        return 1
    finally:
        for warp in warps:
            rc = warp.stop()
            warp.close()
            if rc not in (None, 0):
                say(f"cartridge-warp exited with status {rc}:\n{warp.log_tail()}")
        if args.keep:
            say(f"kept: MariaDB database {db}, PostgreSQL schemas {dest_full}, {dest_inc}; state {dirs}")
        else:
            try:
                drop_everything(db, [dest_full, dest_inc, raw_schema])
            except (pymysql.err.MySQLError, psycopg2.Error) as exc:
                say(f"could not drop {db}: {exc}")
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
    for run in ("full_refresh", "incremental_first", "incremental_second"):
        fig[run].pop("run_started", None)
    print(report(fig))
    if args.json:
        print(json.dumps(fig, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
