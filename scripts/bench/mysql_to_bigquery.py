#!/usr/bin/env python3
"""Benchmark: cartridge-warp MariaDB/MySQL -> BigQuery (the local emulator), snapshot and streaming,
against the raw limits of the same run.

What it does (``make bench-bigquery`` runs it with the defaults; this is not a test):

1. waits (``--quiet-wait``) for an idle machine and records what keeps it busy, then creates the
   MariaDB database ``warp_bench_bq_<random>`` with one orders-like table ``orders`` of ``--rows``
   rows (BIGINT key, INT, VARCHAR, DECIMAL(12,2), DATETIME(6), DATETIME, JSON), generated server-side
   from the SEQUENCE engine (not binlogged); the BigQuery dataset has the same name;
2. measures the raw limits on this machine, in this run (skip with ``--skip-raw``):
   (a) a Parquet load job of the same rows into a fresh table of the emulator: the rows are read with
       cartridge-warp's MySQL source and encoded into the staging fields by its BigQuery destination
       (untimed), turned into a pyarrow table and written as Parquet in memory (timed apart), then one
       ``load_table_from_file`` (timed: upload + job);
   (b) the MERGE cartridge-warp issues (``BigQueryDestination.merge_sql``) of that staging table into
       an empty target created by the destination's own DDL (all rows inserted), then the same MERGE
       again (all rows matched and updated);
   (c) reading the whole table with PyMySQL (cartridge-warp's driver), unbuffered SSCursor, typed values;
3. starts ``python -m warpd --mode single`` with a fresh ``--state-dir`` and times the snapshot from
   process start until the state file marks the table done (polled every 0.2 s); the emulator's CPU
   time over the same window is recorded when its pid file is found;
4. with the process streaming, commits a burst of ``--changes`` row changes, cycling through six kinds
   of transaction: one-row INSERT, ``--txn-rows``-row INSERT ... SELECT, one-row UPDATE, ranged UPDATE,
   one-row DELETE, ranged DELETE.  The last transaction also writes a unique marker into row 1.
   Streaming rate = row events / (first commit -> the marker is visible in BigQuery, polled every
   ``--poll`` s); lag = last commit -> marker visible; also when the stored checkpoint reaches the
   source's binlog position;
5. (d) parses the burst's binlog range with pymysqlreplication alone (the library cartridge-warp uses,
   same settings), the parse-rate ceiling of the streaming path;
6. verifies: a count and sums over five columns on both sides, and (unless ``--no-full-verify``)
   ``warpd.verify.table_difference``, every row and value of the source against the destination through
   the destination connector; prints the figures (JSON too with ``--json``), stops the process with
   SIGTERM, drops the database and both datasets (``--keep`` keeps them, and the state directory).

The emulator (scripts/setup-bigquery-emulator.sh, ``make setup-bigquery``) runs DuckDB on the same two
cores: it is not BigQuery, whose jobs take seconds each whatever their size.  Its absolute figures say
little about BigQuery; the ratios cartridge-warp / raw, within one run, are what to watch.

``--profile DIR`` samples the cartridge-warp process with py-spy (``pip install py-spy``) during the
snapshot and the burst, as the other benchmarks do (on-CPU Python time of the thread holding the GIL);
``--profile-all-threads`` samples every thread not detected idle; ``--profile-wall`` every thread, idle
or not (wall time: where a thread waits on the emulator's jobs).

Needs MariaDB on 127.0.0.1:3306 (scripts/setup-databases.sh; PostgreSQL there too, for the machine
header only) and the emulator on ``--endpoint`` (default http://127.0.0.1:9050, project ``warp``).
Warp's own settings can be varied with CARTRIDGE_WARP_* variables (docs/configuration.md, e.g.
CARTRIDGE_WARP_SNAPSHOT_CHUNK_SIZE), which the child process inherits.
"""

# SQL is built as text from the benchmark's own names (a random database name, constants) only.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from typing import Any

import pymysql
from bq_common import PROJECT, bigquery_drivers, bq_client, emulator_pid, emulator_version
from common import (  # the checkout's warpd, first on sys.path (see common.py)
    BenchError,
    CpuWindow,
    Profiler,
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
    machine,
    master_position,
    mysql,
    profile_lines,
    raw_parse,
    raw_read,
    wait_snapshot,
    wait_visible,
)

from warpd.config.model import DEFAULT_SNAPSHOT_CHUNK_SIZE
from warpd.connectors.bigquery.destination import BigQueryDestination
from warpd.connectors.bigquery.types import field_text
from warpd.connectors.mysql.source import MySQLSource
from warpd.verify import table_difference

TABLE = "orders"
MARKER_ID = 1  # the row whose note the last transaction of the burst sets (updates never touch note)
LOAD_CHUNK = 100_000

# Pipeline stages of the BigQuery destination first (first match wins), then the MariaDB source's.
BQ_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("staging Parquet (pyarrow, field_text)", ("pyarrow/", "bigquery/types.py:field_text")),
    ("load job: create stage, upload, wait", ("destination.py:BigQueryDestination._load",)),
    ("MERGE job: submit, wait", ("destination.py:BigQueryDestination._query",)),
    ("staging table drop", ("destination.py:BigQueryDestination._drop_stage",)),
    (
        "field encoding (warpd)",
        (
            "destination.py:BigQueryDestination.encode",
            "destination.py:BigQueryDestination.encode_chunk",
            "bigquery/types.py:",
        ),
    ),
    ("BigQuery client, other (google-cloud-bigquery, requests)", ("google/", "requests/", "urllib3/")),
    *STAGES,
)


# --------------------------------------------------------------------------- 1. the data
CREATE_TABLE = f"""CREATE TABLE {TABLE} (
    id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    customer_id INT NOT NULL,
    status      VARCHAR(16) NOT NULL,
    amount      DECIMAL(12,2) NOT NULL,
    quantity    INT NOT NULL,
    created_at  DATETIME(6) NOT NULL,
    updated_at  DATETIME NULL,
    note        VARCHAR(255),
    attrs       JSON
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

# ~200 bytes a row, every value derived from the sequence number; one updated_at in ten NULL, one note
# in twenty NULL.  The burst's inserts use it too, with the ids after the loaded ones.
INSERT_SQL = (
    f"INSERT INTO {TABLE} (id, customer_id, status, amount, quantity, created_at, updated_at, note, attrs) "
    "SELECT seq, seq % 50000, ELT(1 + seq % 5, 'new', 'paid', 'shipped', 'delivered', 'cancelled'), "
    "(seq % 1000000) / 100, 1 + seq % 20, "
    "TIMESTAMP'2021-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL ((seq * 7919) % 1000000) MICROSECOND, "
    "IF(seq % 10 = 0, NULL, TIMESTAMP'2022-01-01 00:00:00' + INTERVAL seq MINUTE), "
    "IF(seq % 20 = 0, NULL, CONCAT('order ', seq, ' ', LEFT(MD5(seq), 16))), "
    "JSON_OBJECT('channel', ELT(1 + seq % 3, 'web', 'app', 'store'), 'items', seq % 7, 'gift', seq % 11 = 0) "
    "FROM seq_{a}_to_{b}"
)


def create_source(db: str, rows: int) -> dict[str, Any]:
    say(f"creating MariaDB database {db} with {rows:,} rows (INSERT ... SELECT from SEQUENCE, sql_log_bin=0)")
    t0 = time.monotonic()
    conn = mysql()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")  # the load is no part of the stream to measure
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
            cur.execute(f"USE `{db}`")
            cur.execute(CREATE_TABLE)
            for a in range(1, rows + 1, LOAD_CHUNK):
                cur.execute(INSERT_SQL.format(a=a, b=min(rows, a + LOAD_CHUNK - 1)))
            cur.execute(f"ANALYZE TABLE {TABLE}")
            cur.fetchall()
    finally:
        conn.close()
    seconds = time.monotonic() - t0
    say(f"  loaded in {seconds:.1f}s")
    return {"load_seconds": round(seconds, 2)}


def drop_everything(db: str, bq: Any) -> None:
    conn = mysql()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
    conn.close()
    for ds in (db, f"{db}_raw"):
        bq.delete_dataset(f"{PROJECT}.{ds}", delete_contents=True, not_found_ok=True)


def bq_scalar(bq: Any, sql: str) -> Any:
    return list(bq.query(sql).result())[0]


# --------------------------------------------------------------------------- 2. raw limits
def raw_load_merge(db: str, rows: int, dest_uri: str, bq: Any, chunk_rows: int) -> dict[str, Any]:
    """(a) one Parquet load job of the rows as cartridge-warp stages them; (b) its MERGE, twice;
    (e) load, MERGE and drop per snapshot chunk into a growing table, as the snapshot does."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from google.cloud import bigquery

    raw_ds = f"{db}_raw"
    src = MySQLSource(f"mysql://warp:warp@127.0.0.1:3306/{db}", db, server_id=4_242_011)
    dest = BigQueryDestination(dest_uri)
    try:
        plan = dest.plan(src.describe(TABLE), raw_ds, soft_delete=False, metadata=False)
        say("raw (a): reading and encoding the rows as cartridge-warp stages them (not timed)")
        t0 = time.monotonic()
        records: list[list[str]] = []
        for chunk in src.snapshot(plan.source, None, 50_000):
            enc = dest.encode_chunk(plan, chunk)
            if enc.failed:
                raise BenchError(f"{len(enc.failed)} rows could not be encoded: {enc.failed[0][1]}")
            records += [r for _row, r in enc.records]
        encode_seconds = time.monotonic() - t0
        if len(records) != rows:
            raise BenchError(f"read {len(records)} rows, expected {rows}")
        width = len(dest.fields(plan))

        t0 = time.monotonic()
        columns = list(zip(*records, strict=True))
        arrays = {
            f"s{i}": pa.array([field_text(v) for v in col], pa.string()) for i, col in enumerate(columns)
        }
        arrays["_warp_del"] = pa.array([False] * rows, pa.bool_())
        arrays["_warp_ord"] = pa.array(range(rows), pa.int64())
        staged = pa.table(arrays)
        buf = io.BytesIO()
        pq.write_table(staged, buf)
        parquet_seconds = time.monotonic() - t0
        size = buf.tell()
        buf.seek(0)
        del records, columns, arrays
        pieces = []  # (e): the same rows as Parquet files of one snapshot chunk each
        for offset in range(0, rows, chunk_rows):
            piece = io.BytesIO()
            pq.write_table(staged.slice(offset, chunk_rows), piece)
            piece.seek(0)
            pieces.append(piece)
        del staged

        bq.create_dataset(f"{PROJECT}.{raw_ds}", exists_ok=True)
        schema = [bigquery.SchemaField(f"s{i}", "STRING") for i in range(width)]
        schema += [bigquery.SchemaField("_warp_del", "BOOL"), bigquery.SchemaField("_warp_ord", "INT64")]
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET, schema=schema)
        say(f"raw (a): one Parquet load job of {rows:,} rows ({size / 2**20:,.1f} MiB) into a fresh table")
        emu = emulator_pid(dest.target.api_endpoint or "")
        cpu = CpuWindow(emu)
        t0 = time.monotonic()
        bq.load_table_from_file(buf, f"{PROJECT}.{raw_ds}.stage", job_config=config).result()
        load_seconds = time.monotonic() - t0
        load_cpu = cpu.stop()
        say(f"  {rows / load_seconds:,.0f} rows/s ({load_seconds:.2f}s)")

        for stmt in dest.create_sql(plan):
            bq.query(stmt).result()
        merge = dest.merge_sql(plan, "stage")
        out_merge = {}
        for label in ("insert", "update"):
            say(f"raw (b): the MERGE cartridge-warp issues, {rows:,} staged rows, all {label}s")
            cpu = CpuWindow(emu)
            t0 = time.monotonic()
            bq.query(merge).result()
            seconds = time.monotonic() - t0
            used = cpu.stop()
            out_merge[label] = {
                "seconds": round(seconds, 3),
                "rows_per_s": round(rows / seconds),
                "machine_busy_pct": used["machine_busy_pct"],
                "emulator_cpu_s": used.get("warp_cpu_s"),
            }
            say(f"  {rows / seconds:,.0f} rows/s ({seconds:.2f}s)")
        target = f"`{PROJECT}.{raw_ds}.{plan.dest_table}`"
        merged = bq_scalar(bq, f"SELECT COUNT(*) FROM {target}")[0]
        if merged != rows:
            raise BenchError(f"the raw MERGE left {merged} rows, expected {rows}")

        bq.query(f"DROP TABLE {target}").result()
        for stmt in dest.create_sql(plan):
            bq.query(stmt).result()
        say(
            f"raw (e): the snapshot's pattern without cartridge-warp: per {chunk_rows:,}-row chunk a load job into "
            f"a fresh table, the MERGE, the drop ({len(pieces)} chunks)"
        )
        cpu = CpuWindow(emu)
        t0 = time.monotonic()
        for i, piece in enumerate(pieces):
            stage = f"stage_{i}"
            bq.load_table_from_file(piece, f"{PROJECT}.{raw_ds}.{stage}", job_config=config).result()
            bq.query(dest.merge_sql(plan, stage)).result()
            bq.delete_table(f"{PROJECT}.{raw_ds}.{stage}")
        chunked_seconds = time.monotonic() - t0
        chunked_cpu = cpu.stop()
        merged = bq_scalar(bq, f"SELECT COUNT(*) FROM {target}")[0]
        if merged != rows:
            raise BenchError(f"the chunked raw MERGE left {merged} rows, expected {rows}")
        say(f"  {rows / chunked_seconds:,.0f} rows/s ({chunked_seconds:.2f}s)")
    finally:
        src.close()
        dest.close()
        bq.delete_dataset(f"{PROJECT}.{raw_ds}", delete_contents=True, not_found_ok=True)
    return {
        "load": {
            "rows": rows,
            "seconds": round(load_seconds, 3),
            "rows_per_s": round(rows / load_seconds),
            "mib": round(size / 2**20, 1),
            "machine_busy_pct": load_cpu["machine_busy_pct"],
            "emulator_cpu_s": load_cpu.get("warp_cpu_s"),
        },
        "parquet": {"seconds": round(parquet_seconds, 3), "rows_per_s": round(rows / parquet_seconds)},
        "read_and_encode": {"seconds": round(encode_seconds, 3), "rows_per_s": round(rows / encode_seconds)},
        "merge": out_merge,
        "chunked": {
            "chunk_rows": chunk_rows,
            "chunks": len(pieces),
            "seconds": round(chunked_seconds, 3),
            "rows_per_s": round(rows / chunked_seconds),
            "machine_busy_pct": chunked_cpu["machine_busy_pct"],
            "emulator_cpu_s": chunked_cpu.get("warp_cpu_s"),
        },
    }


# --------------------------------------------------------------------------- 4. the burst
def burst(db: str, changes: int, txn_rows: int, rows: int, marker: str) -> dict[str, Any]:
    """About ``changes`` row changes in six kinds of transaction, cycled; the last also writes ``marker``."""
    conn = mysql(db)
    conn.autocommit(False)
    commits: list[float] = []
    kinds = {"insert": 0, "update": 0, "delete": 0}
    next_id, upd, dele = rows + 1, 2, rows  # inserts after the loaded ids; updates up from 2; deletes down
    try:
        start = master_position(conn)
        done = step = 0
        with conn.cursor() as cur:
            while done < changes:
                n = 1 if step % 2 == 0 else max(1, min(txn_rows, changes - done))
                kind = ("insert", "update", "delete")[(step // 2) % 3]
                if kind == "insert":
                    cur.execute(INSERT_SQL.format(a=next_id, b=next_id + n - 1))
                    next_id += n
                elif kind == "update":
                    cur.execute(
                        f"UPDATE {TABLE} SET status = 'updated', amount = amount + 1.25, "
                        "quantity = quantity + 1, updated_at = NOW() WHERE id BETWEEN %s AND %s",
                        (upd, upd + n - 1),
                    )
                    upd += n
                else:
                    cur.execute(f"DELETE FROM {TABLE} WHERE id BETWEEN %s AND %s", (dele - n + 1, dele))
                    dele -= n
                if upd >= dele - n:
                    raise BenchError("--changes too large for --rows: updates would reach the deleted rows")
                kinds[kind] += cur.rowcount
                done += cur.rowcount
                step += 1
                if done >= changes:
                    cur.execute(f"UPDATE {TABLE} SET note = %s WHERE id = %s", (marker, MARKER_ID))
                    kinds["update"] += 1
                conn.commit()
                commits.append(time.monotonic())
        end = master_position(conn)
    finally:
        conn.close()
    events = done + 1
    seconds = commits[-1] - commits[0]
    return {
        "events": events,
        "by_kind": kinds,
        "transactions": len(commits),
        "first_commit": commits[0],
        "last_commit": commits[-1],
        "source_seconds": round(seconds, 3),
        "start": start,
        "end": end,
    }


# --------------------------------------------------------------------------- 6. verification
def _scaled(row: Any) -> tuple[int, ...]:
    """The checksum row as integers (the sum of amount in cents)."""
    return tuple(int(Decimal(str(v or 0)) * (100 if i == 3 else 1)) for i, v in enumerate(row))


def checksum_source(db: str) -> tuple[int, ...]:
    conn = mysql(db)
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT COUNT(*), SUM(id), SUM(customer_id + quantity), SUM(amount), "
            f"SUM(CHAR_LENGTH(note)), COUNT(updated_at) FROM {TABLE}"
        )
        row = cur.fetchone()
    conn.close()
    return _scaled(row)


def checksum_destination(bq: Any, db: str) -> tuple[int, ...]:
    row = bq_scalar(
        bq,
        f"SELECT COUNT(*), SUM(id), SUM(customer_id + quantity), SUM(amount), "
        f"SUM(CHAR_LENGTH(note)), COUNT(updated_at) FROM `{PROJECT}.{db}.{TABLE}`",
    )
    return _scaled(row)


def verify(db: str, bq: Any, dest_uri: str, full: bool) -> dict[str, Any]:
    src_sum, dst_sum = checksum_source(db), checksum_destination(bq, db)
    out: dict[str, Any] = {
        "checksum_equal": src_sum == dst_sum,
        "source": src_sum,
        "destination": dst_sum,
        "columns": "count, sum(id), sum(customer_id + quantity), sum(amount), sum(char_length(note)), "
        "count(updated_at)",
    }
    if full:
        say("verifying every row and value (warpd.verify.table_difference through the destination connector)")
        src = MySQLSource(f"mysql://warp:warp@127.0.0.1:3306/{db}", db, server_id=4_242_012)
        dest = BigQueryDestination(dest_uri)
        try:
            plan = dest.plan(src.describe(TABLE), db, soft_delete=False, metadata=True)
            t0 = time.monotonic()
            out["full_difference"] = table_difference(src, dest, plan)
            out["full_seconds"] = round(time.monotonic() - t0, 1)
        finally:
            src.close()
            dest.close()
    out["equal"] = out["checksum_equal"] and out.get("full_difference") is None
    return out


# --------------------------------------------------------------------------- report
def report(fig: dict[str, Any]) -> str:
    raw, snap, live = fig.get("raw", {}), fig["snapshot"], fig["streaming"]
    load = raw.get("load", {}).get("rows_per_s")
    merge_i = raw.get("merge", {}).get("insert", {}).get("rows_per_s")
    merge_u = raw.get("merge", {}).get("update", {}).get("rows_per_s")
    both = round(1 / (1 / load + 1 / merge_i)) if load and merge_i else None
    read = raw.get("pymysql_read", {}).get("rows_per_s")
    parse = raw.get("binlog_parse", {}).get("events_per_s")
    rows: list[tuple[str, str, str]] = []

    def add(label: str, value: str, note: str = "") -> None:
        rows.append((label, value, note))

    add(
        "rows / burst changes",
        f"{fig['rows']:,} / {live['events']:,}",
        f"multi-row transactions of {fig['txn_rows']:,} rows; min_flush_interval {fig['min_flush_interval']:g} s",
    )
    if load:
        r = raw
        add(
            "raw (a) Parquet load job, one job",
            f"{load:,} rows/s",
            f"{r['load']['seconds']}s, {r['load']['mib']} MiB Parquet; emulator CPU "
            f"{r['load']['emulator_cpu_s']}s; machine {r['load']['machine_busy_pct']}% busy",
        )
        add(
            "  (Parquet writing beforehand, pyarrow)",
            f"{r['parquet']['rows_per_s']:,} rows/s",
            f"{r['parquet']['seconds']}s; reading + encoding the fields before it: "
            f"{r['read_and_encode']['rows_per_s']:,} rows/s",
        )
        add(
            "raw (b) MERGE of the staged rows, inserts",
            f"{merge_i:,} rows/s",
            f"{r['merge']['insert']['seconds']}s, one job, cartridge-warp's statement; emulator CPU "
            f"{r['merge']['insert']['emulator_cpu_s']}s",
        )
        add(
            "raw (b) the same MERGE again, updates",
            f"{merge_u:,} rows/s",
            f"{r['merge']['update']['seconds']}s; every row matched",
        )
        add("raw (a)+(b) load then merge, one job each", f"{both:,} rows/s", "1 / (1/a + 1/b_inserts)")
        ch = r["chunked"]
        add(
            f"raw (e) load + MERGE + drop per {ch['chunk_rows']:,}-row chunk",
            f"{ch['rows_per_s']:,} rows/s",
            f"{ch['seconds']}s, {ch['chunks']} chunk(s) into a growing table, as the snapshot; emulator CPU "
            f"{ch['emulator_cpu_s']}s; machine {ch['machine_busy_pct']}% busy",
        )
    else:
        add("raw (a), (b) load and MERGE", "skipped")
    add(
        "raw (c) PyMySQL SSCursor read, typed values",
        f"{read:,} rows/s" if read else "skipped",
        f"{raw['pymysql_read']['seconds']}s, client CPU {raw['pymysql_read']['client_cpu_s']}s"
        if read
        else "",
    )
    add(
        "raw (d) pymysqlreplication parse",
        f"{parse:,} events/s" if parse else "skipped",
        f"{raw['binlog_parse']['seconds']}s for {raw['binlog_parse']['events']:,} row events, client CPU "
        f"{raw['binlog_parse']['client_cpu_s']}s"
        if parse
        else "",
    )
    emu = f"; emulator CPU {snap['emulator_cpu_s']}s" if snap.get("emulator_cpu_s") is not None else ""
    add(
        "snapshot (process start -> done)",
        f"{snap['rows_per_s']:,} rows/s",
        f"{snap['seconds_from_start']}s; warp CPU {snap['warp_cpu_s']}s{emu}; machine "
        f"{snap['machine_busy_pct']}% busy",
    )
    if snap.get("copy_rows_per_s"):
        add(
            "snapshot, copy phase only",
            f"{snap['copy_rows_per_s']:,} rows/s",
            f"{snap['copy_seconds']}s (first 'running' -> done); warp logs "
            f"{snap.get('warp_reported_rows_per_s') or 0:,} rows/s",
        )
    add("  snapshot / raw (a) load", ratio(snap["rows_per_s"], load))
    add("  snapshot / raw (b) MERGE", ratio(snap["rows_per_s"], merge_i))
    chunked = raw.get("chunked", {}).get("rows_per_s")
    add("  snapshot / raw (a)+(b) load then merge", ratio(snap["rows_per_s"], both), "one job each")
    add(
        "  snapshot / raw (e) chunked load + MERGE",
        ratio(snap["rows_per_s"], chunked),
        "the destination's ceiling at this chunk size",
    )
    add("  snapshot / raw (c) PyMySQL read", ratio(snap["rows_per_s"], read))
    k = live["by_kind"]
    emu = f"; emulator CPU {live['emulator_cpu_s']}s" if live.get("emulator_cpu_s") is not None else ""
    add(
        "streaming, live burst",
        f"{live['events_per_s']:,} events/s",
        f"{live['events']:,} events ({k['insert']:,} inserts, {k['update']:,} updates, {k['delete']:,} deletes; "
        f"{live['transactions']:,} transactions) in {live['seconds']}s (first commit -> visible); the source "
        f"committed them in {live['source_seconds']}s; warp CPU {live['warp_cpu_s']}s{emu}; machine "
        f"{live['machine_busy_pct']}% busy",
    )
    add("  streaming / raw (d) parse", ratio(live["events_per_s"], parse))
    add("  streaming / raw (e) chunked load + MERGE", ratio(live["events_per_s"], chunked))
    add("lag: last commit -> visible in BigQuery", f"{live['lag_s']:.2f}s", f"polled every {fig['poll']:g} s")
    add(
        "lag: last commit -> checkpoint caught up",
        f"{live['checkpoint_lag_s']:.2f}s",
        f"stored position >= {live['end'][0]}:{live['end'][1]}",
    )
    v = fig["verify"]
    full = (v["full_difference"] or "equal") if "full_seconds" in v else None
    add(
        "verification",
        "OK" if v["equal"] else "MISMATCH",
        f"{v['source'][0]:,} rows; {v['columns']} equal: {v['checksum_equal']}"
        + ("" if full is None else f"; every row and value: {full} ({v['full_seconds']}s)"),
    )
    m = fig["machine"]
    lines = [
        f"cartridge-warp benchmark: MariaDB -> BigQuery emulator ({time.strftime('%Y-%m-%d %H:%M')})",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, kernel {m['kernel']}",
        f"         MariaDB {m['mariadb']}; Python {m['python']}; emulator {fig['emulator']} at {fig['endpoint']}",
        f"         {m['drivers']}, {fig['bigquery_drivers']}",
        f"         MariaDB: {m['mariadb_settings']}",
        f"cartridge-warp: {fig.get('warpd', '?')}",
        "the emulator is not BigQuery (DuckDB on the same cores; BigQuery jobs take seconds each): watch the "
        "ratios, not the absolute rates",
    ]
    lines += report_tail(fig, rows)
    lines += profile_lines(fig)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=200_000, help="rows in the table (default 200,000)")
    p.add_argument("--changes", type=int, default=20_000, help="row changes in the burst (default 20,000)")
    p.add_argument("--txn-rows", type=int, default=100, help="rows of a multi-row transaction (default 100)")
    p.add_argument("--endpoint", default="http://127.0.0.1:9050", help="the emulator (default %(default)s)")
    p.add_argument(
        "--min-flush-interval",
        type=float,
        default=1.0,
        help="the destination's min_flush_interval (default 1)",
    )
    p.add_argument("--poll", type=float, default=0.2, help="seconds between BigQuery polls for the marker")
    p.add_argument(
        "--keep", action="store_true", help="keep the database, the dataset and the state directory"
    )
    p.add_argument("--skip-raw", action="store_true", help="do not measure the raw limits")
    p.add_argument("--no-full-verify", action="store_true", help="only the checksum, not every row and value")
    p.add_argument("--profile", metavar="DIR", help="sample cartridge-warp with py-spy; raw stacks go to DIR")
    p.add_argument(
        "--profile-all-threads",
        action="store_true",
        help="sample every active thread, not only the one holding the GIL (py-spy without --gil)",
    )
    p.add_argument(
        "--profile-wall",
        action="store_true",
        help="sample every thread, idle ones too (py-spy --idle): wall time, waits on jobs included",
    )
    add_output_options(p, quiet_wait=60.0)
    args = p.parse_args(argv)
    if args.rows < 10 or args.changes < 1 or args.txn_rows < 1 or args.changes > args.rows // 2:
        p.error("--rows must be >= 10, --changes from 1 to --rows / 2, --txn-rows >= 1")

    endpoint = args.endpoint.rstrip("/")
    # the snapshot's chunk size: warpd's default unless the child is told otherwise
    chunk_rows = int(os.environ.get("CARTRIDGE_WARP_SNAPSHOT_CHUNK_SIZE") or DEFAULT_SNAPSHOT_CHUNK_SIZE)
    db = f"warp_bench_bq_{uuid.uuid4().hex[:8]}"  # MariaDB database, cartridge-warp schema and dataset
    dest_uri = f"bigquery://{PROJECT}?api_endpoint={endpoint}&min_flush_interval={args.min_flush_interval:g}"
    fig: dict[str, Any] = {
        "rows": args.rows,
        "changes": args.changes,
        "txn_rows": args.txn_rows,
        "min_flush_interval": args.min_flush_interval,
        "poll": args.poll,
        "endpoint": endpoint,
        "database": db,
        "emulator": emulator_version(),
        "bigquery_drivers": bigquery_drivers(),
    }
    try:
        bq = bq_client(endpoint)
        list(bq.list_datasets(max_results=1, timeout=10))
    except Exception as exc:  # noqa: BLE001 - any failure here means no emulator
        say(f"no BigQuery emulator at {endpoint} ({type(exc).__name__}: {exc}); run `make setup-bigquery`")
        return 1
    fig["machine"] = machine()
    fig["load"] = wait_for_quiet(args.quiet_wait)
    fig["warpd"] = warpd_revision()
    if args.profile:
        fig["profile_mode"] = (
            "every thread, idle too: wall time"
            if args.profile_wall
            else "all active threads"
            if args.profile_all_threads
            else "the thread holding the GIL: on-CPU Python time"
        )
    state_dir = tempfile.mkdtemp(prefix="warp-bench-bq-state-")
    warp = Warp(
        state_dir,
        os.path.join(state_dir, "warpd.log"),
        ["--source", f"mysql://warp:warp@127.0.0.1:3306/{db}", "--destination", dest_uri, "--schema", db],
    )
    profiler = Profiler(
        args.profile, gil=not (args.profile_all_threads or args.profile_wall), idle=args.profile_wall
    )
    emu = emulator_pid(endpoint)
    ok = False
    try:
        fig["source"] = create_source(db, args.rows)
        if not args.skip_raw:
            fig["raw"] = raw_load_merge(db, args.rows, dest_uri, bq, chunk_rows)
            fig["raw"]["pymysql_read"] = raw_read(db, TABLE, args.rows, "raw (c)")

        say(f"snapshot: starting cartridge-warp (state {state_dir}, log {warp.log_path})")
        emu_cpu = CpuWindow(emu)
        warp.start()
        if args.profile:
            warp.store()  # the interpreter is up once it has created the state file
            profiler.start(warp.pid, "snapshot")
        fig["snapshot"] = wait_snapshot(warp, db, TABLE, args.rows)
        fig["snapshot"]["emulator_cpu_s"] = emu_cpu.stop().get("warp_cpu_s") if emu else None
        if path := profiler.stop():
            fig.setdefault("profile", {})["snapshot"] = analyse_profile(path, BQ_STAGES)
        say(
            f"  {fig['snapshot']['rows_per_s']:,} rows/s from process start "
            f"({fig['snapshot']['seconds_from_start']}s)"
        )

        warp.wait_log("streaming changes from")
        time.sleep(2.0)  # let the snapshot's last merge settle before the burst
        say(f"streaming: burst of {args.changes:,} changes (one-row and {args.txn_rows:,}-row transactions)")
        marker = f"marker-{uuid.uuid4().hex}"
        marker_sql = f"SELECT note FROM `{PROJECT}.{db}.{TABLE}` WHERE id = {MARKER_ID}"

        def marker_seen() -> bool:
            row = list(bq.query(marker_sql).result())
            return bool(row and row[0][0] == marker)

        profiler.start(warp.pid, "streaming")
        cpu, emu_cpu = CpuWindow(warp.pid), CpuWindow(emu)
        b = burst(db, args.changes, args.txn_rows, args.rows, marker)
        visible, ckpt = wait_visible(warp, db, marker_seen, b["end"], poll=args.poll)
        used = cpu.stop()
        used["emulator_cpu_s"] = emu_cpu.stop().get("warp_cpu_s") if emu else None
        if path := profiler.stop():
            fig.setdefault("profile", {})["streaming"] = analyse_profile(path, BQ_STAGES)
        seconds = visible - b["first_commit"]
        fig["streaming"] = {
            "events": b["events"],
            "by_kind": b["by_kind"],
            "transactions": b["transactions"],
            "seconds": round(seconds, 2),
            "events_per_s": round(b["events"] / seconds),
            "source_seconds": b["source_seconds"],
            "lag_s": round(visible - b["last_commit"], 3),
            "checkpoint_lag_s": round(ckpt - b["last_commit"], 3),
            "start": list(b["start"]),
            "end": list(b["end"]),
        } | used
        say(
            f"  {fig['streaming']['events_per_s']:,} row events/s; lag {fig['streaming']['lag_s']:.2f}s "
            f"(source committed the burst in {b['source_seconds']:.1f}s)"
        )
        if not args.skip_raw:
            fig["raw"]["binlog_parse"] = raw_parse(b["start"], b["end"], db, b["events"])

        say("verifying: count and sums on both sides")
        fig["verify"] = verify(db, bq, dest_uri, not args.no_full_verify)
        ok = fig["verify"]["equal"]
    except BenchError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    except (pymysql.err.MySQLError, OSError) as exc:
        say(f"benchmark failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        profiler.stop()
        warp.finish()
        if args.keep:
            say(f"kept: MariaDB database {db}, dataset {PROJECT}.{db}, state {state_dir}")
        else:
            try:
                drop_everything(db, bq)
            except Exception as exc:  # noqa: BLE001 - best effort, say what is left
                say(f"could not drop {db}: {exc}")
            shutil.rmtree(state_dir, ignore_errors=True)
    print(report(fig))
    if args.json:
        print(json.dumps(fig, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
