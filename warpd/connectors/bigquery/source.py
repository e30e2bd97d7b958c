"""BigQuery source, for ``mode: batch`` only: tables of one dataset read by query jobs (docs/bigquery.md).

BigQuery has no change log a replica could follow, so this source runs batch
schemas only (it registers with ``modes=("batch",)``, and validation refuses
``mode: stream`` with it).  Each read is **one** query job whose result is
read to the end, ``snapshot_chunk_size`` rows per chunk: BigQuery bills a
query by the bytes of the columns it scans, whatever its ``LIMIT``, so one
query per key range would bill the table once per chunk.  The job's result
table is read through the Storage Read API (:mod:`.read_api`, one ordered
stream) or paged through REST (``jobs.getQueryResults``), as ``read_api``
says; ``auto`` settles on one at the first read and logs which and why.

* A full refresh (:meth:`BigQuerySource.snapshot`) reads the table ``FOR
  SYSTEM_TIME AS OF`` the time it started (BigQuery's own clock), in key
  order, so a table written to meanwhile is read at one point, never torn.
* An incremental run (:meth:`BigQuerySource.read_since`) reads ``WHERE cursor
  >= @floor ORDER BY cursor, key`` with the floor as a query parameter; one
  query reads one snapshot of the table.

Every value travels as a query parameter, every identifier through :func:`_q`.
``max_bytes_billed`` (URI or ``source:`` key) is set on every query job.
"""

# SQL is built as text: identifiers go through _q, values are always query parameters.
# ruff: noqa: S608

from __future__ import annotations

import decimal
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from warpd.connectors import rowhash
from warpd.connectors.base import Position, RangeBound, RangeRows, RangeValues, SnapshotChunk, TablePlan
from warpd.connectors.bigquery import read_api
from warpd.connectors.bigquery.client import (
    api_timeout,
    credentials,
    is_transient,
    message,
    open_client,
    wait,
)
from warpd.connectors.bigquery.naming import quote_ident as _q
from warpd.connectors.bigquery.rowhash import Selected, TableRanges
from warpd.connectors.bigquery.source_types import (
    CURSOR_TYPES,
    ReadColumn,
    param_value,
    read_column,
    storage_value,
)
from warpd.connectors.bigquery.uri import BigQueryTarget, parse_uri
from warpd.connectors.keycodec import decode_value, encode_value
from warpd.errors import FatalError
from warpd.types import Column, TableSchema

log = logging.getLogger(__name__)

# types a key column may have: ordered, and comparable with a query parameter of the type
KEY_TYPES = (*CURSOR_TYPES, "BOOL", "BYTES", "TIME")
_BATCH_ONLY = (
    "the BigQuery source runs mode: batch only (BigQuery has no change log to stream from); "
    "set mode: batch and a schedule for this schema (docs/batch-mode.md)"
)


class BigQuerySource:
    """Reads the tables of one BigQuery dataset (the schema's ``source_database``) by query jobs."""

    bulk_formats: frozenset[str] = frozenset()

    def __init__(self, uri: str, dataset: str, schema_name: str, options: Mapping[str, Any] | None = None):
        self.target: BigQueryTarget = parse_uri(uri, "source")
        self.dataset = dataset
        self.schema_name = schema_name
        self.options = dict(options or {})
        self._client: Any = None
        self._api_timeout = api_timeout(self.target)
        self._columns: dict[str, dict[str, ReadColumn]] = {}  # table -> column name -> how it is read
        self._settings: Any = None  # SchemaConfig.table_settings, handed over by configure()
        self._read_client: Any = None  # the Storage Read API's client, once in use
        self._read_path: str | None = None  # "storage" or "rest", settled at the first read (read_api)

    def configure(self, table_settings: Any) -> None:
        """The engine hands over the per-table settings (``partition_filter``)."""
        self._settings = table_settings

    def _filter(self, table: str) -> list[str]:
        """The table's ``partition_filter``, as a condition of every read of it (the user's own SQL)."""
        if self._settings is None:
            return []
        condition = getattr(self._settings(table), "partition_filter", None)
        return [f"({condition})"] if condition else []

    # -- plumbing ----------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = open_client(self.target, f"cartridge-warp {self.schema_name}", "source")
        return self._client

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self._close_read_client()

    def _close_read_client(self) -> None:
        reader, self._read_client = self._read_client, None
        if reader is not None:
            reader.transport.close()

    def _table_id(self, table: str) -> str:
        return f"{self.client.project}.{self.dataset}.{table}"

    def _job_config(self, params: list[Any]) -> Any:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=params)
        if self.target.max_bytes_billed is not None:
            config.maximum_bytes_billed = self.target.max_bytes_billed
        return config

    def _query(self, statement: str, params: list[Any]) -> Any:
        return self.client.query(
            statement,
            job_config=self._job_config(params),
            retry=None,
            job_retry=None,
            timeout=self._api_timeout,
        )

    def _run(self, statement: str, params: list[Any]) -> Any:
        """The rows of one small query job, through REST."""
        return wait(self._query(statement, params), self.target)

    def _rows(
        self, table: str, reads: list[ReadColumn], statement: str, params: list[Any], page_size: int
    ) -> Iterator[Any]:
        """The values of each row of one query job, in the query's order, as the client library reads them
        from REST (a sequence per row): through the Storage Read API, or REST pages of ``page_size`` rows."""
        from google.api_core.exceptions import GoogleAPICallError

        job = self._query(statement, params)
        if self.target.read_api == "rest" or self._read_path == "rest":
            self._settle("rest", "read_api: rest")
            return (row.values() for row in wait(job, self.target, page_size=page_size))
        wait(job, self.target)  # done (its errors raised), no row fetched yet
        if self._read_path == "storage":
            return self._storage_rows(table, reads, self._session(job))
        try:  # the first read: does the Storage Read API answer here?
            session = self._session(job)
        except (read_api.ReadApiUnavailable, GoogleAPICallError) as exc:
            self._close_read_client()
            why = (
                str(exc)
                if isinstance(exc, read_api.ReadApiUnavailable)
                else f"{type(exc).__name__}: {message(exc)}"
            )
            if self.target.read_api == "storage":
                raise FatalError(
                    f"BigQuery source: read_api: storage, but the Storage Read API cannot be used: {why}; "
                    "check read_api_endpoint (its gRPC host:port), grant this identity "
                    "roles/bigquery.readSessionUser, or set read_api: rest (docs/bigquery.md)"
                ) from None
            self._settle("rest", f"read_api: auto, and the Storage Read API cannot be used: {why}")
            return (row.values() for row in wait(job, self.target, page_size=page_size))
        self._settle("storage", f"read_api: {self.target.read_api}, and it answered")
        return self._storage_rows(table, reads, session)

    def _session(self, job: Any) -> Any:
        """A Storage Read session of the finished query job's result table."""
        if self._read_client is None:
            self._read_client = read_api.open_read_client(
                self.target, credentials(self.target, "source"), f"cartridge-warp {self.schema_name}"
            )
        return read_api.open_session(
            self._read_client, self.client.project, job.destination, self._api_timeout
        )

    def _settle(self, path: str, why: str) -> None:
        if self._read_path is None:
            api = "the Storage Read API" if path == "storage" else "the REST API (jobs.getQueryResults pages)"
            log.info("BigQuery source: dataset %s is read through %s (%s)", self.dataset, api, why)
        self._read_path = path

    def _storage_rows(self, table: str, reads: list[ReadColumn], session: Any) -> Iterator[list[Any]]:
        for batch in read_api.batches(self._read_client, session):
            if batch.schema.names != [f"_c{i}" for i in range(len(reads))]:
                raise FatalError(
                    f"BigQuery source: table {table!r}: the Storage Read API returned the columns "
                    f"{batch.schema.names}, not the ones selected; set read_api: rest"
                )
            columns = [
                [None if v is None else storage_value(table, read, v) for v in column.to_pylist()]
                for read, column in zip(reads, batch.columns, strict=True)
            ]
            yield from zip(*columns, strict=True)

    # -- checks ------------------------------------------------------------------
    def check_prerequisites(self) -> None:
        """FatalError naming the fix when the dataset cannot be read."""
        from google.api_core.exceptions import NotFound

        try:
            self.client.get_dataset(
                f"{self.client.project}.{self.dataset}", retry=None, timeout=self._api_timeout
            )
        except NotFound:
            raise FatalError(
                f"BigQuery source: there is no dataset {self.dataset!r} in project {self.client.project!r} (or "
                "this identity cannot see it); check the schema's source_database"
            ) from None

    def current_position(self) -> Position:
        raise FatalError(_BATCH_ONLY)

    def check_position(self, position: Position) -> None:
        raise FatalError(_BATCH_ONLY)

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        raise FatalError(_BATCH_ONLY)

    # -- tables ------------------------------------------------------------------
    def list_tables(self) -> list[str]:
        """The dataset's tables (views, materialized views, external tables and snapshots left out)."""
        from google.api_core.exceptions import NotFound

        try:
            listed = self.client.list_tables(
                f"{self.client.project}.{self.dataset}", retry=None, timeout=self._api_timeout
            )
            return sorted(t.table_id for t in listed if (t.table_type or "TABLE") == "TABLE")
        except NotFound:
            raise FatalError(
                f"BigQuery source: there is no dataset {self.dataset!r} in project {self.client.project!r} (or "
                "this identity cannot see it); check the schema's source_database"
            ) from None

    def _get_table(self, table: str) -> Any:
        from google.api_core.exceptions import NotFound

        try:
            return self.client.get_table(self._table_id(table), retry=None, timeout=self._api_timeout)
        except NotFound:
            return None

    def table_exists(self, table: str) -> bool:
        return self._get_table(table) is not None

    def estimate_rows(self, table: str) -> int:
        found = self._get_table(table)
        return int(found.num_rows or 0) if found is not None else 0

    def describe(self, table: str, key_columns: tuple[str, ...] | None = None) -> TableSchema:
        """The table's columns mapped to the shared types; its key: ``key_columns``, else its (unenforced)
        PRIMARY KEY, else none (full refresh only)."""
        found = self._get_table(table)
        if found is None:
            raise FatalError(f"BigQuery source: table {table!r} not found in dataset {self.dataset!r}")
        reads = {f.name: read_column(table, f) for f in found.schema}
        self._columns[table] = reads
        if key_columns:
            missing = [k for k in key_columns if k not in reads]
            if missing:
                raise FatalError(
                    f"table {table!r}: key_columns {missing} are not columns of the table (it has {sorted(reads)})"
                )
            key = tuple(key_columns)
        else:
            constraints = getattr(found, "table_constraints", None)
            primary = getattr(constraints, "primary_key", None) if constraints is not None else None
            key = tuple(primary.columns) if primary is not None else ()
        for name in key:
            if reads[name].sql_type not in KEY_TYPES:
                raise FatalError(
                    f"BigQuery source: table {table!r}: key column {name!r} is {reads[name].column.source_type}, "
                    f"which cannot order the rows; key columns may be {', '.join(KEY_TYPES)}"
                )
        return TableSchema(name=table, columns=tuple(r.column for r in reads.values()), key=key)

    def _reads(self, schema: TableSchema) -> list[ReadColumn]:
        known = self._columns.get(schema.name)
        if known is None or any(c.name not in known for c in schema.columns):
            self.describe(schema.name)
            known = self._columns[schema.name]
        missing = [c.name for c in schema.columns if c.name not in known]
        if missing:
            raise FatalError(f"BigQuery source: table {schema.name!r} no longer has column(s) {missing}")
        return [known[c.name] for c in schema.columns]

    # -- verify (docs/verify.md): a range's rows read by key and hashed in Python --------------
    def _ranges(self, plan: TablePlan, columns: Sequence[str] = ()) -> TableRanges:
        reads = {r.column.name: r for r in self._reads(plan.source)}

        def read(col: Column) -> Selected:
            r = reads[col.name]
            return Selected(col, col.name, r.sql_type, r.select(_q(col.name)), r.convert)

        live = " AND ".join(self._filter(plan.source.name))  # partition_filter, as every read of the table
        return TableRanges(plan, _q(self._table_id(plan.source.name)), columns, read, live)

    def _range_records(self, statement: str, params: list[tuple[str, str, Any]]) -> Iterator[tuple[Any, ...]]:
        from google.cloud import bigquery

        job = self._query(statement, [bigquery.ScalarQueryParameter(*p) for p in params])
        return (tuple(row.values()) for row in wait(job, self.target))

    def verify_bounds(
        self, plan: TablePlan, lower: RangeBound, upper: RangeBound, every: int
    ) -> list[tuple[Any, ...]]:
        ranges = self._ranges(plan)
        records = self._range_records(*ranges.keys_query(lower, upper))
        return [ranges.bound_of(r) for n, r in enumerate(records, 1) if n % every == 0]

    def range_checksum(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> tuple[int, int]:
        ranges = self._ranges(plan, columns)
        return rowhash.checksum(
            h for _key, h in ranges.hashed(self._range_records(*ranges.query(lower, upper)))
        )

    def range_rows(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> RangeRows:
        ranges = self._ranges(plan, columns)
        return ranges.hashed(self._range_records(*ranges.query(lower, upper)))

    def range_values(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> RangeValues:
        # read as the batch copy reads them: FLOAT64 as a float; JSON, STRUCT and ARRAY as their JSON
        # text (TO_JSON_STRING: an array's order kept, so a reordered array differs)
        ranges = self._ranges(plan, columns)
        return ranges.values(self._range_records(*ranges.query(lower, upper)))

    # -- reading -----------------------------------------------------------------
    def snapshot(
        self,
        schema: TableSchema,
        resume_after: Mapping[str, Any] | None,
        chunk_size: int,
        bulk_format: str | None = None,
    ) -> Iterator[SnapshotChunk]:
        """The whole table as it was when this read started (``FOR SYSTEM_TIME AS OF``), in key order
        after ``resume_after``; a keyless table in no particular order."""
        from google.cloud import bigquery

        if bulk_format is not None:
            raise ValueError(f"the BigQuery source encodes no {bulk_format!r}")
        reads = self._reads(schema)
        pinned = next(iter(self._run("SELECT CURRENT_TIMESTAMP()", [])))[0]
        log.debug("BigQuery source: reading %s.%s as of %s", self.dataset, schema.name, pinned.isoformat())
        params = [bigquery.ScalarQueryParameter("warp_at", "TIMESTAMP", pinned)]
        where = self._filter(schema.name)
        if resume_after and schema.key:
            after = [decode_value(v) for v in resume_after["key"]]
            condition, more = self._after(schema, list(schema.key), after)
            where.append(condition)
            params += more
        statement = self._select(schema, reads, "FOR SYSTEM_TIME AS OF @warp_at", where, list(schema.key))
        rows = self._rows(schema.name, reads, statement, params, chunk_size)
        yield from self._chunks(schema, reads, rows, chunk_size, None)

    def read_since(
        self,
        schema: TableSchema,
        cursor_column: str,
        mark: Mapping[str, Any] | None,
        lag: Any,
        chunk_size: int,
        bulk_format: str | None = None,
    ) -> Iterator[SnapshotChunk]:
        """mode: batch: the rows whose ``cursor_column`` is at or after ``mark``'s cursor minus ``lag``, in
        (cursor, key) order; see :class:`~warpd.connectors.base.Source`."""
        from google.cloud import bigquery

        reads = self._reads(schema)
        by_name = {r.column.name: r for r in reads}
        cursor = by_name.get(cursor_column)
        if cursor is None:
            raise FatalError(
                f"BigQuery source: table {schema.name!r} has no column {cursor_column!r} (cursor_column); "
                f"its columns: {', '.join(by_name)}"
            )
        if cursor.sql_type not in CURSOR_TYPES:
            raise FatalError(
                f"BigQuery source: table {schema.name!r}: cursor_column {cursor_column!r} is "
                f"{cursor.column.source_type}, which cannot be compared with a mark; use a column of type "
                f"{', '.join(CURSOR_TYPES)}"
            )
        order = [cursor_column, *(k for k in schema.key if k != cursor_column)]
        where, params = self._filter(schema.name), []
        if mark is not None and mark.get("cursor") is not None:
            floor = decode_value(mark["cursor"])
            if lag:
                with decimal.localcontext() as ctx:
                    ctx.prec = 100  # a BIGNUMERIC mark minus the lag, exactly (the default 28 digits round)
                    floor = floor - lag
            where.append(f"{_q(cursor_column)} >= @warp_floor")
            params.append(bigquery.ScalarQueryParameter("warp_floor", cursor.sql_type, floor))
        statement = self._select(schema, reads, "", where, order)
        rows = self._rows(schema.name, reads, statement, params, chunk_size)
        yield from self._chunks(schema, reads, rows, chunk_size, order)

    def _select(
        self, schema: TableSchema, reads: list[ReadColumn], at: str, where: list[str], order: list[str]
    ) -> str:
        columns = ", ".join(f"{r.select(_q(r.column.name))} AS _c{i}" for i, r in enumerate(reads))
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        text = f"SELECT {columns} FROM {_q(self._table_id(schema.name))} {at} {condition}".rstrip()
        if order:
            text += " ORDER BY " + ", ".join(_q(k) for k in order)
        return text

    def _after(self, schema: TableSchema, key: list[str], values: list[Any]) -> tuple[str, list[Any]]:
        """``(key) > (values)``, spelled out (BigQuery compares no tuples): k1 > v1 OR (k1 = v1 AND ...)."""
        from google.cloud import bigquery

        if None in values:
            raise FatalError(
                f"BigQuery source: table {schema.name!r}: key column(s) {key} hold NULL at the resume point, "
                "so the read cannot page past it; use key_columns that are never NULL"
            )
        reads = self._columns[schema.name]
        params = [
            bigquery.ScalarQueryParameter(f"warp_k{i}", reads[k].sql_type, param_value(reads[k], v))
            for i, (k, v) in enumerate(zip(key, values, strict=True))
        ]
        terms = []
        for i in range(len(key)):
            equal = [f"{_q(key[j])} = @warp_k{j}" for j in range(i)]
            terms.append("(" + " AND ".join([*equal, f"{_q(key[i])} > @warp_k{i}"]) + ")")
        return "(" + " OR ".join(terms) + ")", params

    def _chunks(
        self,
        schema: TableSchema,
        reads: list[ReadColumn],
        rows: Iterator[Any],
        chunk_size: int,
        cursor_order: list[str] | None,
    ) -> Iterator[SnapshotChunk]:
        """The query's rows (each a sequence of values, as :meth:`_rows` gives them), ``chunk_size`` per chunk, each with its resume point: the key of its last row,
        or with ``cursor_order`` (a batch run) ``{"cursor": ..., "key": [...]}``."""
        names = [r.column.name for r in reads]
        key = cursor_order if cursor_order is not None else list(schema.key)
        by_name = {r.column.name: r for r in reads}
        chunk: list[dict[str, Any]] = []
        resume: dict[str, Any] | None = None
        for values in rows:
            row = {
                name: (read.convert(value) if value is not None else None)
                for name, read, value in zip(names, reads, values, strict=True)
            }
            chunk.append(row)
            if len(chunk) >= chunk_size:
                resume = self._resume(row, key, by_name, cursor_order is not None)
                yield SnapshotChunk(schema.name, chunk, resume_after=resume)
                chunk = []
        if chunk:
            resume = self._resume(chunk[-1], key, by_name, cursor_order is not None)
        yield SnapshotChunk(schema.name, chunk, resume_after=resume, done=True)

    @staticmethod
    def _resume(
        row: Mapping[str, Any], key: list[str], reads: Mapping[str, ReadColumn], cursor: bool
    ) -> dict[str, Any] | None:
        if not key:
            return None
        values = [encode_value(param_value(reads[k], row[k])) for k in key]
        if cursor:  # a batch run's mark: the cursor apart, for the next run's floor and for status
            return {"cursor": values[0], "key": values[1:]}
        return {"key": values}
