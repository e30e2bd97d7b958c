#!/usr/bin/env python3
"""Benchmark: cartridge-warp ``mode: batch``, BigQuery (the local emulator) -> PostgreSQL: a full refresh
and incremental runs against the raw read and write limits of the same run.

What it does (``make bench-batch-bigquery`` runs it with the defaults; this is not a test):

1. waits (``--quiet-wait``) for an idle machine, then creates the emulator's dataset
   ``warp_bench_batch_bq_<random>`` with one table ``items`` of ``--rows`` rows (default 200,000): an
   ``INT64`` key (``PRIMARY KEY NOT ENFORCED``, which the source takes as the key), the columns of
   ``batch_mysql_to_postgres.py``'s table in BigQuery's types (``INT64``, ``STRING``, ``NUMERIC``, a
   ``STRING`` one in five ``NULL``, ``TIMESTAMP``) and the cursor ``updated_at TIMESTAMP``, loaded by
   ``INSERT ... SELECT FROM UNNEST(GENERATE_ARRAY(...))``.  The loaded rows' ``updated_at`` lie in 2024,
   so the default ``safety_lag`` (1 minute) re-reads only a few dozen of them;
2. raw limits of all the rows (skip with ``--skip-raw``): (b) the google-cloud-bigquery client alone:
   one query job ``SELECT * ... ORDER BY id`` whose result is paged ``--chunk-size`` rows a page, as the
   BigQuery source pages its one query job, typed values, timed from the query's submission to the
   last row; (a) PostgreSQL ``COPY ... FROM STDIN`` of those rows, encoded (untimed) by cartridge-warp's
   PostgreSQL plan, into an empty plain table with cartridge-warp's DDL;
3. full refresh and incremental runs through the real ``python -m warpd --mode single``, as
   ``batch_mysql_to_postgres.py`` does them (scripts/bench/batch_common.py): a full refresh into one
   schema, an incremental first run by ``updated_at`` into another; then ``--changed`` rows (default
   10 %, every n-th id, one ``UPDATE`` job) get ``updated_at = CURRENT_TIMESTAMP()`` and a second run is
   asked for as ``warpctl sync`` does; ``snapshot_chunk_size`` is ``--chunk-size`` for every read;
4. raw limits of the rows the second run reads: (b') the same paged query with ``WHERE updated_at >=``
   the first run's mark minus the safety lag, ``ORDER BY updated_at, id`` (the run's order); (a') COPY;
5. verifies count, sum(quantity) and max(updated_at) of the source against both destinations, prints
   the figures (and JSON with ``--json``), and drops the dataset and the PostgreSQL schemas (``--keep``
   keeps them and the state directories).

The emulator (scripts/setup-bigquery-emulator.sh) runs DuckDB on the same two cores: it is not BigQuery,
whose query jobs take a second or more each whatever their size.  Its absolute figures say little about
BigQuery; the ratios cartridge-warp / raw read, within one run, are what to watch.

Needs the emulator on ``--endpoint`` (default http://127.0.0.1:9050, project ``warp``) and PostgreSQL on
127.0.0.1:5432 (user warp/warp, database warp_test) of scripts/setup-databases.sh.  Warp's own settings
can be varied with CARTRIDGE_WARP_* variables (docs/configuration.md), which the child processes inherit.
"""

# SQL is built as text from the benchmark's own names (a random dataset name, constants) only; values
# are query parameters.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import uuid
from typing import Any

from batch_common import TABLE, BatchSource, add_arguments, changed_rows, run, when
from bq_common import DEFAULT_ENDPOINT, PROJECT, bigquery_drivers, bq_client, emulator_version
from common import (  # the checkout's warpd, first on sys.path (see common.py)
    BenchError,
    CpuWindow,
    host_facts,
    package_version,
    rate,
    say,
)
from google.api_core.exceptions import GoogleAPIError
from google.cloud import bigquery
from pg_common import pg_facts, raw_copy

from warpd.config.model import DEFAULT_SNAPSHOT_CHUNK_SIZE
from warpd.connectors.bigquery.source import BigQuerySource
from warpd.connectors.postgresql.destination import make_plan

LOAD_CHUNK = 100_000  # rows an INSERT job

CREATE_TABLE = """CREATE TABLE {table} (
    id          INT64 NOT NULL,
    customer_id INT64 NOT NULL,
    sku         STRING NOT NULL,
    name        STRING NOT NULL,
    price       NUMERIC NOT NULL,
    quantity    INT64 NOT NULL,
    status      STRING NOT NULL,
    note        STRING,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (id) NOT ENFORCED
)"""

# The values of batch_mysql_to_postgres.py's LOAD_SQL: ~200 bytes a row, updated_at in 2024, one second
# apart plus microseconds, so the cursor is unique and the safety lag re-reads few rows.
LOAD_SQL = (
    "INSERT INTO {table} (id, customer_id, sku, name, price, quantity, status, note, created_at, updated_at) "
    "SELECT seq, MOD(seq, 50000), CONCAT('SKU-', LPAD(CAST(MOD(seq, 100000) AS STRING), 6, '0')), "
    "CONCAT('item ', CAST(seq AS STRING), ' ', SUBSTR(TO_HEX(MD5(CAST(seq AS STRING))), 1, 16)), "
    "CAST(MOD(seq, 1000000) AS NUMERIC) / 100, MOD(seq, 1000), "
    "['new', 'paid', 'shipped', 'done'][OFFSET(MOD(seq, 4))], "
    "IF(MOD(seq, 5) = 0, NULL, CONCAT('note ', TO_HEX(MD5(CAST(seq AS STRING))))), "
    "TIMESTAMP_ADD(TIMESTAMP '2024-01-01 00:00:00+00', INTERVAL seq SECOND), "
    "TIMESTAMP_ADD(TIMESTAMP_ADD(TIMESTAMP '2024-01-01 00:00:00+00', INTERVAL seq SECOND), "
    "INTERVAL MOD(seq * 7919, 1000000) MICROSECOND) "
    "FROM UNNEST(GENERATE_ARRAY(@a, @b)) AS seq"
)


class BigQueryItems:
    """The emulator's side of the benchmark: the dataset ``name`` and its table ``items``."""

    errors: tuple[type[BaseException], ...] = (GoogleAPIError,)

    def __init__(self, name: str, endpoint: str, chunk_size: int):
        self.name = name
        self.endpoint = endpoint
        self.chunk_size = chunk_size
        self.connection_string = f"bigquery://{PROJECT}?api_endpoint={endpoint}"
        self.read_label = f"google-cloud-bigquery query, {chunk_size:,}-row pages"
        self.bq = bq_client(endpoint)
        self.table = f"`{PROJECT}.{name}.{TABLE}`"

    def _query(self, statement: str, **params: Any) -> Any:
        """A query job on ``statement`` (``{table}`` is the table); parameters are ints or timestamps."""
        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter(k, "INT64" if isinstance(v, int) else "TIMESTAMP", v)
                for k, v in params.items()
            ]
        )
        return self.bq.query(statement.format(table=self.table), job_config=config)

    def _one(self, statement: str, **params: Any) -> tuple[Any, ...]:
        return tuple(next(iter(self._query(statement, **params).result())).values())

    def machine(self) -> dict[str, Any]:
        return {
            **host_facts(),
            **pg_facts(),
            "emulator": emulator_version(),
            "drivers": f"psycopg2 {package_version('psycopg2-binary')}, {bigquery_drivers()}",
        }

    def header(self, fig: dict[str, Any]) -> list[str]:
        m = fig["machine"]
        return [
            "cartridge-warp benchmark: mode: batch, BigQuery emulator -> PostgreSQL "
            f"({time.strftime('%Y-%m-%d %H:%M')})",
            f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, kernel {m['kernel']}",
            f"         emulator {m['emulator']} at {self.endpoint}; PostgreSQL {m['postgresql']}; "
            f"Python {m['python']}",
            f"         {m['drivers']}",
            f"         PostgreSQL: {m['postgresql_settings']}",
            f"cartridge-warp: {fig.get('warpd', '?')}; snapshot_chunk_size {self.chunk_size:,}",
            "the emulator is not BigQuery (DuckDB on the same cores; BigQuery jobs take seconds each): watch the "
            "ratios, not the absolute rates",
        ]

    def load(self, rows: int) -> dict[str, Any]:
        say(
            f"creating dataset {self.name} in the emulator with {rows:,} rows (INSERT ... SELECT, {LOAD_CHUNK:,} a job)"
        )
        t0 = time.monotonic()
        self.bq.create_dataset(bigquery.Dataset(f"{PROJECT}.{self.name}"))
        self._query(CREATE_TABLE).result()
        for a in range(1, rows + 1, LOAD_CHUNK):
            self._query(LOAD_SQL, a=a, b=min(rows, a + LOAD_CHUNK - 1)).result()
        seconds = time.monotonic() - t0
        loaded = self._one("SELECT count(*) FROM {table}")[0]
        if loaded != rows:
            raise BenchError(f"the emulator holds {loaded} rows after loading {rows}")
        say(f"  loaded in {seconds:.1f}s")
        return {"load_seconds": round(seconds, 2)}

    def change(self, rows: int, changed: int) -> dict[str, Any]:
        """One UPDATE job: every ``step``-th id, ``changed`` rows, their cursor set to now."""
        step = max(1, rows // changed)
        say(f"changing {changed:,} rows (every {step}th id, one UPDATE job)")
        t0 = time.monotonic()
        job = self._query(
            "UPDATE {table} SET quantity = quantity + 1, status = 'changed', updated_at = CURRENT_TIMESTAMP() "
            "WHERE MOD(id, @step) = 0 AND id <= @last",
            step=step,
            last=step * changed,
        )
        job.result()
        seconds = time.monotonic() - t0
        done = int(job.num_dml_affected_rows or 0)
        say(f"  {done:,} rows changed in {seconds:.1f}s")
        return {"rows": done, "every_nth_id": step, "seconds": round(seconds, 2)}

    def max_cursor(self) -> Any:
        return self._one("SELECT max(updated_at) FROM {table}")[0]

    def checksum(self) -> tuple[int, int, str]:
        n, s, m = self._one("SELECT count(*), sum(quantity), max(updated_at) FROM {table}")
        return int(n), int(s or 0), when(m)

    def drop(self) -> None:
        self.bq.delete_dataset(f"{PROJECT}.{self.name}", delete_contents=True, not_found_ok=True)

    def raw_limits(self, raw_schema: str, floor: Any | None, label: str) -> dict[str, Any]:
        """(b) the client alone: one query job, paged as the source pages it, typed values; (a) COPY of
        the same rows (encoded by cartridge-warp's PostgreSQL plan, untimed) into an empty plain table."""
        where, order = ("WHERE updated_at >= @floor", "updated_at, id") if floor is not None else ("", "id")
        params = {"floor": floor} if floor is not None else {}
        what = "the changed rows" if floor is not None else "all rows"
        say(
            f"raw (b{label}): reading {what} with the google-cloud-bigquery client, {self.chunk_size:,} rows a page"
        )
        kept = []
        cpu = CpuWindow(os.getpid())
        t0 = time.monotonic()
        for row in self._query(f"SELECT * FROM {{table}} {where} ORDER BY {order}", **params).result(
            page_size=self.chunk_size
        ):
            kept.append(row)
        seconds = time.monotonic() - t0
        used = cpu.stop()
        count = len(kept)
        say(f"  {count / seconds:,.0f} rows/s ({seconds:.2f}s, {count:,} rows)")
        out = {
            "read": rate(
                count, seconds, machine_busy_pct=used["machine_busy_pct"], client_cpu_s=used["warp_cpu_s"]
            )
        }
        source = BigQuerySource(self.connection_string, self.name, self.name, {})
        try:
            plan = make_plan(source.describe(TABLE), raw_schema, soft_delete=False, metadata=False)
        finally:
            source.close()
        text = "".join("\t".join(plan.encode(dict(row.items()))) + "\n" for row in kept)
        out["copy"] = raw_copy(plan, io.BytesIO(text.encode("utf-8")), count, f"raw (a{label})")
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(p, default_rows=200_000)
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="the emulator (default %(default)s)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_SNAPSHOT_CHUNK_SIZE,
        help="snapshot_chunk_size of the runs and page size of the raw read (default %(default)s)",
    )
    args = p.parse_args(argv)
    changed = changed_rows(p, args)
    if args.chunk_size < 1:
        p.error("--chunk-size must be >= 1")
    name = f"warp_bench_batch_bq_{uuid.uuid4().hex[:8]}"
    try:
        items = BigQueryItems(name, args.endpoint.rstrip("/"), args.chunk_size)
        list(items.bq.list_datasets(max_results=1, timeout=10))  # the emulator answers
    except (GoogleAPIError, OSError) as exc:
        say(
            f"no BigQuery emulator at {args.endpoint} ({type(exc).__name__}: {exc}); run `make setup-bigquery`"
        )
        return 1
    source: BatchSource = items
    return run(source, args, changed, {"snapshot_chunk_size": args.chunk_size})


if __name__ == "__main__":
    sys.exit(main())
