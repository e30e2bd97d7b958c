#!/usr/bin/env python3
"""Benchmark: cartridge-warp MariaDB -> PostgreSQL with the OLTP shape: one row per statement.

``mysql_to_postgres.py`` streams 1,000-row ``UPDATE ... BETWEEN`` statements, which spreads each
transaction's and each binlog event's fixed cost over a thousand rows.  Applications change one row
per statement, commit every few statements, and expect each change in the destination soon; this
script measures that.  What it does (``make bench-oltp`` runs it with the defaults; it is not a test):

1. waits (``--quiet-wait``) for an idle machine, then creates the MariaDB database ``warp_bench_oltp``
   with an e-commerce shape: ``users`` (``--users`` rows), ``products`` (``--products``) and ``orders``
   (``--orders``; BIGINT auto-increment key, INT user and product ids, VARCHAR status, INT quantity,
   DECIMAL price, nullable VARCHAR note, DATETIME(6) created_at, TIMESTAMP(6) updated_at ON UPDATE,
   a small JSON payload, a secondary key on user_id), generated server-side from the SEQUENCE engine
   with ``sql_log_bin=0`` (the load is not binlogged), and an empty PostgreSQL schema
   ``warp_bench_oltp`` in database ``warp_test``;
2. snapshot: starts ``python -m warpd --mode single`` on a fresh ``--state-dir`` and times it from
   process start until the state file marks all three tables done (polled every 0.2 s): rows/s;
3. catch-up: stops the process (SIGTERM), records the binlog position, commits the burst with
   PyMySQL, one statement per ``execute``: ``--updates`` single-row ``UPDATE orders SET status,
   quantity, note, payload WHERE id = <random>``, then ``--inserts`` single-row INSERTs, then
   ``--deletes`` single-row DELETEs, committed every ``--commit-every`` statements, then a marker
   update in its own transaction; records the end position.  How fast the burst is written is not
   measured.  Restarts the process on the same state directory and times it from process start until
   the whole burst is applied: the marker is visible in PostgreSQL and the stored checkpoint covers the
   burst (stored only once every apply worker committed; the marker's worker may commit before another
   worker's rows), polled every 20 ms: row events/s, the process's CPU seconds (/proc, all threads,
   start-up included) and CPU ms per 1,000 row events, its RSS (VmRSS, sampled every 0.5 s) when it
   logs that it streams, at peak and when caught up, and the checkpoint it stored;
4. library parse reference: parses exactly the burst's binlog range with pymysqlreplication alone
   (cartridge-warp's reader settings: resume_stream, only_schemas, the same event classes;
   blocking=False; the library without cartridge-warp's fixes), decoding the rows: rows/s and CPU
   seconds, and the ratio catch-up / library parse (the aim is >= 1.5x: cartridge-warp should apply
   faster than the library alone can decode).  ``--parse-only`` adds the same pass without decoding
   the row images (events read, table maps parsed): the protocol floor;
5. live: with cartridge-warp streaming, a writer thread offers ``--live-rate`` row events/s (the same
   single-row update / insert / delete mix, committed every 10 statements, paced by the wall clock) for
   ``--live-seconds``; every 100 ms it also sets ``note = 'probe-<n>'`` on one orders row in its own
   commit and records when the commit returned.  A poller thread reads that row from PostgreSQL every
   10 ms and records when each n first appears (a probe counts as visible once it or a later one is
   seen).  Reports lag p50 / p99 / max from commit to visible, the rate achieved and cartridge-warp's CPU
   share (per cent of one core) meanwhile;
6. verifies row counts of the three tables and a checksum over orders (id, status, quantity, price,
   note, payload as JSON with sorted keys), computed in Python from both sides; a mismatch fails the
   run; prints the report (JSON too with ``--json``), stops the process and drops ``warp_bench_oltp``
   on both sides (``--keep`` keeps them and the state directory).

``--profile DIR`` samples cartridge-warp with py-spy (``pip install py-spy``) during the catch-up and
prints the shares per pipeline stage and per file:function.  On a shared VM absolute figures vary
between runs; the ratio to the library parse within one run is steadier.

Needs the local databases configured by scripts/setup-databases.sh: MariaDB on 127.0.0.1:3306 (root
without password, binlog ROW/FULL), PostgreSQL on 127.0.0.1:5432 (user warp/warp, database
warp_test), and nothing restarting them meanwhile.  Warp's own settings can be varied with
CARTRIDGE_WARP_* variables (docs/configuration.md), which the child process inherits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
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
    machine,
    machine_header,
    master_position,
    mysql,
    profile_lines,
    raw_parse,
    wait_applied,
)
from pg_common import PG_DSN, pg, pg_superuser_checkpoint

DB = "warp_bench_oltp"  # MariaDB database, PostgreSQL schema and cartridge-warp schema name
TABLES = ("users", "products", "orders")
SOURCE_URI = f"mysql://warp:warp@127.0.0.1:3306/{DB}"
MARKER_ID = 1  # the orders row whose note marks the end of a burst
PROBE_ID = 2  # the orders row the live phase's probes update
LOAD_CHUNK = 100_000
STATE_POLL = 0.2  # seconds between state-file polls (snapshot)
PROBE_EVERY = 0.1  # seconds between live probes
PROBE_POLL = 0.01  # seconds between the poller's reads of the probe row
LIVE_COMMIT_EVERY = 10
AIM_CATCH_UP_VS_PARSE = 1.5

STATUSES = ("new", "paid", "packed", "shipped", "delivered", "cancelled", "refunded")
SOURCES = ("web", "app", "api", "pos")
TAGS = ("gift", "promo", "b2b", "express", "return", "bulk", "vip")

# --------------------------------------------------------------------------- 1. the data
CREATE = (
    """CREATE TABLE users (
    id         INT NOT NULL PRIMARY KEY,
    email      VARCHAR(128) NOT NULL,
    name       VARCHAR(64) NOT NULL,
    country    CHAR(2) NOT NULL,
    created_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE products (
    id    INT NOT NULL PRIMARY KEY,
    sku   VARCHAR(32) NOT NULL,
    title VARCHAR(128) NOT NULL,
    price DECIMAL(12,2) NOT NULL,
    stock INT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE orders (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    INT NOT NULL,
    product_id INT NOT NULL,
    status     VARCHAR(16) NOT NULL,
    quantity   INT NOT NULL,
    price      DECIMAL(12,2) NOT NULL,
    note       VARCHAR(64) NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    payload    JSON,
    KEY (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)

# Every value derived from the sequence number; {a} and {b} bound the SEQUENCE table; {users} and
# {products} are the sizes, so every order names an existing user and product.
LOAD = {
    "users": "INSERT INTO users (id, email, name, country, created_at) "
    "SELECT seq, CONCAT('user', seq, '@example.com'), CONCAT('User ', LEFT(MD5(seq), 10)), "
    "ELT(1 + seq % 5, 'DE', 'FR', 'US', 'GB', 'JP'), TIMESTAMP'2019-01-01 00:00:00' + INTERVAL seq MINUTE "
    "FROM seq_{a}_to_{b}",
    "products": "INSERT INTO products (id, sku, title, price, stock) "
    "SELECT seq, CONCAT('SKU-', LPAD(seq, 8, '0')), CONCAT('Product ', seq, ' ', LEFT(MD5(seq), 8)), "
    "1 + (seq * 37 % 50000) / 100, seq % 500 FROM seq_{a}_to_{b}",
    "orders": "INSERT INTO orders (id, user_id, product_id, status, quantity, price, note, created_at, "
    "updated_at, payload) "
    "SELECT seq, 1 + seq * 7919 % {users}, 1 + seq * 104729 % {products}, "
    "ELT(1 + seq % 7, 'new', 'paid', 'packed', 'shipped', 'delivered', 'cancelled', 'refunded'), "
    "1 + seq % 5, (100 + seq * 31 % 100000) / 100, IF(seq % 4 = 0, NULL, CONCAT('note ', LEFT(MD5(seq), 12))), "
    "TIMESTAMP'2021-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL (seq * 7919 % 1000000) MICROSECOND, "
    "TIMESTAMP'2021-01-01 01:00:00' + INTERVAL seq SECOND, "
    "JSON_OBJECT('src', ELT(1 + seq % 4, 'web', 'app', 'api', 'pos'), "
    "'tags', JSON_ARRAY(CONCAT('t', seq % 7), CONCAT('t', seq % 11)), 'n', seq % 1000) "
    "FROM seq_{a}_to_{b}",
}


def create_source(sizes: dict[str, int]) -> dict[str, Any]:
    say(
        f"creating MariaDB database {DB}: "
        + ", ".join(f"{t} {n:,} rows" for t, n in sizes.items())
        + " (INSERT ... SELECT from the SEQUENCE engine, sql_log_bin=0)"
    )
    t0 = time.monotonic()
    conn = mysql()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")  # the load is no part of the stream to measure
            cur.execute(f"DROP DATABASE IF EXISTS {DB}")
            cur.execute(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
            cur.execute(f"USE {DB}")
            for ddl in CREATE:
                cur.execute(ddl)
            for table, rows in sizes.items():
                for a in range(1, rows + 1, LOAD_CHUNK):
                    b = min(rows, a + LOAD_CHUNK - 1)
                    cur.execute(
                        LOAD[table].format(a=a, b=b, users=sizes["users"], products=sizes["products"])
                    )
                    conn.commit()
            cur.execute("ANALYZE TABLE users, products, orders")
            cur.fetchall()
            cur.execute(
                "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                (DB,),
            )
            size = int(cur.fetchone()[0] or 0)
    finally:
        conn.close()
    seconds = time.monotonic() - t0
    say(f"  loaded in {seconds:.1f}s ({size / 2**20:,.0f} MiB of InnoDB data and indexes)")
    return {"load_seconds": round(seconds, 2), "innodb_mib": round(size / 2**20, 1)}


def reset_destination() -> None:
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {DB} CASCADE")
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
    conn.close()


# --------------------------------------------------------------------------- the workload
class Workload:
    """Single-row statements on orders, as an application issues them; each returns its row count.

    Updates and deletes pick random ids of the generated rows (never the marker or probe row); every
    update writes a note no earlier statement wrote, so it always changes the row (an UPDATE that
    changes nothing is not binlogged); deletes never pick a row twice.
    """

    UPDATE = "UPDATE orders SET status = %s, quantity = %s, note = %s, payload = %s WHERE id = %s"
    INSERT = (
        "INSERT INTO orders (user_id, product_id, status, quantity, price, note, created_at, payload) "
        "VALUES (%s, %s, %s, %s, %s, %s, NOW(6), %s)"
    )
    DELETE = "DELETE FROM orders WHERE id = %s"

    def __init__(self, orders: int, users: int, products: int, seed: int = 42):
        self.rng = random.Random(seed)
        self.orders, self.users, self.products = orders, users, products
        self.counter = 0
        self.deleted: set[int] = set()

    def _payload(self) -> str:
        r = self.rng
        return json.dumps({"src": r.choice(SOURCES), "tags": r.sample(TAGS, 2), "n": r.randrange(1000)})

    def _id(self) -> int:
        return self.rng.randint(PROBE_ID + 1, self.orders)

    def update(self, cur: Any) -> int:
        self.counter += 1
        r = self.rng
        cur.execute(
            self.UPDATE,
            (r.choice(STATUSES), r.randint(1, 9), f"u{self.counter}", self._payload(), self._id()),
        )
        return int(cur.rowcount)

    def insert(self, cur: Any) -> int:
        self.counter += 1
        r = self.rng
        cur.execute(
            self.INSERT,
            (
                r.randint(1, self.users),
                r.randint(1, self.products),
                "new",
                r.randint(1, 5),
                f"{r.randint(100, 99_999) / 100:.2f}",
                f"i{self.counter}" if self.counter % 4 else None,
                self._payload(),
            ),
        )
        return int(cur.rowcount)

    def delete(self, cur: Any) -> int:
        if len(self.deleted) >= self.orders - PROBE_ID - 1:
            return self.update(cur)
        while (row_id := self._id()) in self.deleted:
            pass
        self.deleted.add(row_id)
        cur.execute(self.DELETE, (row_id,))
        return int(cur.rowcount)


def burst(work: Workload, plan: Iterable[tuple[str, int]], commit_every: int, marker: str) -> dict[str, Any]:
    """Run ``plan`` ((operation, count), ...) one statement per execute, committing every ``commit_every``
    statements; then the marker update in its own transaction."""
    conn = mysql(DB)
    conn.autocommit(False)
    events = statements = 0
    per_op: dict[str, int] = {}
    try:
        start = master_position(conn)
        t0 = time.monotonic()
        with conn.cursor() as cur:
            for op, count in plan:
                run = getattr(work, op)
                done = 0
                for _ in range(count):
                    done += run(cur)
                    statements += 1
                    if statements % commit_every == 0:
                        conn.commit()
                    if statements % 50_000 == 0:
                        say(f"  {statements:,} statements ({statements / (time.monotonic() - t0):,.0f}/s)")
                conn.commit()
                per_op[op] = done
                events += done
            cur.execute("UPDATE orders SET note = %s WHERE id = %s", (marker, MARKER_ID))
            events += cur.rowcount
            conn.commit()
        seconds = time.monotonic() - t0
        end = master_position(conn)
    finally:
        conn.close()
    return {
        "statements": statements + 1,
        "events": events,
        "row_events_by_operation": per_op,
        "source_seconds": round(seconds, 2),
        "source_statements_per_s": round((statements + 1) / seconds),
        "start": start,
        "end": end,
    }


# --------------------------------------------------------------------------- 2. snapshot
def wait_snapshot(warp: Warp, expected: int) -> dict[str, Any]:
    cpu = CpuWindow(warp.pid)
    rss = RssSampler(warp.pid).start()
    store = warp.store()
    deadline = warp.started + max(900.0, expected / 500)
    try:
        while time.monotonic() < deadline:
            prog = store.snapshot_progress(DB)
            now = time.monotonic()
            if len(prog) == len(TABLES) and all(p.status == "done" for p in prog.values()):
                copied = sum(p.rows_copied for p in prog.values())
                seconds = now - warp.started
                out = {
                    "rows": copied,
                    "rows_by_table": {t: p.rows_copied for t, p in prog.items()},
                    "seconds_from_start": round(seconds, 2),
                    "rows_per_s": round(copied / seconds),
                } | cpu.stop()
                out["cpu_s_per_million_rows"] = round(out["warp_cpu_s"] * 1e6 / max(1, copied), 2)
                rss.stop()
                out["rss_peak_mib"] = round(rss.peak() or 0, 1)
                if copied != expected:
                    raise BenchError(f"the snapshot copied {copied} rows, expected {expected}")
                return out
            warp.check_alive()
            time.sleep(STATE_POLL)
    finally:
        rss.stop()
    raise BenchError("timed out waiting for the snapshot:\n" + warp.log_tail())


# --------------------------------------------------------------------------- 3. catch-up
def catch_up(warp: Warp, b: dict[str, Any], marker: str, profiler: Profiler) -> dict[str, Any]:
    """Restart cartridge-warp on its state directory; time it until the whole burst is applied (marker
    visible and the checkpoint past the burst)."""
    resumed_from = warp.store().checkpoint(DB)
    started = warp.start()
    cpu = CpuWindow(warp.pid)
    rss = RssSampler(warp.pid).start()
    try:
        if profiler.out_dir:
            time.sleep(0.5)  # py-spy attaches to an initialised interpreter only
            profiler.start(warp.pid, "catch_up")
        streaming_at = warp.wait_log("streaming changes from", occurrence=2)
        visible, ckpt = wait_applied(warp, DB, "orders", "note", MARKER_ID, marker, b["end"])
        used = cpu.stop()
    finally:
        rss.stop()
    events = b["events"]
    # Everything is applied once the checkpoint covers the burst: it is stored only after every apply
    # worker committed, while the marker's worker may commit before another worker's rows.
    done = max(visible, ckpt)
    seconds = done - started
    out = {
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds),
        "startup_seconds": round(streaming_at - started, 2),
        "events_per_s_after_startup": round(events / max(1e-6, done - streaming_at)),
        "marker_seconds": round(visible - started, 2),
        "checkpoint_seconds": round(ckpt - started, 2),
        "cpu_ms_per_1000_events": round(used["warp_cpu_s"] * 1e6 / events, 1),
        "rss_start_mib": round(rss.at(streaming_at) or 0, 1),
        "rss_peak_mib": round(rss.peak() or 0, 1),
        "rss_end_mib": round(rss.at(ckpt) or rss.samples[-1][1], 1),
        "resumed_from": resumed_from,
        "checkpoint": warp.store().checkpoint(DB),
    } | used
    return out


# --------------------------------------------------------------------------- 5. live
def live(
    warp: Warp, work: Workload, mix: list[tuple[str, int]], rate: float, seconds: float
) -> dict[str, Any]:
    """Offer ``rate`` row events/s for ``seconds`` while probing commit -> visible latency."""
    probes: dict[int, float] = {}  # n -> when its commit returned
    seen: dict[int, float] = {}  # n -> when the poller first read it from PostgreSQL
    stats: dict[str, Any] = {}
    errors: list[BaseException] = []
    stop_polling = threading.Event()
    ops = [op for op, _ in mix]
    weights = [w for _, w in mix]

    def writer() -> None:
        conn = mysql(DB)
        conn.autocommit(False)
        probe_conn = mysql(DB)
        events = statements = 0
        try:
            with conn.cursor() as cur, probe_conn.cursor() as probe_cur:
                t0 = time.monotonic()
                next_probe = t0
                while (now := time.monotonic()) < t0 + seconds:
                    if now >= next_probe:
                        n = len(probes) + 1
                        probe_cur.execute(
                            "UPDATE orders SET note = %s WHERE id = %s", (f"probe-{n}", PROBE_ID)
                        )
                        probes[n] = time.monotonic()
                        next_probe += PROBE_EVERY
                        continue
                    due = t0 + statements / rate
                    if now < due:
                        time.sleep(min(due, next_probe) - now)
                        continue
                    for op in work.rng.choices(ops, weights, k=LIVE_COMMIT_EVERY):
                        events += getattr(work, op)(cur)
                        statements += 1
                    conn.commit()
                stats.update(
                    events=events,
                    statements=statements,
                    seconds=round(time.monotonic() - t0, 2),
                    probes=len(probes),
                )
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
        finally:
            conn.close()
            probe_conn.close()

    def poller() -> None:
        conn = pg()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not stop_polling.is_set():
                    cur.execute(f"SELECT note FROM {DB}.orders WHERE id = %s", (PROBE_ID,))  # noqa: S608
                    now = time.monotonic()
                    row = cur.fetchone()
                    if row and row[0] and row[0].startswith("probe-"):
                        seen.setdefault(int(row[0][6:]), now)
                    time.sleep(PROBE_POLL)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
        finally:
            conn.close()

    cpu = CpuWindow(warp.pid)
    threads = [
        threading.Thread(target=writer, name="live-writer"),
        threading.Thread(target=poller, name="poller"),
    ]
    for t in threads:
        t.start()
    threads[0].join()
    used = cpu.stop()
    deadline = time.monotonic() + 120
    while not errors and probes and max(seen, default=0) < max(probes) and time.monotonic() < deadline:
        warp.check_alive()
        time.sleep(0.05)
    stop_polling.set()
    threads[1].join()
    if errors:
        raise BenchError(f"the live phase failed: {errors[0]!r}")
    if not probes or max(seen, default=0) < max(probes):
        raise BenchError(f"the last probe did not arrive within 120 s:\n{warp.log_tail()}")
    # a probe is visible once it or a later one has been read: the later commit came after it
    lags = []
    first_later = float("inf")
    for n in sorted(probes, reverse=True):
        first_later = min(first_later, seen.get(n, float("inf")))
        lags.append(1000.0 * (first_later - probes[n]))
    lags.sort()
    offered = stats["events"] / stats["seconds"]
    return {
        "target_events_per_s": rate,
        "offered_events_per_s": round(offered),
        "events": stats["events"],
        "statements": stats["statements"],
        "seconds": stats["seconds"],
        "probes": stats["probes"],
        "probes_seen_directly": len(seen),
        "lag_ms_p50": round(statistics.median(lags), 1),
        "lag_ms_p99": round(lags[min(len(lags) - 1, int(0.99 * len(lags)))], 1),
        "lag_ms_max": round(lags[-1], 1),
        "warp_cpu_pct_of_one_core": round(100.0 * used["warp_cpu_s"] / stats["seconds"], 1),
        "cpu_ms_per_1000_events": round(
            used["warp_cpu_s"] * 1e6 / max(1, stats["events"] + stats["probes"]), 1
        ),
    } | used


# --------------------------------------------------------------------------- 6. verify
def _digest(rows: Iterable[tuple[Any, ...]]) -> dict[str, int]:
    """Count and sum of 64-bit MD5 prefixes of id|status|quantity|price|note|payload (sorted-key JSON)."""
    count = total = 0
    for row_id, status, quantity, price, note, payload in rows:
        doc = json.loads(payload) if isinstance(payload, str | bytes) else payload
        text = "|".join(
            (
                str(row_id),
                status,
                str(quantity),
                str(price),
                "\\N" if note is None else note,
                json.dumps(doc, sort_keys=True, separators=(",", ":")),
            )
        )
        total = (total + int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big")) % 2**64
        count += 1
    return {"rows": count, "checksum": total}


def _batches(cur: Any, size: int = 20_000) -> Iterable[tuple[Any, ...]]:
    while batch := cur.fetchmany(size):
        yield from batch


def verify() -> dict[str, Any]:
    columns = "id, status, quantity, price, note, payload"
    conn = mysql(DB, cursorclass=pymysql.cursors.SSCursor)
    try:
        with conn.cursor(pymysql.cursors.Cursor) as cur:  # buffered: one-row answers
            counts_src = {}
            for t in ("users", "products"):
                cur.execute(f"SELECT COUNT(*) FROM {t}")  # noqa: S608 - constants
                counts_src[t] = int(cur.fetchone()[0])
        with conn.cursor() as cur:
            cur.execute(f"SELECT {columns} FROM orders")  # noqa: S608 - constants
            src = _digest(_batches(cur))
    finally:
        conn.close()
    conn = pg()
    try:
        counts_dst = {}
        with conn.cursor() as cur:
            for t in ("users", "products"):
                cur.execute(f"SELECT count(*) FROM {DB}.{t}")  # noqa: S608 - constants
                counts_dst[t] = int(cur.fetchone()[0])
        with conn.cursor(name="verify") as cur:
            cur.itersize = 20_000
            cur.execute(f"SELECT {columns} FROM {DB}.orders")  # noqa: S608 - constants
            dst = _digest(cur)
        conn.rollback()
    finally:
        conn.close()
    source = {"orders": src, "counts": counts_src}
    dest = {"orders": dst, "counts": counts_dst}
    return {"equal": source == dest, "source": source, "destination": dest, "columns": columns}


# --------------------------------------------------------------------------- report
def report(fig: dict[str, Any]) -> str:
    snap, cu, lp = fig["snapshot"], fig["catch_up"], fig["library_parse"]
    b = fig["burst"]
    rows: list[tuple[str, str, str]] = []

    def add(label: str, value: str, note: str = "") -> None:
        rows.append((label, value, note))

    s = fig["sizes"]
    add(
        "orders / users / products",
        f"{s['orders']:,} / {s['users']:,} / {s['products']:,}",
        f"burst: {s['updates']:,} updates, {s['inserts']:,} inserts, {s['deletes']:,} deletes, "
        f"commit every {s['commit_every']}",
    )
    add(
        "snapshot (process start -> 3 tables done)",
        f"{snap['rows_per_s']:,} rows/s",
        f"{snap['rows']:,} rows in {snap['seconds_from_start']}s; warp CPU {snap['warp_cpu_s']}s "
        f"({snap['cpu_s_per_million_rows']}s per million rows); RSS peak {snap['rss_peak_mib']} MiB; machine "
        f"{snap['machine_busy_pct']}% busy",
    )
    add(
        "burst written by the source (not measured)",
        f"{b['source_statements_per_s']:,} stmt/s",
        f"{b['statements']:,} statements, {b['events']:,} row events in {b['source_seconds']}s; binlog "
        f"{b['start'][0]}:{b['start'][1]} .. {b['end'][0]}:{b['end'][1]}",
    )
    add(
        "catch-up (process start -> all applied)",
        f"{cu['events_per_s']:,} events/s",
        f"{cu['events']:,} row events in {cu['seconds']}s; {cu['events_per_s_after_startup']:,} events/s after "
        f"the 'streaming' line ({cu['startup_seconds']}s start-up); machine {cu['machine_busy_pct']}% busy",
    )
    add(
        "  warp CPU",
        f"{cu['warp_cpu_s']} s",
        f"{cu['cpu_ms_per_1000_events']} ms per 1,000 row events (start-up included)",
    )
    add(
        "  warp RSS start / peak / end",
        f"{cu['rss_start_mib']} / {cu['rss_peak_mib']} / {cu['rss_end_mib']} MiB",
        "at the 'streaming' line / max of 0.5 s samples / checkpoint caught up",
    )
    ck = cu.get("checkpoint") or {}
    add(
        "  checkpoint reached",
        f"{ck.get('file', '?')}:{ck.get('pos', '?')}",
        f"after {cu['checkpoint_seconds']}s (marker visible after {cu['marker_seconds']}s); resumed from "
        f"{(cu.get('resumed_from') or {}).get('file', '?')}:{(cu.get('resumed_from') or {}).get('pos', '?')}",
    )
    add(
        "library parse, rows decoded",
        f"{lp['events_per_s']:,} rows/s",
        f"{lp['events']:,} rows in {lp['seconds']}s, client CPU {lp['client_cpu_s']}s "
        f"({round(lp['client_cpu_s'] * 1e6 / max(1, lp['events']), 1)} ms per 1,000)",
    )
    add(
        "  catch-up / library parse",
        ratio(cu["events_per_s"], lp["events_per_s"]),
        f"aim >= {AIM_CATCH_UP_VS_PARSE}x",
    )
    if fig.get("library_parse_undecoded"):
        lu = fig["library_parse_undecoded"]
        add(
            "library read, rows not decoded",
            f"{lu['events_per_s']:,} events/s",
            f"{lu['events']:,} binlog row events in {lu['seconds']}s, client CPU {lu['client_cpu_s']}s",
        )
    if fig.get("live"):
        lv = fig["live"]
        add(
            "live: offered rate",
            f"{lv['offered_events_per_s']:,} events/s",
            f"target {lv['target_events_per_s']:,.0f}; {lv['events']:,} row events + {lv['probes']} probes in "
            f"{lv['seconds']}s",
        )
        add(
            "live: lag commit -> visible p50 / p99 / max",
            f"{lv['lag_ms_p50']:,.0f} / {lv['lag_ms_p99']:,.0f} / {lv['lag_ms_max']:,.0f} ms",
            f"{lv['probes']} probes every {int(PROBE_EVERY * 1000)} ms, read every {int(PROBE_POLL * 1000)} ms",
        )
        add(
            "live: warp CPU",
            f"{lv['warp_cpu_pct_of_one_core']}% of a core",
            f"{lv['cpu_ms_per_1000_events']} ms per 1,000 row events; machine {lv['machine_busy_pct']}% busy",
        )
    v = fig["verify"]
    add(
        "verification",
        "OK" if v["equal"] else "MISMATCH",
        f"orders {v['source']['orders']['rows']:,} rows, checksum {v['source']['orders']['checksum']} vs "
        f"{v['destination']['orders']['rows']:,} / {v['destination']['orders']['checksum']}; users, products "
        f"counts {v['source']['counts']} vs {v['destination']['counts']}",
    )
    lines = machine_header("cartridge-warp benchmark: MariaDB -> PostgreSQL, OLTP shape", fig)
    lines += report_tail(fig, rows)
    lines += profile_lines(fig)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--orders", type=int, default=1_000_000, help="orders rows (default 1,000,000)")
    p.add_argument("--users", type=int, default=100_000, help="users rows (default 100,000)")
    p.add_argument("--products", type=int, default=10_000, help="products rows (default 10,000)")
    p.add_argument("--updates", type=int, default=200_000, help="single-row updates in the burst (200,000)")
    p.add_argument("--inserts", type=int, default=50_000, help="single-row inserts in the burst (50,000)")
    p.add_argument("--deletes", type=int, default=20_000, help="single-row deletes in the burst (20,000)")
    p.add_argument("--commit-every", type=int, default=100, help="statements per burst commit (100)")
    p.add_argument("--live-rate", type=float, default=2_000, help="row events/s offered live (2,000)")
    p.add_argument("--live-seconds", type=float, default=60, help="length of the live phase (60; 0 skips it)")
    p.add_argument(
        "--parse-only",
        action="store_true",
        help="also read the burst's binlog range with the library without decoding rows (protocol floor)",
    )
    p.add_argument("--keep", action="store_true", help=f"keep {DB} on both sides and the state directory")
    p.add_argument("--profile", metavar="DIR", help="sample the catch-up with py-spy; raw stacks go to DIR")
    add_output_options(p, quiet_wait=120.0)
    args = p.parse_args(argv)
    if args.orders < args.deletes + 10 or min(args.users, args.products, args.commit_every) < 1:
        p.error("--orders must exceed --deletes by 10 or more; --users, --products, --commit-every >= 1")
    if min(args.updates, args.inserts, args.deletes) < 0 or args.live_rate <= 0:
        p.error("--updates, --inserts and --deletes must be >= 0, --live-rate > 0")

    try:
        profiler = Profiler(args.profile)
    except BenchError as exc:
        p.error(str(exc))

    sizes = {"users": args.users, "products": args.products, "orders": args.orders}
    fig: dict[str, Any] = {
        "sizes": sizes
        | {
            "updates": args.updates,
            "inserts": args.inserts,
            "deletes": args.deletes,
            "commit_every": args.commit_every,
        },
        "aims": {"catch_up_vs_library_parse": AIM_CATCH_UP_VS_PARSE},
    }
    fig["machine"] = machine()
    fig["load"] = wait_for_quiet(args.quiet_wait)
    fig["warpd"] = warpd_revision()
    if args.profile:
        fig["profile_mode"] = "the thread holding the GIL: on-CPU Python time"
    state_dir = tempfile.mkdtemp(prefix="warp-bench-oltp-state-")
    warp = Warp(
        state_dir,
        os.path.join(state_dir, "warpd.log"),
        ["--source", SOURCE_URI, "--destination", PG_DSN, "--schema", DB],
    )
    work = Workload(args.orders, args.users, args.products)
    ok = False
    try:
        fig["source"] = create_source(sizes)
        reset_destination()
        say(f"snapshot: starting cartridge-warp (state {state_dir}, log {warp.log_path})")
        warp.start()
        fig["snapshot"] = wait_snapshot(warp, sum(sizes.values()))
        say(
            f"  {fig['snapshot']['rows_per_s']:,} rows/s from process start ({fig['snapshot']['seconds_from_start']}s)"
        )
        warp.wait_log("streaming changes from")

        say("catch-up: stopping cartridge-warp (SIGTERM), committing the burst, restarting it")
        rc = warp.stop()
        if rc != 0:
            raise BenchError(f"cartridge-warp exited with {rc} on SIGTERM:\n{warp.log_tail()}")
        marker = f"marker-{uuid.uuid4().hex[:16]}"
        plan = [("update", args.updates), ("insert", args.inserts), ("delete", args.deletes)]
        b = burst(work, plan, args.commit_every, marker)
        fig["burst"] = b
        say(f"  {b['events']:,} row events written in {b['source_seconds']}s")
        pg_superuser_checkpoint()
        fig["catch_up"] = cu = catch_up(warp, b, marker, profiler)
        if path := profiler.stop():
            fig.setdefault("profile", {})["catch-up"] = analyse_profile(path, STAGES)
        say(
            f"  {cu['events_per_s']:,} row events/s from process start; CPU {cu['warp_cpu_s']}s "
            f"({cu['cpu_ms_per_1000_events']} ms per 1,000 events)"
        )

        fig["library_parse"] = raw_parse(tuple(b["start"]), tuple(b["end"]), DB, b["events"])
        if args.parse_only:
            fig["library_parse_undecoded"] = raw_parse(tuple(b["start"]), tuple(b["end"]), DB, decode=False)

        if args.live_seconds > 0:
            say(
                f"live: offering {args.live_rate:,.0f} row events/s for {args.live_seconds:.0f}s, probing the lag"
            )
            mix = [(op, n) for op, n in plan if n > 0] or [("update", 1)]
            fig["live"] = lv = live(warp, work, mix, args.live_rate, args.live_seconds)
            say(
                f"  offered {lv['offered_events_per_s']:,} events/s; lag p50 {lv['lag_ms_p50']:.0f} ms, "
                f"p99 {lv['lag_ms_p99']:.0f} ms, max {lv['lag_ms_max']:.0f} ms"
            )
            conn = mysql(DB)
            marker = f"marker-{uuid.uuid4().hex[:16]}"
            with conn.cursor() as cur:
                cur.execute("UPDATE orders SET note = %s WHERE id = %s", (marker, MARKER_ID))
            end = master_position(conn)
            conn.close()
            wait_applied(warp, DB, "orders", "note", MARKER_ID, marker, end)

        say("verifying: row counts and an orders checksum on both sides")
        fig["verify"] = verify()
        ok = fig["verify"]["equal"]
        if not ok:
            say(f"VERIFICATION FAILED: {fig['verify']}")
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
