#!/usr/bin/env python3
"""Benchmark: cartridge-warp MariaDB/MySQL -> MariaDB/MySQL (another database on the same server).

What it does (``make bench-mysql`` runs it with the defaults; this is not a test):

1. waits (``--quiet-wait``) for an idle machine, then creates the source database ``warp_bench_my``
   with one table ``bench`` of ``--rows`` rows of mixed types (BIGINT key, INT, TINYINT, VARCHAR,
   DECIMAL, DATETIME(6), nullable TEXT with some tabs, newlines and backslashes, JSON), generated
   server-side from the SEQUENCE engine (not binlogged); the destination database is
   ``warp_bench_my_dest`` on the same server (``type: mysql``);
2. raw limit, in this run (skip with ``--skip-raw``): ``LOAD DATA LOCAL INFILE`` of the same rows,
   as LOAD DATA text produced beforehand in memory (by the server; not timed), into an identical
   table (the DDL cartridge-warp creates), one statement and one commit: only the load is timed;
3. starts ``python -m warpd --mode single`` with a fresh ``--state-dir`` and times the snapshot from
   process start until the state file marks the table done (polled every 0.2 s), and prints its
   ratio to the raw load;
4. with the process streaming, commits ``--updates`` row updates in transactions of ``--txn-rows``
   rows; the last transaction also writes a unique marker into one row.  Live rate = row events /
   (time from the burst's first commit until the marker is visible in the destination);
5. catch-up (skip with ``--no-catch-up``): stops the process (SIGTERM), commits another burst,
   restarts it on the same state directory and times the backlog from process start until the
   marker arrives;
6. verifies row count and a checksum over every column on both sides, prints the figures (JSON too
   with ``--json``), stops the process and drops the three databases (``--keep`` keeps them).

``--profile DIR`` samples the cartridge-warp process with py-spy (``pip install py-spy``) during the
snapshot and the live burst, as ``mysql_to_postgres.py`` does.  On a small shared VM absolute rates
vary by +-15 % between runs; the ratio to the raw load within one run is steadier.

Needs MariaDB on 127.0.0.1:3306 configured by scripts/setup-databases.sh (root without password,
binlog ROW/FULL, user warp/warp with all privileges on ``warp_%`` databases, ``local_infile`` ON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

import pymysql
import pymysql.cursors
from common import (  # the checkout's warpd, first on sys.path (see common.py)
    BenchError,
    CpuWindow,
    Profiler,
    Warp,
    add_output_options,
    analyse_profile,
    host_facts,
    package_version,
    ratio,
    report_tail,
    say,
    wait_for_quiet,
    warpd_revision,
)

from warpd.connectors.mysql.destination import MySQLDestination
from warpd.connectors.mysql.source import MySQLSource

DB = "warp_bench_my"  # source database and cartridge-warp schema name
DEST_DB = "warp_bench_my_dest"  # destination database (destination_schema)
RAW_DB = "warp_bench_my_raw"  # database of the raw LOAD DATA measurement
TABLE = "bench"
MYSQL_ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "charset": "utf8mb4"}
SOURCE_URI = f"mysql://warp:warp@127.0.0.1:3306/{DB}"
DEST_URI = "mysql://warp:warp@127.0.0.1:3306/"

LOAD_CHUNK = 100_000
STATE_POLL = 0.2  # seconds between state-file polls (snapshot)
MARKER_POLL = 0.02  # seconds between destination polls (streaming)

# Aims of the project brief (issue 9): snapshot at half the raw load or better, 5,000 row events/s.
AIM_SNAPSHOT_VS_LOAD = 0.5
AIM_STREAM_EVENTS = 5_000

# Pipeline stages of a profile, first match wins (markers are substrings of "file:function").
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("binlog decoding (pymysqlreplication)", ("pymysqlreplication/",)),
    ("state file (SQLite)", ("warpd/state/",)),
    ("destination write (LOAD DATA, merge)", ("destination.py:MySQLDestination.write",)),
    ("source read (PyMySQL)", ("chunks.py:ChunkReader.read", "source.py:MySQLSource.snapshot")),
    (
        "record encoding",
        (
            "destination.py:MySQLDestination.encode",
            "destination.py:MySQLDestination.encode_chunk",
            "base.py:TablePlan.encode",
            "applier.py:TableApplier._encode",
        ),
    ),
    (
        "binlog value conversion (warpd)",
        ("binlog.py:BinlogReader._rows", "binlog.py:BinlogReader._convert", "mysql/types.py:binlog_image"),
    ),
    (
        "batching, compaction, dispatch",
        (
            "runner.py:SchemaRunner._handle",
            "batch.py:compact",
            "runner.py:SchemaRunner._flush",
            "applier.py:TableApplier.apply",
        ),
    ),
    ("binlog reader loop", ("binlog.py:BinlogReader.events",)),
    ("source read (PyMySQL)", ("pymysql/",)),
    ("threads, queues, logging", ("concurrent/futures/", "queue.py:", "threading.py:", "logging/")),
)


# --------------------------------------------------------------------------- connections
def mysql(db: str | None = None, **extra: Any) -> pymysql.connections.Connection:
    conn = pymysql.connect(database=db, autocommit=True, **MYSQL_ROOT, **extra)
    with conn.cursor() as cur:
        cur.execute("SET SESSION time_zone = '+00:00'")
    return conn


def master_position(conn: pymysql.connections.Connection) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    if not row:
        raise BenchError(
            "SHOW MASTER STATUS returned nothing: is the binlog on? (scripts/setup-databases.sh)"
        )
    return str(row[0]), int(row[1])


# --------------------------------------------------------------------------- 1. the data
CREATE_TABLE = f"""CREATE TABLE {TABLE} (
    id         BIGINT NOT NULL PRIMARY KEY,
    qty        INT NOT NULL,
    flag       TINYINT NOT NULL,
    name       VARCHAR(64) NOT NULL,
    price      DECIMAL(12,2),
    created_at DATETIME(6) NOT NULL,
    note       TEXT,
    attrs      JSON
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

# ~200 bytes a row, every value derived from the sequence number: one NULL note in five, one in fifty
# holding a tab, a backslash and a newline (LOAD DATA escapes), one NULL price in twenty.
LOAD_SQL = (  # the table is TABLE, spelled out
    "INSERT INTO bench (id, qty, flag, name, price, created_at, note, attrs) "
    "SELECT seq, seq % 100000, seq % 128, CONCAT('name-', seq, '-', LEFT(MD5(seq), 12)), "
    "IF(seq % 20 = 0, NULL, (seq % 10000000) / 100), "
    "TIMESTAMP'2020-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL ((seq * 7919) % 1000000) MICROSECOND, "
    "IF(seq % 5 = 0, NULL, CONCAT('note ', MD5(seq), IF(seq % 50 = 1, "
    "CONCAT(CHAR(9), 'tab ', CHAR(92), 'N backslash', CHAR(10), 'newline'), ''))), "
    "JSON_OBJECT('k', seq % 97, 'tag', CONCAT('t', seq % 13), 'ok', seq % 2 = 0) "
    "FROM seq_{a}_to_{b}"
)


def create_source(rows: int) -> dict[str, Any]:
    say(f"creating MariaDB database {DB} with {rows:,} rows (INSERT ... SELECT from the SEQUENCE engine)")
    t0 = time.monotonic()
    conn = mysql()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")  # the load is no part of the stream to measure
            for db in (DB, DEST_DB, RAW_DB):
                cur.execute(f"DROP DATABASE IF EXISTS {db}")
            cur.execute(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
            cur.execute(f"USE {DB}")
            cur.execute(CREATE_TABLE)
            for a in range(1, rows + 1, LOAD_CHUNK):
                cur.execute(LOAD_SQL.format(a=a, b=min(rows, a + LOAD_CHUNK - 1)))
            cur.execute(f"ANALYZE TABLE {TABLE}")
            cur.fetchall()
    finally:
        conn.close()
    seconds = time.monotonic() - t0
    say(f"  loaded in {seconds:.1f}s")
    return {"load_seconds": round(seconds, 2)}


def drop_everything() -> None:
    conn = mysql()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin = 0")
        for db in (DB, DEST_DB, RAW_DB):
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
    conn.close()


# --------------------------------------------------------------------------- 2. raw limit
def _load_text_expr(name: str, text: bool) -> str:
    """A MariaDB expression rendering column ``name`` as a LOAD DATA field (\\N for NULL, escaped)."""
    value = f"CAST(`{name}` AS CHAR)"
    if text:
        for raw, esc in (
            ("CHAR(92)", "CONCAT(CHAR(92), CHAR(92))"),
            ("CHAR(9)", "CONCAT(CHAR(92), 't')"),
            ("CHAR(10)", "CONCAT(CHAR(92), 'n')"),
            ("CHAR(13)", "CONCAT(CHAR(92), 'r')"),
        ):
            value = f"REPLACE({value}, {raw}, {esc})"
    return f"COALESCE({value}, CONCAT(CHAR(92), 'N'))"


def raw_load(rows: int) -> dict[str, Any]:
    """LOAD DATA LOCAL INFILE of the whole table into an identical table (cartridge-warp's DDL)."""
    src = MySQLSource(SOURCE_URI, DB, server_id=4_242_011)
    try:
        schema = src.describe(TABLE)
    finally:
        src.close()
    dest = MySQLDestination(DEST_URI, application_name="warp-bench")
    try:
        plan = dest.plan(schema, RAW_DB, soft_delete=False, metadata=False)
        dest.prepare(plan)
    finally:
        dest.close()
    names = [c.name for c in schema.columns]
    texty = {c.name for c in schema.columns if c.type.kind.value in ("text", "json")}
    say("raw: producing the LOAD DATA text in memory (not timed)")
    select = ", ".join(_load_text_expr(n, n in texty) for n in names)
    conn = mysql(DB, cursorclass=pymysql.cursors.SSCursor)
    parts = []
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT CONCAT_WS(CHAR(9), {select}) FROM {TABLE} ORDER BY id")  # noqa: S608 - constants
            while batch := cur.fetchmany(20_000):
                parts.append(("\n".join(r[0] for r in batch) + "\n").encode("utf-8"))
    finally:
        conn.close()
    data = b"".join(parts)
    fd, path = tempfile.mkstemp(prefix="warp-bench-load-", suffix=".txt")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    say(f"raw: LOAD DATA LOCAL INFILE of {rows:,} rows ({len(data) / 2**20:,.0f} MiB) into {RAW_DB}.{TABLE}")
    conn = mysql(RAW_DB, local_infile=True)
    try:
        conn.autocommit(False)
        cpu = CpuWindow()
        t0 = time.monotonic()
        with conn.cursor() as cur:
            cur.execute(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE {TABLE} CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
                f"({', '.join(f'`{n}`' for n in names)})",
                (path,),
            )
            cur.execute("SHOW WARNINGS")
            warnings = len(cur.fetchall())
        conn.commit()
        seconds = time.monotonic() - t0
        busy = cpu.stop()
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {TABLE}")  # noqa: S608 - constants
            loaded = cur.fetchone()[0]
    finally:
        conn.close()
        os.unlink(path)
    if loaded != rows or warnings:
        raise BenchError(f"raw LOAD DATA loaded {loaded} rows with {warnings} warnings, expected {rows}")
    say(f"  {rows / seconds:,.0f} rows/s ({seconds:.2f}s)")
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "mib": round(len(data) / 2**20, 1),
    } | busy


# --------------------------------------------------------------------------- measurements
def wait_snapshot(warp: Warp, rows: int) -> dict[str, Any]:
    cpu = CpuWindow(warp.pid)
    store = warp.store()
    deadline = warp.started + max(900.0, rows / 500)
    while time.monotonic() < deadline:
        prog = store.snapshot_progress(DB).get(TABLE)
        now = time.monotonic()
        if prog is not None and prog.status == "done":
            total = now - warp.started
            out = {
                "rows": prog.rows_copied,
                "seconds_from_start": round(total, 2),
                "rows_per_s": round(prog.rows_copied / total),
            } | cpu.stop()
            out["cpu_s_per_million_rows"] = round(out["warp_cpu_s"] * 1e6 / prog.rows_copied, 2)
            if prog.rows_copied != rows:
                raise BenchError(f"the snapshot copied {prog.rows_copied} rows, expected {rows}")
            return out
        warp.check_alive()
        time.sleep(STATE_POLL)
    raise BenchError("timed out waiting for the snapshot:\n" + warp.log_tail())


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
                    f"UPDATE {TABLE} SET qty = qty + 1, price = price + 0.01, "  # noqa: S608 - constants
                    "created_at = created_at + INTERVAL 1 SECOND WHERE id BETWEEN %s AND %s",
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
    return {
        "events": updates + 1,
        "transactions": len(commits),
        "first_commit": commits[0],
        "last_commit": commits[-1],
        "source_seconds": round(commits[-1] - commits[0], 3),
        "start": start,
        "end": end,
    }


def wait_applied(
    warp: Warp, marker_id: int, marker: str, end: tuple[str, int], timeout: float = 900.0
) -> tuple[float, float]:
    """Poll the destination for the marker and the state file for the checkpoint; return both times."""
    conn = mysql(DEST_DB)
    store = warp.store()
    visible = ckpt = None
    deadline = time.monotonic() + timeout
    try:
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                now = time.monotonic()
                if visible is None:
                    cur.execute(f"SELECT name FROM {TABLE} WHERE id = %s", (marker_id,))  # noqa: S608
                    row = cur.fetchone()
                    if row and row[0] == marker:
                        visible = now
                if ckpt is None:
                    pos = store.checkpoint(DB)
                    if pos and (str(pos["file"]), int(pos["pos"])) >= end:
                        ckpt = now
                if visible is not None and ckpt is not None:
                    return visible, ckpt
                warp.check_alive()
                time.sleep(MARKER_POLL)
    finally:
        conn.close()
    raise BenchError(
        f"timed out waiting for the burst (marker seen: {visible is not None}, checkpoint caught up: "
        f"{ckpt is not None}):\n{warp.log_tail()}"
    )


# every column, NULLs told apart from the text '\N'; JSON compared as documents (JSON_COMPACT)
CHECKSUM = (
    "SELECT COUNT(*), SUM(CAST(CONV(LEFT(MD5(CONCAT_WS('|', id, qty, flag, HEX(name), IFNULL(price, 'NULL'), "
    "DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f'), IFNULL(HEX(note), 'NULL'), "
    "IFNULL(HEX(JSON_COMPACT(attrs)), 'NULL'))), 8), 16, 10) AS UNSIGNED)) FROM {db}.bench"
)


def verify() -> dict[str, Any]:
    conn = mysql()
    out = {}
    with conn.cursor() as cur:
        for side, db in (("source", DB), ("destination", DEST_DB)):
            cur.execute(CHECKSUM.format(db=db))
            count, checksum = cur.fetchone()
            out[side] = {"rows": int(count), "checksum": int(checksum or 0)}
    conn.close()
    return {"equal": out["source"] == out["destination"], **out}


def machine() -> dict[str, Any]:
    conn = mysql()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT VERSION(), @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit, "
            "@@sync_binlog, @@binlog_format, @@binlog_row_image"
        )
        version, pool, flush, sync_binlog, fmt, image = cur.fetchone()
    conn.close()
    return {
        **host_facts(),
        "mariadb": str(version),
        "mariadb_settings": f"innodb_buffer_pool_size={int(pool) // 2**20}M, "
        f"innodb_flush_log_at_trx_commit={flush}, sync_binlog={sync_binlog}, "
        f"binlog_format={fmt}, binlog_row_image={image}",
        "drivers": f"PyMySQL {package_version('PyMySQL')}, mysql-replication {package_version('mysql-replication')}",
    }


# --------------------------------------------------------------------------- report
def report(fig: dict[str, Any]) -> str:
    m, snap, live = fig["machine"], fig["snapshot"], fig["streaming"]
    load = fig.get("raw_load", {}).get("rows_per_s")
    rows: list[tuple[str, str, str]] = []

    def add(label: str, value: str, note: str = "") -> None:
        rows.append((label, value, note))

    add(
        "rows / updates", f"{fig['rows']:,} / {fig['updates']:,}", f"transactions of {fig['txn_rows']:,} rows"
    )
    if load:
        raw = fig["raw_load"]
        add(
            "raw LOAD DATA LOCAL INFILE",
            f"{load:,} rows/s",
            f"{raw['seconds']}s, {raw['mib']} MiB, one statement; machine {raw['machine_busy_pct']}% busy",
        )
    else:
        add("raw LOAD DATA LOCAL INFILE", "skipped")
    add(
        "snapshot (process start -> done)",
        f"{snap['rows_per_s']:,} rows/s",
        f"{snap['seconds_from_start']}s; warp CPU {snap['warp_cpu_s']}s ({snap['cpu_s_per_million_rows']}s per "
        f"million rows); machine {snap['machine_busy_pct']}% busy",
    )
    add("  snapshot / raw LOAD DATA", ratio(snap["rows_per_s"], load), f"aim >= {AIM_SNAPSHOT_VS_LOAD:.2f}x")
    add(
        "streaming, live burst",
        f"{live['events_per_s']:,} events/s",
        f"{live['events']:,} events in {live['seconds']}s (first commit -> last visible); the source "
        f"committed them in {live['source_seconds']}s; warp CPU {live['warp_cpu_s']}s; machine "
        f"{live['machine_busy_pct']}% busy; aim >= {AIM_STREAM_EVENTS:,} events/s",
    )
    if fig.get("catch_up"):
        cu = fig["catch_up"]
        add(
            "streaming, catch-up after restart",
            f"{cu['events_per_s']:,} events/s",
            f"{cu['events']:,} events, {cu['seconds']}s from process start; {cu['events_per_s_after_startup']:,} "
            f"events/s after the 'streaming' log line ({cu['startup_seconds']}s start-up); warp CPU "
            f"{cu['warp_cpu_s']}s",
        )
    add("lag: last commit -> visible in the destination", f"{live['lag_s']:.2f}s", "live burst")
    if fig.get("idle_latency"):
        il = fig["idle_latency"]
        add("single change on an idle stream", f"{il['median_s']:.2f}s median", f"max {il['max_s']:.2f}s")
    v = fig["verify"]
    add(
        "verification",
        "OK" if v["equal"] else "MISMATCH",
        f"{v['source']['rows']:,} rows, checksum {v['source']['checksum']} vs "
        f"{v['destination']['rows']:,} / {v['destination']['checksum']} (every column)",
    )
    lines = [
        f"cartridge-warp benchmark: MariaDB -> MariaDB ({time.strftime('%Y-%m-%d %H:%M')})",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, kernel {m['kernel']}",
        f"         MariaDB {m['mariadb']}; Python {m['python']}; {m['drivers']}",
        f"         MariaDB: {m['mariadb_settings']}",
        f"         load average at the start: {fig['loadavg']}",
        f"cartridge-warp: {fig.get('warpd', '?')}",
    ]
    lines += report_tail(fig, rows)
    for phase, prof in fig.get("profile", {}).items():
        lines += [
            "",
            f"profile of the {phase} ({prof['samples']:,} py-spy samples)",
            "  threads: " + ", ".join(f"{t} {s}%" for t, s in prof["threads"]),
            "  stages:",
        ]
        lines += [f"    {s:5.1f}%  {k}" for k, s in prof["stages"]]
        lines += ["  self time (file:function):"]
        lines += [f"    {s:5.1f}%  {k}" for k, s in prof["self"]]
        lines += ["  inclusive, warpd functions:"]
        lines += [f"    {s:5.1f}%  {k}" for k, s in prof["inclusive_warpd"]]
    return "\n".join(lines)


def idle_latency(warp: Warp, row_id: int, samples: int = 3) -> dict[str, Any]:
    """Commit one single-row change at a time on an idle stream; time until it is in the destination."""
    src = mysql(DB)
    dst = mysql(DEST_DB)
    out = []
    try:
        for i in range(samples):
            value = f"ping-{i}-{uuid.uuid4().hex[:8]}"
            time.sleep(0.5 + 0.37 * i)
            with src.cursor() as cur:
                cur.execute(f"UPDATE {TABLE} SET name = %s WHERE id = %s", (value, row_id))  # noqa: S608
            committed = time.monotonic()
            with dst.cursor() as cur:
                while True:
                    cur.execute(f"SELECT name FROM {TABLE} WHERE id = %s", (row_id,))  # noqa: S608
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
        "max_s": max(out),
    }


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=300_000, help="rows in the table (default 300,000)")
    p.add_argument("--updates", type=int, default=100_000, help="row updates in each burst (default 100,000)")
    p.add_argument("--txn-rows", type=int, default=1_000, help="rows per source transaction (default 1,000)")
    p.add_argument("--keep", action="store_true", help="keep the databases and the state directory")
    p.add_argument("--skip-raw", action="store_true", help="do not measure the raw LOAD DATA rate")
    p.add_argument("--no-catch-up", action="store_true", help="skip the stop / burst / restart phase")
    p.add_argument("--profile", metavar="DIR", help="sample cartridge-warp with py-spy; raw stacks go to DIR")
    add_output_options(p, quiet_wait=60.0)
    args = p.parse_args(argv)
    if args.rows < 2 or args.updates < 1 or args.txn_rows < 1:
        p.error("--rows must be >= 2, --updates and --txn-rows >= 1")

    fig: dict[str, Any] = {"rows": args.rows, "updates": args.updates, "txn_rows": args.txn_rows}
    fig["machine"] = machine()
    fig["load"] = wait_for_quiet(args.quiet_wait)
    fig["loadavg"] = " ".join(open("/proc/loadavg", encoding="ascii").read().split()[:3])
    fig["warpd"] = warpd_revision()
    state_dir = tempfile.mkdtemp(prefix="warp-bench-mysql-state-")
    config = os.path.join(state_dir, "config.json")
    with open(config, "w", encoding="utf-8") as f:
        json.dump(
            {
                "source": {"connection_string": SOURCE_URI},
                "destination": {"type": "mysql", "connection_string": DEST_URI},
                "schemas": [{"name": DB, "destination_schema": DEST_DB}],
            },
            f,
        )
    warp = Warp(state_dir, os.path.join(state_dir, "warpd.log"), ["--config", config, "--schema", DB])
    profiler = Profiler(args.profile)
    marker_id, ping_id = args.rows, args.rows - 1
    ok = False
    try:
        fig["source"] = create_source(args.rows)
        if not args.skip_raw:
            fig["raw_load"] = raw_load(args.rows)

        say(f"snapshot: starting cartridge-warp (state {state_dir}, log {warp.log_path})")
        warp.start()
        if args.profile:
            warp.store()
            profiler.start(warp.pid, "snapshot")
        fig["snapshot"] = wait_snapshot(warp, args.rows)
        if path := profiler.stop():
            fig.setdefault("profile", {})["snapshot"] = analyse_profile(path, STAGES)
        say(
            f"  {fig['snapshot']['rows_per_s']:,} rows/s from process start ({fig['snapshot']['seconds_from_start']}s)"
        )

        warp.wait_log("streaming changes from")
        time.sleep(2.0)  # let the snapshot's writes settle before the burst
        say(f"streaming: burst of {args.updates:,} updates in transactions of {args.txn_rows:,} rows")
        marker = f"marker-{uuid.uuid4().hex}"
        profiler.start(warp.pid, "streaming")
        cpu = CpuWindow(warp.pid)
        b = burst(args.updates, args.txn_rows, args.rows, marker_id, marker)
        visible, ckpt = wait_applied(warp, marker_id, marker, b["end"])
        used = cpu.stop()
        if path := profiler.stop():
            fig.setdefault("profile", {})["streaming"] = analyse_profile(path, STAGES)
        seconds = visible - b["first_commit"]
        fig["streaming"] = {
            "events": b["events"],
            "seconds": round(seconds, 2),
            "events_per_s": round(b["events"] / seconds),
            "source_seconds": b["source_seconds"],
            "lag_s": round(visible - b["last_commit"], 3),
            "checkpoint_lag_s": round(ckpt - b["last_commit"], 3),
        } | used
        say(f"  {fig['streaming']['events_per_s']:,} row events/s; lag {fig['streaming']['lag_s']:.2f}s")
        fig["idle_latency"] = idle_latency(warp, ping_id)

        if not args.no_catch_up:
            say("catch-up: stopping cartridge-warp (SIGTERM), committing a second burst, restarting it")
            rc = warp.stop()
            if rc != 0:
                raise BenchError(f"cartridge-warp exited with {rc} on SIGTERM:\n{warp.log_tail()}")
            marker2 = f"marker-{uuid.uuid4().hex}"
            b2 = burst(args.updates, args.txn_rows, args.rows, marker_id, marker2)
            started = warp.start()
            cpu = CpuWindow(warp.pid)
            streaming_at = warp.wait_log("streaming changes from", occurrence=2)
            visible2, _ckpt2 = wait_applied(warp, marker_id, marker2, b2["end"])
            total = visible2 - started
            fig["catch_up"] = {
                "events": b2["events"],
                "seconds": round(total, 2),
                "events_per_s": round(b2["events"] / total),
                "startup_seconds": round(streaming_at - started, 2),
                "events_per_s_after_startup": round(b2["events"] / (visible2 - streaming_at)),
            } | cpu.stop()
            say(f"  {fig['catch_up']['events_per_s']:,} row events/s from process start")

        say("verifying: row count and checksum on both sides")
        fig["verify"] = verify()
        ok = fig["verify"]["equal"]
    except BenchError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    except (pymysql.err.MySQLError, OSError) as exc:
        say(f"benchmark failed: {type(exc).__name__}: {exc} (was the server restarted meanwhile?)")
        return 1
    finally:
        profiler.stop()
        warp.finish()
        if args.keep:
            say(f"kept: databases {DB}, {DEST_DB}, {RAW_DB}; state {state_dir}")
        else:
            try:
                drop_everything()
            except pymysql.err.MySQLError as exc:
                say(f"could not drop the benchmark databases: {exc}")
            shutil.rmtree(state_dir, ignore_errors=True)
    print(report(fig))
    if args.json:
        print(json.dumps(fig, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
