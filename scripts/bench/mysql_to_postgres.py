#!/usr/bin/env python3
"""Benchmark: cartridge-warp MariaDB/MySQL -> PostgreSQL, snapshot and streaming, against the raw limits.

What it does (``make bench`` runs it with the defaults; this is not a test):

1. waits (``--quiet-wait``) for an idle machine and records what keeps it busy, then creates the
   MariaDB database ``warp_bench`` with one table ``bench`` of ``--rows`` rows and ten mixed columns,
   generated server-side from the SEQUENCE engine (not binlogged), and an empty PostgreSQL schema
   ``warp_bench`` in database ``warp_test``;
2. measures the raw limits on this machine, in this run (skip with ``--skip-raw``):
   (a) PostgreSQL ``COPY ... FROM STDIN`` of the same rows into an identical table (same DDL as
       cartridge-warp's; the COPY text is produced beforehand in memory; only COPY + commit are timed),
   (b) reading the whole table with PyMySQL (cartridge-warp's driver), unbuffered SSCursor, typed values,
   (b2) the same read of one COPY line a row encoded by the server (``CONCAT_WS``): the read side of
       cartridge-warp's server-encoded snapshot;
3. starts ``python -m warpd --mode single`` with a fresh ``--state-dir`` and times the snapshot from
   process start until the state file marks the table done (polled every 0.2 s);
4. with the process streaming, commits ``--updates`` row updates in transactions of ``--txn-rows``
   rows; the last transaction also writes a unique marker into one row.  Streaming rate = row
   events / (time from the burst's first commit until the marker is visible in PostgreSQL); lag =
   last source commit -> marker visible; also when the stored checkpoint reaches the source's
   binlog position.  Then the latency of single changes on an idle stream;
5. catch-up (skip with ``--no-catch-up``): stops the process (SIGTERM), commits another burst
   (``--catch-up-updates`` rows, default ``--updates``), restarts it on the same state directory and
   times the backlog from process start until the marker arrives and the checkpoint covers the burst,
   sampling the process's RSS (start, lowest after 10 s, peak, end: flat when memory does not grow
   with the backlog);
6. (c) parses the first burst's binlog range with pymysqlreplication alone (the library cartridge-warp
   uses, same settings), as the parse-rate ceiling of the streaming path;
7. verifies row count and a checksum over eight columns on both sides, prints the figures (and JSON
   with ``--json``), stops the process with SIGTERM and drops ``warp_bench`` on both sides
   (``--keep`` keeps them, and the state directory).

Every timed phase also records the share of the machine that was busy and, where it applies, the CPU
seconds of the measuring client or of the cartridge-warp process; the header names the commit
measured.  On a small shared VM absolute rates vary by +-15 % between runs; the ratios within one run
are steadier.

``--profile DIR`` additionally samples the cartridge-warp process with py-spy (``pip install py-spy``)
during the snapshot and during the live burst, writes the raw (collapsed) stacks to DIR and prints
the shares per pipeline stage and per file:function.  By default only the thread holding the GIL is
sampled (on-CPU Python time); ``--profile-all-threads`` samples every thread not detected idle.
Figures of a profiled run are a little lower: the sampler competes for the same cores.

Needs the local databases configured by scripts/setup-databases.sh: MariaDB on 127.0.0.1:3306 (root
without password, binlog ROW/FULL/FULL), PostgreSQL on 127.0.0.1:5432 (user warp/warp, database
warp_test), and nothing else restarting them meanwhile (the test suite does).  Environment:
WARP_BENCH_PG_SUPERUSER (default postgres) for a best-effort CHECKPOINT between phases.  Warp's own
settings can be varied with CARTRIDGE_WARP_* variables (docs/configuration.md), which the child
process inherits.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
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
    Profiler,
    RssSampler,
    Warp,
    add_output_options,
    analyse_profile,
    ratio,
    report_tail,
    say,
    wait_for_quiet,
    warpd_revision,
)
from mysql_common import (
    STAGES,
    copy_text_expr,
    machine,
    machine_header,
    master_position,
    mysql,
    profile_lines,
    raw_parse,
    raw_read,
    wait_applied,
    wait_snapshot,
)
from pg_common import PG_DSN, pg, pg_superuser_checkpoint, raw_copy

from warpd.connectors.mysql.source import MySQLSource
from warpd.connectors.postgresql.destination import TablePlan, make_plan

DB = "warp_bench"  # MariaDB database, PostgreSQL schema and cartridge-warp schema name
TABLE = "bench"  # (LOAD_SQL and the CHECKSUM_* statements spell both out)
RAW_SCHEMA = "warp_bench_raw"  # PostgreSQL schema of the raw COPY measurement
SOURCE_URI = f"mysql://warp:warp@127.0.0.1:3306/{DB}"

LOAD_CHUNK = 100_000

# Aims and reference points of the project brief (2-core machine, MariaDB -> PostgreSQL, 1.1M rows).
AIM_SNAPSHOT_VS_COPY = 0.5
AIM_STREAM_EVENTS = 5_000
REFERENCE = {
    "raw COPY": 226_000,
    "sling snapshot": 75_000,
    "pg_chameleon snapshot": 79_000,
    "pg_chameleon streaming catch-up": 2_000,
    "python-mysql-replication parse": 7_000,
    "execute_values upserts": 21_000,
}


# --------------------------------------------------------------------------- 1. the data
CREATE_TABLE = f"""CREATE TABLE {TABLE} (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    qty        INT NOT NULL,
    name       VARCHAR(64) NOT NULL,
    price      DECIMAL(12,2),
    created_at DATETIME(6) NOT NULL,
    updated_at TIMESTAMP NULL DEFAULT NULL,
    score      DOUBLE,
    flag       TINYINT NOT NULL,
    note       TEXT,
    attrs      JSON
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

# ~250 bytes a row: every value derived from the sequence number, one NULL in ten updated_at.
LOAD_SQL = (  # the names are DB and TABLE, spelled out
    "INSERT INTO bench (id, qty, name, price, created_at, updated_at, score, flag, note, attrs) "
    "SELECT seq, seq % 100000, CONCAT('name-', seq, '-', LEFT(MD5(seq), 12)), (seq % 10000000) / 100, "
    "TIMESTAMP'2020-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL ((seq * 7919) % 1000000) MICROSECOND, "
    "IF(seq % 10 = 0, NULL, FROM_UNIXTIME(1600000000 + seq)), seq * 1.0e0 / 7, seq % 128, "
    "CONCAT('note ', MD5(seq), ' ', LPAD(seq, 12, '0')), "
    "JSON_OBJECT('k', seq % 97, 'tag', CONCAT('t', seq % 13), 'ok', seq % 2 = 0) "
    "FROM seq_{a}_to_{b}"
)


def create_source(rows: int) -> dict[str, Any]:
    say(
        f"creating MariaDB database {DB} with {rows:,} rows (INSERT ... SELECT from the SEQUENCE engine, "
        "sql_log_bin=0)"
    )
    t0 = time.monotonic()
    conn = mysql()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")  # the load is no part of the stream to measure
            cur.execute(f"DROP DATABASE IF EXISTS {DB}")
            cur.execute(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
            cur.execute(f"USE {DB}")
            cur.execute(CREATE_TABLE)
            for a in range(1, rows + 1, LOAD_CHUNK):
                b = min(rows, a + LOAD_CHUNK - 1)
                cur.execute(LOAD_SQL.format(a=a, b=b))
            cur.execute(f"ANALYZE TABLE {TABLE}")
            cur.fetchall()
            cur.execute(
                "SELECT DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_NAME = %s",
                (DB, TABLE),
            )
            data_length = int(cur.fetchone()[0] or 0)
    finally:
        conn.close()
    seconds = time.monotonic() - t0
    say(f"  loaded in {seconds:.1f}s ({data_length / 2**20:,.0f} MiB of InnoDB data)")
    return {"load_seconds": round(seconds, 2), "innodb_data_mib": round(data_length / 2**20, 1)}


def reset_destination() -> None:
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {DB} CASCADE")
        cur.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE")
        cur.execute(f"CREATE SCHEMA {DB}")
    conn.close()


def drop_everything() -> None:
    conn = mysql()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
    conn.close()
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {DB} CASCADE")
        cur.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE")
    conn.close()


def source_plan(dest_schema: str) -> TablePlan:
    """The table as cartridge-warp describes it, planned into ``dest_schema``."""
    src = MySQLSource(SOURCE_URI, DB, server_id=4_242_001)
    try:
        return make_plan(src.describe(TABLE), dest_schema, soft_delete=False, metadata=False)
    finally:
        src.close()


# --------------------------------------------------------------------------- 2. raw limits
def raw_copy_limits(rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(a) COPY FROM STDIN of the whole table into an identical PostgreSQL table, one transaction.

    Also returns (b2): the PyMySQL SSCursor read of the same rows encoded as COPY lines by the server
    (one string a row), the read side of cartridge-warp's server-encoded snapshot.
    """
    plan = source_plan(RAW_SCHEMA)
    say(
        "raw (a): producing the COPY text in memory (not timed for (a)); this is also raw (b2): PyMySQL "
        "reading COPY lines the server encoded"
    )
    select = ", ".join(copy_text_expr(c) for c in plan.source.columns)
    buf = io.BytesIO()
    conn = mysql(DB, cursorclass=pymysql.cursors.SSCursor)
    try:
        cpu = CpuWindow(os.getpid())
        t0 = time.monotonic()
        with conn.cursor() as cur:
            cur.execute(f"SELECT CONCAT_WS(CHAR(9), {select}) FROM {TABLE} ORDER BY id")  # noqa: S608 - constants
            while batch := cur.fetchmany(20_000):
                buf.write(("\n".join(r[0] for r in batch) + "\n").encode("utf-8"))
        read_seconds = time.monotonic() - t0
        read_cpu = cpu.stop()
    finally:
        conn.close()
    encoded_read = {
        "rows": rows,
        "seconds": round(read_seconds, 3),
        "rows_per_s": round(rows / read_seconds),
        "machine_busy_pct": read_cpu["machine_busy_pct"],
        "client_cpu_s": read_cpu["warp_cpu_s"],
    }
    say(f"  (b2) {rows / read_seconds:,.0f} rows/s ({read_seconds:.2f}s)")
    return raw_copy(plan, buf, rows), encoded_read


# --------------------------------------------------------------------------- measurements
def burst(updates: int, txn_rows: int, rows: int, marker_id: int, marker: str) -> dict[str, Any]:
    """``updates`` row updates in transactions of ``txn_rows``; the last one also writes ``marker``."""
    conn = mysql(DB)
    conn.autocommit(False)
    commits = []
    try:
        start = master_position(conn)
        done = 0
        with conn.cursor() as cur:
            while done < updates:
                n = min(txn_rows, updates - done)
                a = done % rows + 1
                b = min(rows, a + n - 1)
                cur.execute(
                    f"UPDATE {TABLE} SET qty = qty + 1, score = score + 0.5, "  # noqa: S608 - constants
                    "updated_at = NOW() WHERE id BETWEEN %s AND %s",
                    (a, b),
                )
                done += cur.rowcount
                if done >= updates:
                    cur.execute(f"UPDATE {TABLE} SET name = %s WHERE id = %s", (marker, marker_id))  # noqa: S608
                conn.commit()
                commits.append(time.monotonic())
        end = master_position(conn)
    finally:
        conn.close()
    events = updates + 1
    seconds = commits[-1] - commits[0]
    after_first = events - min(txn_rows, updates)  # rows committed after the first commit
    return {
        "events": events,
        "transactions": len(commits),
        "first_commit": commits[0],
        "last_commit": commits[-1],
        "source_seconds": round(seconds, 3),
        "source_rows_per_s": round(after_first / seconds) if seconds > 0 else None,
        "start": start,
        "end": end,
    }


def idle_latency(warp: Warp, row_id: int, samples: int = 5) -> dict[str, Any]:
    """Commit one single-row change at a time on an idle stream; time until it is in PostgreSQL."""
    src = mysql(DB)
    dst = pg()
    dst.autocommit = True
    out = []
    try:
        for i in range(samples):
            value = f"ping-{i}-{uuid.uuid4().hex[:8]}"
            time.sleep(0.5 + 0.37 * i)  # land at different phases of the 1 s binlog heartbeat
            with src.cursor() as cur:
                cur.execute(f"UPDATE {TABLE} SET name = %s WHERE id = %s", (value, row_id))  # noqa: S608
            committed = time.monotonic()
            with dst.cursor() as cur:
                while True:
                    cur.execute(f"SELECT name FROM {DB}.{TABLE} WHERE id = %s", (row_id,))  # noqa: S608
                    if cur.fetchone()[0] == value:
                        out.append(time.monotonic() - committed)
                        break
                    if time.monotonic() - committed > 60:
                        raise BenchError("a single change did not arrive within 60 s")
                    warp.check_alive()
                    time.sleep(0.01)
    finally:
        src.close()
        dst.close()
    return {
        "samples_s": [round(x, 3) for x in out],
        "median_s": round(statistics.median(out), 3),
        "max_s": round(max(out), 3),
    }


CHECKSUM_MYSQL = (  # the names are DB and TABLE, spelled out
    "SELECT COUNT(*), SUM(CAST(CONV(LEFT(MD5(CONCAT_WS('|', id, qty, name, price, "
    "DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f'), COALESCE(UNIX_TIMESTAMP(updated_at), -1), flag, note)), "
    "8), 16, 10) AS UNSIGNED)) FROM warp_bench.bench"
)
CHECKSUM_PG = (  # the names are DB and TABLE, spelled out
    "SELECT count(*), sum(('x' || left(md5(concat_ws('|', id, qty, name, price, "
    "to_char(created_at, 'YYYY-MM-DD HH24:MI:SS.US'), coalesce(extract(epoch FROM updated_at)::bigint, -1), "
    "flag, note)), 8))::bit(32)::bigint) FROM warp_bench.bench"
)


def verify() -> dict[str, Any]:
    conn = mysql()
    with conn.cursor() as cur:
        cur.execute(CHECKSUM_MYSQL)
        src = cur.fetchone()
    conn.close()
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(CHECKSUM_PG)
        dst = cur.fetchone()
    conn.close()
    source = {"rows": int(src[0]), "checksum": int(src[1] or 0)}
    dest = {"rows": int(dst[0]), "checksum": int(dst[1] or 0)}
    return {
        "equal": source == dest,
        "source": source,
        "destination": dest,
        "columns": "id, qty, name, price, created_at, updated_at, flag, note",
    }


# --------------------------------------------------------------------------- report
def report(fig: dict[str, Any]) -> str:
    raw, snap, live = fig.get("raw", {}), fig["snapshot"], fig["streaming"]
    copy = raw.get("copy", {}).get("rows_per_s")
    read = raw.get("pymysql_read", {}).get("rows_per_s")
    parse = raw.get("binlog_parse", {}).get("events_per_s")
    rows: list[tuple[str, str, str]] = []

    def add(label: str, value: str, note: str = "") -> None:
        rows.append((label, value, note))

    add(
        "rows / updates", f"{fig['rows']:,} / {fig['updates']:,}", f"transactions of {fig['txn_rows']:,} rows"
    )
    add(
        "raw (a) PostgreSQL COPY FROM STDIN",
        f"{copy:,} rows/s" if copy else "skipped",
        f"{raw['copy']['seconds']}s, {raw['copy']['mib']} MiB, one transaction; machine "
        f"{raw['copy']['machine_busy_pct']}% busy"
        if copy
        else "",
    )
    add(
        "raw (b) PyMySQL SSCursor read, typed values",
        f"{read:,} rows/s" if read else "skipped",
        f"{raw['pymysql_read']['seconds']}s, client CPU {raw['pymysql_read']['client_cpu_s']}s; machine "
        f"{raw['pymysql_read']['machine_busy_pct']}% busy"
        if read
        else "",
    )
    enc = raw.get("pymysql_read_encoded", {}).get("rows_per_s")
    add(
        "raw (b2) PyMySQL read, server-encoded lines",
        f"{enc:,} rows/s" if enc else "skipped",
        f"{raw['pymysql_read_encoded']['seconds']}s, client CPU {raw['pymysql_read_encoded']['client_cpu_s']}s"
        if enc
        else "",
    )
    add(
        "raw (c) pymysqlreplication parse",
        f"{parse:,} events/s" if parse else "skipped",
        f"{raw['binlog_parse']['seconds']}s for {raw['binlog_parse']['events']:,} row events, client CPU "
        f"{raw['binlog_parse']['client_cpu_s']}s"
        if parse
        else "",
    )
    add(
        "snapshot (process start -> done)",
        f"{snap['rows_per_s']:,} rows/s",
        f"{snap['seconds_from_start']}s; warp CPU {snap['warp_cpu_s']}s ({snap['cpu_s_per_million_rows']}s per "
        f"million rows); machine {snap['machine_busy_pct']}% busy",
    )
    if snap.get("copy_rows_per_s"):
        add(
            "snapshot, copy phase only",
            f"{snap['copy_rows_per_s']:,} rows/s",
            f"{snap['copy_seconds']}s (first 'running' -> done); warp logs "
            f"{snap.get('warp_reported_rows_per_s') or 0:,} rows/s",
        )
    add("  snapshot / raw COPY", ratio(snap["rows_per_s"], copy), f"aim >= {AIM_SNAPSHOT_VS_COPY:.2f}x")
    add("  snapshot / PyMySQL read (typed values)", ratio(snap["rows_per_s"], read))
    add("  snapshot / PyMySQL read (encoded lines)", ratio(snap["rows_per_s"], enc))
    add(
        "streaming, live burst",
        f"{live['events_per_s']:,} events/s",
        f"{live['events']:,} events in {live['seconds']}s (first commit -> last visible); "
        f"the source committed them in {live['source_seconds']}s; warp CPU {live['warp_cpu_s']}s "
        f"({live['cpu_s_per_100k_events']}s per 100k events); machine {live['machine_busy_pct']}% busy",
    )
    if fig.get("catch_up"):
        cu = fig["catch_up"]
        add(
            "streaming, catch-up after restart",
            f"{cu['events_per_s']:,} events/s",
            f"{cu['seconds']}s from process start; {cu['events_per_s_after_startup']:,} events/s "
            f"after the 'streaming' log line ({cu['startup_seconds']}s start-up); until the checkpoint covers it",
        )
        add(
            "  warp RSS start / min after 10 s / peak / end",
            f"{cu['rss_start_mib']} / {cu['rss_after_10s_min_mib']} / {cu['rss_peak_mib']} / {cu['rss_end_mib']} MiB",
            "VmRSS every 0.5 s: flat when it does not grow with the backlog (--catch-up-updates)",
        )
    add(
        "  streaming / pymysqlreplication parse",
        ratio(live["events_per_s"], parse),
        f"aim >= {AIM_STREAM_EVENTS:,} events/s",
    )
    add("lag: last commit -> visible in PostgreSQL", f"{live['lag_s']:.2f}s", "live burst")
    add(
        "lag: last commit -> checkpoint caught up",
        f"{live['checkpoint_lag_s']:.2f}s",
        f"stored position >= {live['end'][0]}:{live['end'][1]}",
    )
    if fig.get("idle_latency"):
        il = fig["idle_latency"]
        add(
            "single change on an idle stream",
            f"{il['median_s']:.2f}s median",
            f"max {il['max_s']:.2f}s, samples {il['samples_s']}",
        )
    v = fig["verify"]
    add(
        "verification",
        "OK" if v["equal"] else "MISMATCH",
        f"{v['source']['rows']:,} rows, checksum {v['source']['checksum']} vs "
        f"{v['destination']['rows']:,} / {v['destination']['checksum']} ({v['columns']})",
    )
    lines = machine_header("cartridge-warp benchmark: MariaDB -> PostgreSQL", fig)
    lines += report_tail(fig, rows)
    lines += [
        "",
        "reference points of the project brief (a 2-core machine, MariaDB -> PostgreSQL, 1.1M rows): "
        + ", ".join(f"{k} ~{v:,}/s" for k, v in REFERENCE.items()),
    ]
    lines += profile_lines(fig)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the table (default 1,000,000)")
    p.add_argument("--updates", type=int, default=200_000, help="row updates in the burst (default 200,000)")
    p.add_argument("--txn-rows", type=int, default=1_000, help="rows per source transaction (default 1,000)")
    p.add_argument(
        "--keep", action="store_true", help="keep warp_bench on both sides and the state directory"
    )
    p.add_argument("--skip-raw", action="store_true", help="do not measure the raw limits")
    p.add_argument(
        "--catch-up-updates",
        type=int,
        default=0,
        help="row updates in the catch-up burst (default: --updates); millions show whether RSS stays flat",
    )
    p.add_argument(
        "--no-catch-up", action="store_true", help="skip the stop / burst / restart catch-up phase"
    )
    p.add_argument("--profile", metavar="DIR", help="sample cartridge-warp with py-spy; raw stacks go to DIR")
    p.add_argument(
        "--profile-all-threads",
        action="store_true",
        help="sample every active thread, not only the one holding the GIL (py-spy without --gil)",
    )
    add_output_options(p, quiet_wait=120.0)
    args = p.parse_args(argv)
    if args.rows < 2 or args.updates < 1 or args.txn_rows < 1:
        p.error("--rows must be >= 2, --updates and --txn-rows >= 1")

    fig: dict[str, Any] = {
        "rows": args.rows,
        "updates": args.updates,
        "txn_rows": args.txn_rows,
        "aims": {"snapshot_vs_raw_copy": AIM_SNAPSHOT_VS_COPY, "streaming_events_per_s": AIM_STREAM_EVENTS},
        "reference": REFERENCE,
    }
    fig["machine"] = machine()
    fig["load"] = wait_for_quiet(args.quiet_wait)
    fig["warpd"] = warpd_revision()
    if args.profile:
        fig["profile_mode"] = (
            "all active threads"
            if args.profile_all_threads
            else "the thread holding the GIL: on-CPU Python time"
        )
    state_dir = tempfile.mkdtemp(prefix="warp-bench-state-")
    warp = Warp(
        state_dir,
        os.path.join(state_dir, "warpd.log"),
        ["--source", SOURCE_URI, "--destination", PG_DSN, "--schema", DB],
    )
    profiler = Profiler(args.profile, gil=not args.profile_all_threads)
    marker_id, ping_id = args.rows, args.rows - 1
    ok = False
    try:
        fig["source"] = create_source(args.rows)
        reset_destination()
        if not args.skip_raw:
            copy, encoded_read = raw_copy_limits(args.rows)
            fig["raw"] = {"copy": copy, "pymysql_read_encoded": encoded_read}
            pg_superuser_checkpoint()
            fig["raw"]["pymysql_read"] = raw_read(DB, TABLE, args.rows)

        say(f"snapshot: starting cartridge-warp (state {state_dir}, log {warp.log_path})")
        warp.start()
        if args.profile:
            warp.store()  # the interpreter is up once it has created the state file
            profiler.start(warp.pid, "snapshot")
        fig["snapshot"] = wait_snapshot(warp, DB, TABLE, args.rows)
        if path := profiler.stop():
            fig.setdefault("profile", {})["snapshot"] = analyse_profile(path, STAGES)
        say(
            f"  {fig['snapshot']['rows_per_s']:,} rows/s from process start "
            f"({fig['snapshot']['seconds_from_start']}s)"
        )

        warp.wait_log("streaming changes from")
        pg_superuser_checkpoint()
        time.sleep(2.0)  # let the snapshot's writes settle before the burst
        say(f"streaming: burst of {args.updates:,} updates in transactions of {args.txn_rows:,} rows")
        marker = f"marker-{uuid.uuid4().hex}"
        profiler.start(warp.pid, "streaming")
        cpu = CpuWindow(warp.pid)
        b = burst(args.updates, args.txn_rows, args.rows, marker_id, marker)
        visible, ckpt = wait_applied(warp, DB, TABLE, "name", marker_id, marker, b["end"])
        used = cpu.stop()
        if path := profiler.stop():
            fig.setdefault("profile", {})["streaming"] = analyse_profile(path, STAGES)
        seconds = visible - b["first_commit"]
        fig["streaming"] = {
            "events": b["events"],
            "transactions": b["transactions"],
            "seconds": round(seconds, 2),
            "events_per_s": round(b["events"] / seconds),
            "source_seconds": b["source_seconds"],
            "source_rows_per_s": b["source_rows_per_s"],
            "lag_s": round(visible - b["last_commit"], 3),
            "checkpoint_lag_s": round(ckpt - b["last_commit"], 3),
            "start": list(b["start"]),
            "end": list(b["end"]),
        } | used
        fig["streaming"]["cpu_s_per_100k_events"] = round(used["warp_cpu_s"] * 1e5 / b["events"], 2)
        say(
            f"  {fig['streaming']['events_per_s']:,} row events/s; lag {fig['streaming']['lag_s']:.2f}s "
            f"(source committed the burst in {b['source_seconds']:.1f}s)"
        )
        say("streaming: latency of single changes on an idle stream")
        fig["idle_latency"] = idle_latency(warp, ping_id)
        say(f"  median {fig['idle_latency']['median_s']:.2f}s")

        if not args.no_catch_up:
            say("catch-up: stopping cartridge-warp (SIGTERM), committing a second burst, restarting it")
            rc = warp.stop()
            if rc != 0:
                raise BenchError(f"cartridge-warp exited with {rc} on SIGTERM:\n{warp.log_tail()}")
            marker2 = f"marker-{uuid.uuid4().hex}"
            b2 = burst(args.catch_up_updates or args.updates, args.txn_rows, args.rows, marker_id, marker2)
            pg_superuser_checkpoint()
            started = warp.start()
            cpu = CpuWindow(warp.pid)
            rss = RssSampler(warp.pid).start()
            try:
                streaming_at = warp.wait_log("streaming changes from", occurrence=2)
                visible2, ckpt2 = wait_applied(warp, DB, TABLE, "name", marker_id, marker2, b2["end"])
            finally:
                rss.stop()
            total = max(visible2, ckpt2) - started
            steady = [mib for t, mib in rss.samples if t >= streaming_at + 10]
            fig["catch_up"] = {
                "rss_start_mib": round(rss.at(streaming_at) or 0, 1),
                "rss_after_10s_min_mib": round(min(steady), 1) if steady else None,
                "rss_peak_mib": round(rss.peak() or 0, 1),
                "rss_end_mib": round(rss.samples[-1][1], 1) if rss.samples else None,
                "events": b2["events"],
                "seconds": round(total, 2),
                "events_per_s": round(b2["events"] / total),
                "startup_seconds": round(streaming_at - started, 2),
                "events_per_s_after_startup": round(b2["events"] / (max(visible2, ckpt2) - streaming_at)),
                "checkpoint_seconds": round(ckpt2 - started, 2),
            } | cpu.stop()
            say(f"  {fig['catch_up']['events_per_s']:,} row events/s from process start")

        if not args.skip_raw:
            fig["raw"]["binlog_parse"] = raw_parse(b["start"], b["end"], DB, b["events"])

        say("verifying: row count and checksum on both sides")
        fig["verify"] = verify()
        ok = fig["verify"]["equal"]
    except BenchError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    except (pymysql.err.MySQLError, psycopg2.Error, OSError) as exc:
        say(
            f"benchmark failed: {type(exc).__name__}: {exc} (was a database restarted meanwhile, e.g. by "
            "the test suite? the benchmark needs the databases to itself)"
        )
        return 1
    finally:
        profiler.stop()
        warp.finish()
        if args.keep:
            say(f"kept: MariaDB database {DB}, PostgreSQL schema warp_test.{DB}, state {state_dir}")
        else:
            try:
                drop_everything()
            except (pymysql.err.MySQLError, psycopg2.Error) as exc:
                say(f"could not drop {DB}: {exc}")
            shutil.rmtree(state_dir, ignore_errors=True)
    print(report(fig))
    if args.json:
        print(json.dumps(fig, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
