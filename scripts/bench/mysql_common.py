"""What the MariaDB -> PostgreSQL benchmarks share: connections, binlog positions, the machine's database
settings, the pymysqlreplication-alone parse reference, waiting for a marker row and the profile stages.

``mysql_to_postgres.py`` and ``oltp_mysql_to_postgres.py`` import it as ``mysql_common``; it imports
``common`` first, which puts this checkout's ``warpd/`` first on ``sys.path``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import pymysql
import pymysql.cursors
from common import BenchError, CpuWindow, Warp, host_facts, package_version, rate, say
from pg_common import pg, pg_facts

MYSQL_ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "charset": "utf8mb4"}
MARKER_POLL = 0.02  # seconds between destination polls (streaming)
STATE_POLL = 0.2  # seconds between state-file polls (snapshot)


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


# --------------------------------------------------------------------------- the machine
def machine() -> dict[str, Any]:
    """host_facts() plus both servers' versions and the settings that move the figures."""
    conn = mysql()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT VERSION(), @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit, "
            "@@sync_binlog, @@binlog_format, @@binlog_row_image"
        )
        mv, pool, flush, sync_binlog, fmt, image = cur.fetchone()
    conn.close()
    version = package_version
    return {
        **host_facts(),
        **pg_facts(),
        "mariadb": str(mv),
        "mariadb_settings": f"innodb_buffer_pool_size={int(pool) // 2**20}M, "
        f"innodb_flush_log_at_trx_commit={flush}, sync_binlog={sync_binlog}, "
        f"binlog_format={fmt}, binlog_row_image={image}",
        "drivers": f"PyMySQL {version('PyMySQL')}, psycopg2 {version('psycopg2-binary')}, "
        f"mysql-replication {version('mysql-replication')}",
    }


def machine_header(title: str, fig: dict[str, Any]) -> list[str]:
    """The first lines of a report: what ran, on what, measuring which commit."""
    m = fig["machine"]
    return [
        f"{title} ({time.strftime('%Y-%m-%d %H:%M')})",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, kernel {m['kernel']}",
        f"         MariaDB {m['mariadb']}; PostgreSQL {m['postgresql']}; Python {m['python']}",
        f"         {m['drivers']}",
        f"         MariaDB: {m['mariadb_settings']}",
        f"         PostgreSQL: {m['postgresql_settings']}",
        f"cartridge-warp: {fig.get('warpd', '?')}",
    ]


# --------------------------------------------------------------------------- the library parse reference
def raw_parse(
    start: tuple[str, int],
    end: tuple[str, int],
    database: str,
    expected: int | None = None,
    decode: bool = True,
    server_id: int = 4_242_002,
) -> dict[str, Any]:
    """pymysqlreplication alone over a binlog range: row events of ``database`` parsed per second.

    Reader settings as cartridge-warp's BinlogReader (warpd/connectors/mysql/binlog.py): resume_stream,
    only_schemas, the same only_events classes (less the compressed-event classes of warpd's library
    fixes, which are not applied here: this is the library as shipped), non-implemented events kept,
    except blocking=False so the stream ends.  ``decode``: read ``ev.rows``, which makes the library
    decode the row images, and count rows; without it only the events are read (the table map and the
    event header are parsed, the row images not) and row *events* are counted: the protocol floor.
    """
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import (
        ExecuteLoadQueryEvent,
        HeartbeatLogEvent,
        MariadbGtidEvent,
        NotImplementedEvent,
        QueryEvent,
        RotateEvent,
        XAPrepareEvent,
        XidEvent,
    )
    from pymysqlreplication.row_event import (
        DeleteRowsEvent,
        PartialUpdateRowsEvent,
        UpdateRowsEvent,
        WriteRowsEvent,
    )

    row_classes = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, PartialUpdateRowsEvent)
    what = "decoding rows" if decode else "rows not decoded"
    say(
        f"library parse ({what}): binlog range {start[0]}:{start[1]} .. {end[0]}:{end[1]} "
        "with pymysqlreplication alone"
    )
    settings = {k: MYSQL_ROOT[k] for k in ("host", "port", "user")} | {"passwd": "", "connect_timeout": 10}
    rows = row_events = 0
    cpu = CpuWindow(os.getpid())
    t0 = time.monotonic()
    stream = BinLogStreamReader(
        connection_settings=settings,
        server_id=server_id,
        resume_stream=True,
        log_file=start[0],
        log_pos=start[1],
        blocking=False,
        only_events=[
            *row_classes,
            QueryEvent,
            ExecuteLoadQueryEvent,
            XidEvent,
            XAPrepareEvent,
            MariadbGtidEvent,
            RotateEvent,
            HeartbeatLogEvent,
            NotImplementedEvent,
        ],
        filter_non_implemented_events=False,
        enable_logging=False,
        only_schemas=[database],
    )
    try:
        for ev in stream:
            if isinstance(ev, row_classes) and ev.schema == database:
                row_events += 1
                if decode:
                    rows += len(ev.rows)
            if (stream.log_file, stream.log_pos) >= end:
                break
    finally:
        stream.close()
    seconds = time.monotonic() - t0
    used = cpu.stop()
    counted = rows if decode else row_events
    if decode and expected is not None and rows != expected:
        say(f"  (parsed {rows} row events, expected {expected})")
    say(f"  {counted / seconds:,.0f} {'rows' if decode else 'row events'}/s ({seconds:.2f}s)")
    return {
        "decoded": decode,
        "events": counted,  # rows when decoded, else binlog row events
        "binlog_row_events": row_events,
        "seconds": round(seconds, 3),
        "events_per_s": round(counted / seconds),
        "machine_busy_pct": used["machine_busy_pct"],
        "client_cpu_s": used["warp_cpu_s"],
        "library_fixes_applied": "warpd.connectors.mysql.libfixes" in sys.modules,
    }


# --------------------------------------------------------------------------- the source read reference
def raw_read(
    db: str,
    table: str,
    rows: int | None,
    label: str = "raw (b)",
    where: str = "",
    args: tuple[Any, ...] = (),
    what: str = "the whole table",
) -> dict[str, Any]:
    """``SELECT *`` of ``table`` through PyMySQL's unbuffered SSCursor, rows converted to Python; ``where``
    (with its ``args``) selects and orders the rows, all of them by default.  ``rows``: the count expected,
    when known."""
    say(f"{label}: reading {what} with PyMySQL SSCursor, typed values")
    conn = mysql(db, cursorclass=pymysql.cursors.SSCursor)
    count = 0
    try:
        cpu = CpuWindow(os.getpid())
        t0 = time.monotonic()
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM `{table}` {where}", args)  # noqa: S608 - the benchmark's own SQL
            while batch := cur.fetchmany(10_000):
                count += len(batch)
        seconds = time.monotonic() - t0
        used = cpu.stop()
    finally:
        conn.close()
    if rows is not None and count != rows:
        raise BenchError(f"PyMySQL read {count} rows, expected {rows}")
    say(f"  {count / seconds:,.0f} rows/s ({seconds:.2f}s, {count:,} rows)")
    return rate(count, seconds, machine_busy_pct=used["machine_busy_pct"], client_cpu_s=used["warp_cpu_s"])


def copy_text_expr(col: Any) -> str:
    """A MariaDB expression rendering ``col`` as a COPY text-format field (\\N for NULL, escaped)."""
    name = f"`{col.name}`"
    value = f"CAST({name} AS CHAR)"
    if col.type.kind.value in ("text", "json"):
        for raw, esc in (
            ("CHAR(92)", "CONCAT(CHAR(92), CHAR(92))"),
            ("CHAR(9)", "CONCAT(CHAR(92), 't')"),
            ("CHAR(10)", "CONCAT(CHAR(92), 'n')"),
            ("CHAR(13)", "CONCAT(CHAR(92), 'r')"),
        ):
            value = f"REPLACE({value}, {raw}, {esc})"
    return f"COALESCE({value}, CONCAT(CHAR(92), 'N'))"


# --------------------------------------------------------------------------- waiting for the snapshot
def wait_snapshot(warp: Warp, schema: str, table: str, rows: int) -> dict[str, Any]:
    """Poll the state file until ``schema.table``'s snapshot is done; rates from process start and
    from the first 'running' mark, the rate cartridge-warp logs, and its CPU time."""
    cpu = CpuWindow(warp.pid)
    store = warp.store()
    running_seen = None
    deadline = warp.started + max(900.0, rows / 500)
    while time.monotonic() < deadline:
        prog = store.snapshot_progress(schema).get(table)
        now = time.monotonic()
        if prog is not None and prog.status == "running" and running_seen is None:
            running_seen = now
        if prog is not None and prog.status == "done":
            total = now - warp.started
            copy = now - running_seen if running_seen else None
            out = {
                "rows": prog.rows_copied,
                "seconds_from_start": round(total, 2),
                "rows_per_s": round(prog.rows_copied / total),
                "copy_seconds": round(copy, 2) if copy else None,
                "copy_rows_per_s": round(prog.rows_copied / copy) if copy else None,
            }
            m = re.search(
                r"snapshot \S+: done, ([\d,]+) rows \(([\d,]+) in \S+, ([\d,]+) rows/s\)", warp.log_text()
            )
            out["warp_reported_rows_per_s"] = int(m.group(3).replace(",", "")) if m else None
            out |= cpu.stop()
            out["cpu_s_per_million_rows"] = round(out["warp_cpu_s"] * 1e6 / prog.rows_copied, 2)
            if prog.rows_copied != rows:
                raise BenchError(f"the snapshot copied {prog.rows_copied} rows, expected {rows}")
            return out
        warp.check_alive()
        time.sleep(STATE_POLL)
    raise BenchError("timed out waiting for the snapshot:\n" + warp.log_tail())


# --------------------------------------------------------------------------- waiting for a change
def wait_visible(
    warp: Warp,
    schema: str,
    visible_now: Callable[[], bool],
    end: tuple[str, int],
    timeout: float = 900.0,
    poll: float = MARKER_POLL,
) -> tuple[float, float]:
    """Poll ``visible_now()`` (the destination holds the change) until it is true and the state file
    until the stored checkpoint of ``schema`` reaches ``end``; return both times (time.monotonic())."""
    store = warp.store()
    visible = ckpt = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        if visible is None and visible_now():
            visible = now
        if ckpt is None:
            pos = store.checkpoint(schema)
            if pos and (str(pos["file"]), int(pos["pos"])) >= end:
                ckpt = now
        if visible is not None and ckpt is not None:
            return visible, ckpt
        warp.check_alive()
        time.sleep(poll)
    raise BenchError(
        f"timed out waiting for the changes to arrive (seen at the destination: {visible is not None}, "
        f"checkpoint caught up: {ckpt is not None}):\n{warp.log_tail()}"
    )


def wait_applied(
    warp: Warp,
    schema: str,
    table: str,
    column: str,
    row_id: int,
    marker: str,
    end: tuple[str, int],
    timeout: float = 900.0,
) -> tuple[float, float]:
    """Poll PostgreSQL until ``schema.table.column`` of row ``row_id`` holds ``marker`` and the state file
    until the stored checkpoint reaches ``end``; return both times (time.monotonic())."""
    from psycopg2 import sql

    query = sql.SQL("SELECT {} FROM {}.{} WHERE id = %s").format(
        sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table)
    )
    conn = pg()
    conn.autocommit = True

    def seen() -> bool:
        with conn.cursor() as cur:
            cur.execute(query, (row_id,))
            row = cur.fetchone()
        return bool(row and row[0] == marker)

    try:
        return wait_visible(warp, schema, seen, end, timeout)
    finally:
        conn.close()


# --------------------------------------------------------------------------- profile stages
# Pipeline stages, first match wins: a sample belongs to the first stage one of whose markers appears in
# its stack (markers are substrings of "file:function").
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("binlog decoding (pymysqlreplication)", ("pymysqlreplication/",)),
    ("source read (PyMySQL)", ("pymysql/",)),
    ("state file (SQLite)", ("warpd/state/",)),
    (
        "COPY / merge round trips (psycopg2)",
        ("destination.py:PostgresDestination.write", "destination.py:PostgresDestination._transaction"),
    ),
    (
        "COPY text encoding / line assembly",
        (
            "destination.py:PostgresDestination.encode_line",
            "destination.py:TablePlan.encode",
            "types.py:copy_encoder",
            "applier.py:TableApplier.copy_snapshot",
            "applier.py:TableApplier._encode",
        ),
    ),
    (
        "binlog value conversion (warpd)",
        ("binlog.py:BinlogReader._rows", "binlog.py:BinlogReader._convert", "mysql/types.py:binlog_image"),
    ),
    ("snapshot chunk rows (warpd)", ("source.py:MySQLSource.snapshot",)),
    (
        "batching, compaction, dispatch",
        (
            "runner.py:SchemaRunner._handle",
            "batch.py:compact",
            "runner.py:SchemaRunner._flush",
            "applier.py:TableApplier.apply",
            "applier.py:TableApplier._write",
        ),
    ),
    ("binlog reader loop", ("binlog.py:BinlogReader.events",)),
    ("threads, queues, logging", ("concurrent/futures/", "queue.py:", "threading.py:", "logging/")),
)


def profile_lines(fig: dict[str, Any]) -> list[str]:
    """The report's profile sections, one per profiled phase."""
    lines: list[str] = []
    for phase, prof in fig.get("profile", {}).items():
        lines += [
            "",
            f"profile of the {phase} ({prof['samples']:,} py-spy samples, {fig.get('profile_mode')})",
            "  threads: " + ", ".join(f"{t} {s}%" for t, s in prof["threads"]),
            "  stages:",
        ]
        lines += [f"    {s:5.1f}%  {k}" for k, s in prof["stages"]]
        lines += ["  self time (file:function):"]
        lines += [f"    {s:5.1f}%  {k}" for k, s in prof["self"]]
        lines += ["  inclusive, warpd functions:"]
        lines += [f"    {s:5.1f}%  {k}" for k, s in prof["inclusive_warpd"]]
    return lines
