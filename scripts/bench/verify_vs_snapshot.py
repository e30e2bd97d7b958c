#!/usr/bin/env python3
"""Benchmark: ``cartridge-warp verify`` of a MariaDB table against PostgreSQL vs. the snapshot of it.

Creates the MariaDB database ``warp_bench_verify`` with the table of scripts/bench/mysql_to_postgres.py
(``--rows`` rows, ten mixed columns, generated server-side), snapshots it into the PostgreSQL schema
``warp_bench_verify`` with ``python -m warpd --mode single`` (timed from process start until the state
file marks the table done), stops it, then times ``python -m warpd verify`` of the table (process
start to exit; verify's own figure too). The aim (issue 13): verify takes less than the snapshot.
Then times each database reading every column of every row once (``SUM(LENGTH(CONCAT_WS(...)))``,
one full scan, nothing rendered or hashed): the raw limit of any check that reads the rows where
they are, printed with verify's time as ratios. Drops both sides afterwards unless ``--keep``. Not
a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import ROOT, Warp, say  # the checkout's warpd, first on sys.path (see common.py)
from mysql_common import mysql, wait_snapshot
from mysql_to_postgres import CREATE_TABLE, LOAD_CHUNK, LOAD_SQL, TABLE
from pg_common import PG_DSN, pg

DB = "warp_bench_verify"
SOURCE_URI = f"mysql://warp:warp@127.0.0.1:3306/{DB}"


def drop_both() -> None:
    """Drop the MariaDB database and the PostgreSQL schema of this benchmark."""
    for connect, statement in (
        (mysql, f"DROP DATABASE IF EXISTS {DB}"),
        (pg, f"DROP SCHEMA IF EXISTS {DB} CASCADE"),
    ):
        conn = connect()
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
            conn.commit()
        finally:
            conn.close()


def create_source(rows: int) -> None:
    drop_both()
    conn = mysql()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
        cur.execute(f"USE {DB}")
        cur.execute(CREATE_TABLE)
        for a in range(1, rows + 1, LOAD_CHUNK):
            cur.execute(LOAD_SQL.format(a=a, b=min(rows, a + LOAD_CHUNK - 1)))
    conn.close()


COLUMNS = "id, qty, name, price, created_at, updated_at, score, flag, note, attrs"


def raw_scans() -> dict[str, float]:
    """Seconds each database takes to read every column of every row once (one query, one scan)."""
    timed = {}
    for side, connect, query in (
        ("mariadb", mysql, f"SELECT COUNT(*), SUM(LENGTH(CONCAT_WS(',', {COLUMNS}))) FROM {DB}.{TABLE}"),  # noqa: S608 - constants
        ("postgresql", pg, f"SELECT count(*), sum(length(concat_ws(',', {COLUMNS}))) FROM {DB}.{TABLE}"),  # noqa: S608
    ):
        conn = connect()
        try:
            with conn.cursor() as cur:
                started = time.monotonic()
                cur.execute(query)
                cur.fetchall()
                timed[side] = round(time.monotonic() - started, 2)
        finally:
            conn.close()
    return timed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the table (default 1,000,000)")
    p.add_argument("--keep", action="store_true", help="keep both sides and the state directory")
    args = p.parse_args(argv)
    say(f"creating {DB}.{TABLE} with {args.rows:,} rows")
    create_source(args.rows)
    state_dir = tempfile.mkdtemp(prefix="warp-bench-verify-")
    warp = Warp(
        state_dir,
        os.path.join(state_dir, "warpd.log"),
        ["--source", SOURCE_URI, "--destination", PG_DSN, "--schema", DB],
    )
    try:
        warp.start()
        snapshot = wait_snapshot(warp, DB, TABLE, args.rows)
        warp.wait_log("streaming changes from")
        warp.stop()
        say(f"snapshot: {snapshot['seconds_from_start']}s from process start")
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "warpd", "verify", "--source", SOURCE_URI, "--destination", PG_DSN,
             f"{DB}.{TABLE}", "--json"],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.monotonic() - started
        if run.returncode != 0:
            say(f"verify exited {run.returncode}:\n{run.stdout}\n{run.stderr}")
            return 1
        (table,) = json.loads(run.stdout)["tables"]
        figures = {
            "rows": args.rows,
            "snapshot_seconds": snapshot["seconds_from_start"],
            "verify_seconds": round(wall, 2),
            "verify_own_seconds": table["seconds"],
            "ranges": table["ranges"],
            "not_compared": sorted(table["not_compared"]),
        }
        figures["raw_scan_seconds"] = raw = raw_scans()
        say(json.dumps(figures))
        say(f"verify / snapshot = {wall / snapshot['seconds_from_start']:.2f} (aim: below 1)")
        say(
            "verify / raw scan = "
            + ", ".join(f"{wall / seconds:.1f} ({side}, {seconds}s)" for side, seconds in raw.items())
        )
        return 0
    finally:
        warp.finish()
        if not args.keep:
            drop_both()
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
