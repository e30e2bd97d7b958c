"""What the ``mode: batch`` benchmarks into PostgreSQL share: the run itself (a full refresh, an incremental
first run, rows changed, a second run asked for as ``warpctl sync`` does), the raw limits around it, the
verification and the report, with each source's own part behind :class:`BatchSource`.

``batch_mysql_to_postgres.py`` and ``batch_bigquery_to_postgres.py`` import it as ``batch_common``; it
imports ``common`` first, which puts this checkout's ``warpd/`` first on ``sys.path``.

The run, for every source: the table ``items`` (``id`` key, ``quantity``, the cursor ``updated_at``, whose
loaded values lie in the past) is loaded; its raw limits are measured; one ``python -m warpd --mode
single`` process runs a full refresh (``schedule: {every: 1d}``: one run, at start-up) into one schema,
another an incremental first run by ``updated_at`` into another; ``--changed`` rows are changed, which
moves their cursor, and a second run of the incremental process is asked for through a ``sync`` request in
the state file; the raw limits of the rows it reads (``updated_at >=`` the first run's mark minus the
1-minute safety lag) are measured; count, ``sum(quantity)`` and ``max(updated_at)`` are compared on both
sides.  Every warp figure is printed with its ratio to the raw read, the raw COPY and both in series
(1 / (1/read + 1/COPY)).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from typing import Any, Protocol

import psycopg2
from common import (
    BenchError,
    CpuWindow,
    Warp,
    add_output_options,
    ratio,
    report_tail,
    say,
    wait_for_quiet,
    warpd_revision,
)
from pg_common import PG_DSN, pg, pg_superuser_checkpoint
from psycopg2 import sql

TABLE = "items"
SAFETY_LAG = dt.timedelta(
    seconds=60
)  # the default safety_lag of a date/time cursor (warpd/engine/batch_mode.py)
STATE_POLL = 0.1


class BatchSource(Protocol):
    """One source system's part of a batch benchmark; ``name`` is its database or dataset, which is also
    cartridge-warp's schema name."""

    name: str
    connection_string: str
    read_label: str  # the raw read, as the report names it: "PyMySQL SSCursor read, typed", ...
    errors: tuple[type[BaseException], ...]  # the source driver's errors, reported as a failed run

    def machine(self) -> dict[str, Any]: ...

    def header(self, fig: dict[str, Any]) -> list[str]: ...

    def load(self, rows: int) -> dict[str, Any]: ...

    def raw_limits(self, raw_schema: str, floor: Any | None, label: str) -> dict[str, Any]:
        """``read`` (and optionally ``read_encoded``) and ``copy`` of the rows whose ``updated_at`` is at
        or after ``floor`` (all rows when None), in the order a run reads them."""
        ...

    def change(self, rows: int, changed: int) -> dict[str, Any]: ...

    def max_cursor(self) -> Any: ...

    def checksum(self) -> tuple[int, int, str]: ...

    def drop(self) -> None: ...


def add_arguments(p: argparse.ArgumentParser, default_rows: int) -> None:
    p.add_argument(
        "--rows", type=int, default=default_rows, help=f"rows in the table (default {default_rows:,})"
    )
    p.add_argument(
        "--changed", type=int, default=0, help="rows changed before the second run (default: 10%% of --rows)"
    )
    p.add_argument("--skip-raw", action="store_true", help="do not measure the raw limits")
    p.add_argument("--keep", action="store_true", help="keep the databases, schemas and state directories")
    add_output_options(p, quiet_wait=60.0)


def changed_rows(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--changed`` (default 10 % of ``--rows``), checked against ``--rows``."""
    changed = args.changed or max(1, args.rows // 10)
    if args.rows < 10 or not 1 <= changed <= args.rows:
        p.error("--rows must be >= 10 and --changed between 1 and --rows")
    return int(changed)


# --------------------------------------------------------------------------- cartridge-warp
def write_config(
    path: str, source: BatchSource, dest_schema: str, incremental: bool, extra: dict[str, Any]
) -> None:
    schema: dict[str, Any] = {
        "name": source.name,
        "destination_schema": dest_schema,
        "mode": "batch",
        "schedule": {"every": "1d"},  # one run at start-up; later runs only when asked for
        "sync": "full_refresh",
    }
    if incremental:
        schema["tables"] = [{"name": TABLE, "cursor_column": "updated_at"}]
    config = {
        "source": {"connection_string": source.connection_string},
        "destination": {"connection_string": PG_DSN},
        "schemas": [schema],
        **extra,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f)


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


def second_run(warp: Warp, schema: str, after: float, rows: int) -> dict[str, Any]:
    """Ask for a run as ``warpctl sync`` does (a request in the state file) and time it."""
    say("incremental, second run: asking for it as warpctl sync does (a request in the state file)")
    store = warp.store()
    before = time.time()
    asked = time.monotonic()
    request = store.add_request(schema, "sync", {"table": TABLE})
    out = wait_run(warp, schema, after, rows, "incremental, second")
    while (req := store.request(request)) is not None and req.status == "pending":
        warp.check_alive()
        time.sleep(STATE_POLL)
    out["request_to_done_s"] = round(out.pop("seen_at") - asked, 2)
    out["request_to_run_start_s"] = round(out["run_started"] - before, 2)
    say(f"  {out['rows']:,} rows: {out['rows_per_s']:,} rows/s in the run ({out['run_seconds']}s)")
    return out


def checksum_pg(schema: str) -> tuple[int, int, str]:
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT count(*), sum(quantity), max(updated_at) FROM {}").format(
                sql.Identifier(schema, TABLE)
            )
        )
        n, s, m = cur.fetchone()
    conn.close()
    return int(n), int(s or 0), when(m)


def when(value: Any) -> str:
    """A cursor value as the verification compares it (microseconds, no time zone: UTC on both sides)."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, dt.datetime) else str(value)


def drop_pg_schemas(schemas: list[str]) -> None:
    conn = pg()
    with conn, conn.cursor() as cur:
        for schema in schemas:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.close()


# --------------------------------------------------------------------------- the benchmark
def run(source: BatchSource, args: argparse.Namespace, changed: int, extra_config: dict[str, Any]) -> int:
    """The whole benchmark for ``source`` (see the module's docstring); prints the report, returns the
    exit status (1 when a step failed or the verification found a difference)."""
    db = source.name
    dest_full, dest_inc, raw_schema = f"{db}_full", f"{db}_inc", f"{db}_raw"
    fig: dict[str, Any] = {"rows": args.rows, "database": db}
    fig["machine"] = source.machine()
    fig["load"] = wait_for_quiet(args.quiet_wait)
    fig["loadavg"] = " ".join(open("/proc/loadavg", encoding="ascii").read().split()[:3])
    fig["warpd"] = warpd_revision()
    dirs = [tempfile.mkdtemp(prefix=f"warp-bench-batch-{what}-") for what in ("full", "inc")]
    warps = []
    for state_dir, dest, incremental in ((dirs[0], dest_full, False), (dirs[1], dest_inc, True)):
        config = os.path.join(state_dir, "config.json")
        write_config(config, source, dest, incremental, extra_config)
        warps.append(
            Warp(state_dir, os.path.join(state_dir, "warpd.log"), ["--config", config, "--schema", db])
        )
    full_warp, inc_warp = warps
    ok = False
    try:
        fig["source"] = source.load(args.rows)
        if not args.skip_raw:
            fig["raw"] = source.raw_limits(raw_schema, None, "")
        pg_superuser_checkpoint()

        fig["full_refresh"] = first_run(full_warp, db, args.rows, "full refresh")
        full_warp.stop()
        src_before = source.checksum()
        dst_full = checksum_pg(dest_full)
        pg_superuser_checkpoint()

        first = fig["incremental_first"] = first_run(inc_warp, db, args.rows, "incremental, first run")
        if first["rows"] < args.rows:
            raise BenchError(f"the first incremental run moved {first['rows']} rows")
        first_max = source.max_cursor()  # the first run's mark
        fig["changed"] = source.change(args.rows, changed)
        pg_superuser_checkpoint()
        time.sleep(1.0)
        second = fig["incremental_second"] = second_run(inc_warp, db, first["run_started"], changed)
        inc_warp.stop()

        if not args.skip_raw:
            floor = first_max - SAFETY_LAG
            fig["raw_changed"] = source.raw_limits(raw_schema, floor, "'")
            if fig["raw_changed"]["read"]["rows"] != second["rows"]:
                say(
                    f"  (the second run moved {second['rows']:,} rows, the raw read of updated_at >= "
                    f"{floor} found {fig['raw_changed']['read']['rows']:,})"
                )

        say("verifying count, sum(quantity) and max(updated_at) on both sides")
        src_after = source.checksum()
        dst_inc = checksum_pg(dest_inc)
        fig["verify"] = {
            "full_refresh": {"equal": src_before == dst_full, "source": src_before, "destination": dst_full},
            "incremental": {"equal": src_after == dst_inc, "source": src_after, "destination": dst_inc},
        }
        ok = all(v["equal"] for v in fig["verify"].values())
    except BenchError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    except (*source.errors, psycopg2.Error, OSError) as exc:
        say(f"benchmark failed: {type(exc).__name__}: {exc} (was a database restarted meanwhile?)")
        return 1
    finally:
        for warp in warps:
            warp.finish()
        if args.keep:
            say(f"kept: source {db}, PostgreSQL schemas {dest_full}, {dest_inc}; state {dirs}")
        else:
            try:
                source.drop()
                drop_pg_schemas([dest_full, dest_inc, raw_schema])
            except (*source.errors, psycopg2.Error) as exc:
                say(f"could not drop {db}: {exc}")
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
    for key in ("full_refresh", "incremental_first", "incremental_second"):
        fig[key].pop("run_started", None)
    print("\n".join(source.header(fig) + report_tail(fig, report_rows(fig, source.read_label))))
    if args.json:
        print(json.dumps(fig, indent=2, default=str))
    return 0 if ok else 1


# --------------------------------------------------------------------------- report
def report_rows(fig: dict[str, Any], read_label: str) -> list[tuple[str, str, str]]:
    """The report's figure rows: every warp run beside the raw limits of the rows it moved."""
    raw, raw_c = fig.get("raw", {}), fig.get("raw_changed", {})
    rows: list[tuple[str, str, str]] = []

    def add(label: str, value: str, note: str = "") -> None:
        rows.append((label, value, note))

    def limits(r: dict[str, Any], tag: str, what: str) -> tuple[int | None, int | None, int | None]:
        read = r.get("read", {}).get("rows_per_s")
        copy = r.get("copy", {}).get("rows_per_s")
        if not read:
            add(f"raw ({tag}) limits, {what}", "skipped")
            return None, None, None
        add(
            f"raw (b{tag}) {read_label}",
            f"{read:,} rows/s",
            f"{r['read']['rows']:,} rows ({what}) in {r['read']['seconds']}s; client CPU "
            f"{r['read']['client_cpu_s']}s; machine {r['read']['machine_busy_pct']}% busy",
        )
        if "read_encoded" in r:
            add(
                f"raw (b2{tag}) PyMySQL read, server-encoded lines",
                f"{r['read_encoded']['rows_per_s']:,} rows/s",
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
        from_start = " from process start" if "seconds_from_start" in run else ""
        add(
            label,
            f"{run['rows_per_s']:,} rows/s",
            f"{run['rows']:,} rows in {run['run_seconds']}s (the run, per the state file); warp CPU "
            f"{run['warp_cpu_s']}s{from_start} ({run.get('cpu_s_per_million_rows', '-')}s per million rows); "
            f"machine {run['machine_busy_pct']}% busy",
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
    return rows
