"""PostgreSQL destination: COPY into a staging table, then one set-based merge.

Every identifier goes through :class:`psycopg2.sql.Identifier`; every value
travels as COPY data.  One :class:`PostgresDestination` owns one connection
and is used by one thread at a time.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from warpd.connectors.base import (
    BESIDE_PREFIX,
    CASCADE_ACTIONS,
    DELETED_AT_COLUMN,
    FENCE_TABLE,
    OP_COLUMN,
    PG_COPY_TEXT,
    RESERVED_COLUMNS,
    ROW_KEY,
    SOURCE_TS_COLUMN,
    SYNCED_AT_COLUMN,
    Capabilities,
    EncodedChunk,
    Fence,
    FenceRow,
    RangeBound,
    RangeRows,
    RangeValues,
    Row,
    SchemaOpKind,
    SnapshotChunk,
    TablePlan,
    beside_plan,
    is_beside,
)
from warpd.connectors.postgresql.naming import MAX_IDENTIFIER_BYTES, map_columns, pg_identifier
from warpd.connectors.postgresql.rowhash import RangeQueries
from warpd.connectors.postgresql.types import copy_encoder, pg_type_sql
from warpd.errors import FatalError, TransientError
from warpd.redact import redact
from warpd.types import Kind, TableSchema, skip_counts

log = logging.getLogger(__name__)

__all__ = [
    "BESIDE_PREFIX",
    "DELETED_AT_COLUMN",
    "OP_COLUMN",
    "ROW_KEY",
    "SOURCE_TS_COLUMN",
    "SYNCED_AT_COLUMN",
    "PostgresDestination",
    "TablePlan",
    "beside_plan",
    "is_beside",
    "make_plan",
]

CASCADE_STAGE = "_warp_fk_stage"  # temporary: the parent keys one cascade step matches

CAPABILITIES = Capabilities(
    name="PostgreSQL",
    max_identifier_length=MAX_IDENTIFIER_BYTES,
    identifier_unit="bytes",
    max_columns=1600,
    json="jsonb",
    max_decimal_precision=None,  # numeric without a typmod holds any decimal exactly
    transactional_ddl=True,
    bulk_formats=frozenset({PG_COPY_TEXT}),
    foreign_key_actions=True,
    json_widening=True,
    fenced_writes=True,
)


# SQLSTATE classes/codes worth retrying: connection exceptions, serialization
# failure, deadlock, lock timeout, shutdown in progress, cannot connect now.
_T = TypeVar("_T")

_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"}


# program_limit_exceeded: "row is too big", "index row size exceeds": one row the table cannot hold
ROW_TOO_BIG = "54000"


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        code = getattr(exc, "pgcode", None) or ""
        # 28xxx (auth), 3D000 (no such database) and a row too big are operational errors no retry fixes
        return not (code and (code.startswith("28") or code in ("3D000", ROW_TOO_BIG)))
    code = getattr(exc, "pgcode", None) or ""
    return bool(code) and (code in _TRANSIENT_SQLSTATES or code.startswith("08"))


def created_concurrently(run: Callable[[], _T]) -> _T:
    """``run()`` (idempotent ``CREATE ... IF NOT EXISTS`` DDL in its own transaction), again when another
    session created the same schema, table or type at the same moment: PostgreSQL's ``IF NOT EXISTS``
    checks before it inserts into its catalogue, so the loser of that race fails with a unique violation
    of a catalogue index (``pg_namespace_nspname_index`` ...); the second try finds the object there."""
    for attempt in range(3):
        try:
            return run()
        except psycopg2.errors.UniqueViolation as exc:
            constraint = getattr(getattr(exc, "diag", None), "constraint_name", None) or ""
            if attempt == 2 or not constraint.startswith("pg_"):
                raise
    raise AssertionError("unreachable")


def copy_text(value: str | None) -> str:
    """A PostgreSQL text value (as ``::text`` prints it) as one COPY text field."""
    if value is None:
        return r"\N"
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _epoch_to_text(ts: float | None) -> str:
    if ts is None:
        return r"\N"
    import datetime as _dt

    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat()


def make_plan(schema: TableSchema, dest_schema: str, *, soft_delete: bool, metadata: bool) -> TablePlan:
    columns = map_columns((c.name for c in schema.columns), reserved=RESERVED_COLUMNS)
    key = tuple(columns[k] for k in schema.key) if schema.key else (ROW_KEY,)
    return TablePlan(
        source=schema,
        dest_schema=pg_identifier(dest_schema),
        dest_table=pg_identifier(schema.name),
        columns=columns,
        key=key,
        soft_delete=soft_delete,
        metadata=metadata,
        encoders=tuple(copy_encoder(c.type) for c in schema.columns),
    )


def _ident(*names: str) -> sql.Composable:
    return sql.Identifier(*names)


def create_table_sql(plan: TablePlan) -> list[sql.Composable]:
    target = _ident(plan.dest_schema, plan.dest_table)
    defs: list[sql.Composable] = []
    if plan.keyless:
        defs.append(sql.SQL("{} text NOT NULL").format(_ident(ROW_KEY)))
    key_sources = set(plan.source.key)
    for col in plan.source.columns:
        null = sql.SQL(" NOT NULL") if col.name in key_sources else sql.SQL("")
        defs.append(
            sql.SQL("{} {}{}").format(_ident(plan.columns[col.name]), sql.SQL(pg_type_sql(col.type)), null)
        )
    defs.extend(sql.SQL(d) for d in _extra_column_defs(plan))
    defs.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(_ident, plan.key))))
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(plan.dest_schema)),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(target, sql.SQL(", ").join(defs)),
    ]


# UTC and shortest-exact floats: a value converted by a widening (to_jsonb(timestamptz),
# float8::text::numeric) must equal the same value written fresh.
SESSION_OPTIONS = "-c TimeZone=UTC -c extra_float_digits=1"


def session_options(uri: str) -> str:
    """The connection's ``options``: the URI's own (e.g. a search_path) followed by cartridge-warp's."""
    try:
        own = psycopg2.extensions.parse_dsn(uri).get("options", "")
    except psycopg2.ProgrammingError:
        own = ""  # connect() reports the malformed URI itself
    return f"{own} {SESSION_OPTIONS}".strip()


def _missing_columns_sql(plan: TablePlan, have: set[str]) -> list[sql.Composable]:
    """ADD COLUMN for each of ``plan``'s source columns the live table (columns ``have``) lacks."""
    target = _ident(plan.dest_schema, plan.dest_table)
    return [
        sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
            target, _ident(plan.columns[col.name]), sql.SQL(pg_type_sql(col.type))
        )
        for col in plan.source.columns
        if plan.columns[col.name] not in have
    ]


def _extra_column_defs(plan: TablePlan) -> list[str]:
    # names are constants of this module, safe to inline (still quoted)
    out = []
    if plan.metadata:
        out += [
            f'"{OP_COLUMN}" text',
            f'"{SOURCE_TS_COLUMN}" timestamptz',
            f'"{SYNCED_AT_COLUMN}" timestamptz NOT NULL DEFAULT now()',
        ]
    if plan.soft_delete:
        out.append(f'"{DELETED_AT_COLUMN}" timestamptz')
    return out


def _durable_commits(conn: psycopg2.extensions.connection) -> None:
    """Make every COMMIT of this session wait for its WAL flush.

    The checkpoint is stored in the state file once the destination has
    committed; with ``synchronous_commit = off`` (a role, database or server
    default, or the URI's options) a crash of the PostgreSQL server can lose
    such commits while the checkpoint that covers them survives, and the
    changes would never be applied again.  Every other value (``local``,
    ``remote_write``, ``on``, ``remote_apply``) flushes locally and is kept, so
    a stronger setting for synchronous standbys is not weakened.
    """
    with conn, conn.cursor() as cur:
        cur.execute("SHOW synchronous_commit")
        if cur.fetchone()[0] == "off":
            cur.execute("SET synchronous_commit = on")


class PostgresDestination:
    """One connection to the destination database (implements :class:`warpd.connectors.base.Destination`)."""

    capabilities = CAPABILITIES

    def __init__(self, uri: str, *, application_name: str = "cartridge-warp"):
        self.uri = uri
        self.application_name = application_name
        self._conn: psycopg2.extensions.connection | None = None
        self._staged: set[tuple[Any, ...]] = set()  # stage tables of this connection, see _stage_token

    # -- connection ----------------------------------------------------------
    @property
    def conn(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._staged.clear()
            try:
                self._conn = psycopg2.connect(
                    self.uri,
                    application_name=self.application_name,
                    connect_timeout=10,
                    options=session_options(self.uri),
                )
            except psycopg2.OperationalError as exc:
                message = redact(str(exc).strip())
                if "authentication" in message or "password" in message or "role" in message:
                    raise FatalError(f"cannot log in to the PostgreSQL destination: {message}") from exc
                if "does not exist" in message:
                    raise FatalError(f"PostgreSQL destination: {message}; create it first") from exc
                raise TransientError(f"cannot reach the PostgreSQL destination: {message}") from exc
            _durable_commits(self._conn)
        return self._conn

    def connect(self) -> None:
        self.conn  # noqa: B018 - connects (and checks) now

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def rejects_rows(self, exc: BaseException) -> bool:
        if getattr(exc, "pgcode", None) == ROW_TOO_BIG:
            return True  # the batch is narrowed down to the row, which is dead-lettered
        return isinstance(exc, (psycopg2.DataError, psycopg2.IntegrityError))

    def is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg2.errors.UniqueViolation)

    def plan(self, schema: TableSchema, dest_schema: str, *, soft_delete: bool, metadata: bool) -> TablePlan:
        return make_plan(schema, dest_schema, soft_delete=soft_delete, metadata=metadata)

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def reset(self) -> None:
        """Drop the connection after an error; the next use reconnects."""
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the connection is already broken
            self._conn = None

    def _run(self, statements: Iterable[sql.Composable], fence: Fence | None = None) -> list[str]:
        """Run ``statements`` in one transaction, after ``fence``'s epoch check in it (PostgreSQL's DDL
        is transactional: no statement of an older writer commits after a takeover)."""
        done = []
        conn = self.conn
        with conn, conn.cursor() as cur:
            if fence is not None:
                self._write_fence(cur, fence)
            for stmt in statements:
                cur.execute(stmt)
                done.append(stmt.as_string(conn))
        return done

    def render(self, statements: Iterable[sql.Composable]) -> list[str]:
        return [s.as_string(self.conn) for s in statements]

    # -- tables --------------------------------------------------------------
    def existing_columns(self, plan: TablePlan) -> list[str] | None:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum",
                (_ident(plan.dest_schema, plan.dest_table).as_string(self.conn),),
            )
            rows = cur.fetchall()
            cur.execute(
                "SELECT to_regclass(%s) IS NOT NULL",
                (_ident(plan.dest_schema, plan.dest_table).as_string(self.conn),),
            )
            exists = cur.fetchone()[0]
        return [r[0] for r in rows] if exists else None

    def misfit(self, plan: TablePlan) -> str | None:
        """Why the live table cannot take ``plan``'s rows in place; None if it can (or does not exist).

        Columns the plan has and the table lacks are no misfit (:meth:`prepare`
        adds them); a different primary key, a column of another type, or a
        NOT NULL column the plan never writes is.
        """
        target = _ident(plan.dest_schema, plan.dest_table).as_string(self.conn)
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "SELECT attname, format_type(atttypid, atttypmod), attnotnull AND NOT atthasdef "
                "FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (target,),
            )
            live = {name: (pg_type, required) for name, pg_type, required in cur.fetchall()}
            cur.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary "
                "ORDER BY array_position(i.indkey::int2[], a.attnum)",
                (target,),
            )
            key = tuple(r[0] for r in cur.fetchall())
        if not live:
            return None
        problems = []
        if key != plan.key:
            problems.append(
                f"its primary key is ({', '.join(key) or 'none'}), the new one ({', '.join(plan.key)})"
            )
        wanted = {plan.columns[c.name]: pg_type_sql(c.type) for c in plan.source.columns}
        if plan.keyless:
            wanted[ROW_KEY] = "text"
        for name, pg_type in wanted.items():
            if name in live and live[name][0] != pg_type:
                problems.append(f"column {name} is {live[name][0]}, the new one {pg_type}")
        written = set(wanted) | {d.split('"')[1] for d in _extra_column_defs(plan)}
        problems += [
            f"column {name} is NOT NULL and not written any more"
            for name, (_t, required) in live.items()
            if required and name not in written
        ]
        return "; ".join(problems) or None

    def table_exists(self, plan: TablePlan) -> bool:
        return self.existing_columns(plan) is not None

    def swap_in(self, beside: TablePlan, plan: TablePlan, *, fence: Fence | None = None) -> list[str]:
        """Replace ``plan``'s live table by the complete copy ``beside``, in one transaction (with
        ``fence``'s epoch check)."""
        try:
            return self.run_ddl(
                [
                    sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(plan.dest_schema, plan.dest_table)),
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                        _ident(beside.dest_schema, beside.dest_table), _ident(plan.dest_table)
                    ),
                ],
                fence,
            )
        except psycopg2.errors.DependentObjectsStillExist as exc:
            raise FatalError(
                f"the new copy of {plan.dest_schema}.{plan.dest_table} is complete in "
                f"{beside.dest_schema}.{beside.dest_table}, but the old table cannot be dropped: "
                f"{redact(str(exc).strip())}; drop the objects that depend on it (they can be made "
                "again afterwards) and restart; the old table is unchanged"
            ) from exc

    def prepare_sql(self, plan: TablePlan) -> list[sql.Composable]:
        """DDL that makes the destination table match ``plan`` (create, or add missing columns)."""
        existing = self.existing_columns(plan)
        if existing is None:
            return create_table_sql(plan)
        have = set(existing)
        target = _ident(plan.dest_schema, plan.dest_table)
        out = _missing_columns_sql(plan, have)
        for extra in _extra_column_defs(plan):
            name = extra.split('"')[1]
            if name not in have:
                out.append(sql.SQL("ALTER TABLE {} ADD COLUMN {}").format(target, sql.SQL(extra)))
        return out

    def prepare(self, plan: TablePlan, *, fence: Fence | None = None) -> list[str]:
        return created_concurrently(lambda: self._run(self.prepare_sql(plan), fence))

    def plan_ddl(self, plan: TablePlan) -> list[str]:
        return self.render(self.prepare_sql(plan))

    def schema_change(
        self,
        kind: SchemaOpKind,
        old: TablePlan,
        new: TablePlan,
        old_column: str | None = None,
        new_column: str | None = None,
        *,
        fence: Fence | None = None,
    ) -> list[str]:
        return self.run_ddl(self.schema_change_sql(kind, old, new, old_column, new_column), fence)

    def evolve(self, old: TablePlan, new: TablePlan, *, fence: Fence | None = None) -> list[str]:
        return self.run_ddl(self.evolve_sql(old, new), fence)

    def run_ddl(self, statements: list[sql.Composable], fence: Fence | None = None) -> list[str]:
        self._staged.clear()
        return self._run(statements, fence)

    def truncate(self, plan: TablePlan, *, fence: Fence | None = None) -> None:
        self._run([sql.SQL("TRUNCATE {}").format(_ident(plan.dest_schema, plan.dest_table))], fence)

    def soft_delete_all(self, plan: TablePlan, *, fence: Fence | None = None) -> None:
        self._run(
            [
                sql.SQL("UPDATE {} SET {} = now() WHERE {} IS NULL").format(
                    _ident(plan.dest_schema, plan.dest_table),
                    _ident(DELETED_AT_COLUMN),
                    _ident(DELETED_AT_COLUMN),
                )
            ],
            fence,
        )

    def drop(self, plan: TablePlan, *, fence: Fence | None = None) -> list[str]:
        return self.run_ddl(
            [sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(plan.dest_schema, plan.dest_table))], fence
        )

    def schema_change_sql(
        self,
        kind: SchemaOpKind,
        old: TablePlan,
        new: TablePlan,
        old_column: str | None = None,
        new_column: str | None = None,
    ) -> list[sql.Composable]:
        """DDL turning ``old`` into ``new`` for one source change; empty if already done.

        Checks the live table first, so a change replayed after a crash (applied
        but not yet checkpointed) is a no-op rather than an error.
        """
        existing = self.existing_columns(old)
        if kind is SchemaOpKind.RENAME_TABLE:
            if existing is None or self.existing_columns(new) is not None:
                return []
            return [
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    _ident(old.dest_schema, old.dest_table), _ident(new.dest_table)
                )
            ]
        if existing is None:
            return create_table_sql(new)
        have = set(existing)
        target = _ident(new.dest_schema, new.dest_table)
        out: list[sql.Composable] = []
        if kind is SchemaOpKind.DROP_COLUMN and old_column is not None:
            name = old.columns.get(old_column)
            if name in have:
                out.append(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(target, _ident(name)))
            return out
        if kind in (SchemaOpKind.RENAME_COLUMN, SchemaOpKind.MODIFY_COLUMN) and old_column is not None:
            new_column = new_column or old_column
            before, after = old.columns[old_column], new.columns[new_column]
            if before != after and before in have and after not in have:
                out.append(
                    sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                        target, _ident(before), _ident(after)
                    )
                )
            old_col, new_col = old.source.column(old_column), new.source.column(new_column)
            if kind is SchemaOpKind.MODIFY_COLUMN and old_col and new_col and new_col.type != old_col.type:
                pg_type = sql.SQL(pg_type_sql(new_col.type))
                out.append(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
                        target, _ident(after), pg_type, _ident(after), pg_type
                    )
                )
            return out
        # ADD_COLUMN, CREATE_TABLE on an existing table: add what is missing
        return out + _missing_columns_sql(new, have)

    def evolve_sql(self, old: TablePlan, new: TablePlan) -> list[sql.Composable]:
        """DDL for an EVOLVE change: add ``new``'s missing columns, widen those whose type changed.

        Existing values convert by the shared rule: ``to_jsonb(col)`` into a
        JSON column (the connection's TimeZone is UTC, so timestamps render
        the same as a fresh value does), a plain cast otherwise (only exact
        widenings reach here: int -> bigint -> numeric, integer -> double,
        double -> numeric through its shortest exact text).
        Replaying the change after a crash is harmless: each step is a no-op
        on a column that already has the new type.
        """
        existing = self.existing_columns(old)
        if existing is None:
            return create_table_sql(new)
        have = set(existing)
        target = _ident(new.dest_schema, new.dest_table)
        out = _missing_columns_sql(new, have)
        for col in new.source.columns:
            name = new.columns[col.name]
            pg_type = sql.SQL(pg_type_sql(col.type))
            before = old.source.column(col.name)
            if name not in have or before is None or before.type == col.type:
                continue
            if col.type.kind is Kind.JSON:
                using = sql.SQL("to_jsonb({})").format(_ident(name))
            elif before.type.kind is Kind.FLOAT:
                # float8::numeric rounds to 15 digits; float8::text is the shortest exact form
                using = sql.SQL("{}::text::{}").format(_ident(name), pg_type)
            else:
                using = sql.SQL("{}::{}").format(_ident(name), pg_type)
            out.append(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}").format(
                    target, _ident(name), pg_type, using
                )
            )
        return out

    # -- writing -------------------------------------------------------------
    def copy_fields(self, plan: TablePlan) -> list[str]:
        """Columns of one COPY line made by :meth:`encode_line`, in order."""
        cols = ([ROW_KEY] if plan.keyless else []) + plan.data_columns()
        if plan.metadata:
            cols += [OP_COLUMN, SOURCE_TS_COLUMN]
        return cols

    def _stage_names(self, plan: TablePlan) -> tuple[str, str]:
        digest = hashlib.sha1(f"{plan.dest_schema}.{plan.dest_table}".encode()).hexdigest()[:16]
        return f"_warp_up_{digest}", f"_warp_del_{digest}"

    def _stage_token(self, plan: TablePlan) -> tuple[Any, ...]:
        # By content, not id(plan): a plan freed after a resync may leave its id to a new plan
        # of another shape, and the stage tables must then be made again.
        return (
            plan.dest_schema,
            plan.dest_table,
            tuple(self.copy_fields(plan)),
            tuple(pg_type_sql(c.type) for c in plan.source.columns),
        )

    @contextmanager
    def _transaction(self, plan: TablePlan) -> Iterator[Any]:
        conn = self.conn
        try:
            with conn, conn.cursor() as cur:
                yield cur
        except BaseException:
            # the rollback also undid any stage table this transaction created
            self._staged = {t for t in self._staged if t[:2] != (plan.dest_schema, plan.dest_table)}
            raise

    def _ensure_stages(self, cur: Any, plan: TablePlan) -> tuple[str, str]:
        """Temp tables (per connection) for rows to upsert and rows to delete."""
        stages = self._stage_names(plan)
        token = self._stage_token(plan)
        if token in self._staged:
            return stages
        data = [_ident(ROW_KEY)] if plan.keyless else []
        data += [_ident(c) for c in plan.data_columns()]
        for stage in stages:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(stage)))
            # AS SELECT ... WITH NO DATA copies the column types but no constraints
            cur.execute(
                sql.SQL(
                    "CREATE TEMP TABLE {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA"
                ).format(_ident(stage), sql.SQL(", ").join(data), _ident(plan.dest_schema, plan.dest_table))
            )
            if plan.metadata:
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} text, ADD COLUMN {} timestamptz").format(
                        _ident(stage), _ident(OP_COLUMN), _ident(SOURCE_TS_COLUMN)
                    )
                )
        self._staged = {t for t in self._staged if t[:2] != token[:2]}
        self._staged.add(token)
        return stages

    def encode(self, plan: TablePlan, row: Row, op: str, source_ts: float | None) -> str:
        return self.encode_line(plan, row, op, source_ts)

    def encode_chunk(self, plan: TablePlan, chunk: SnapshotChunk) -> EncodedChunk:
        """COPY lines for a snapshot chunk; rows the source encoded (``chunk.encoded``) are completed."""
        if chunk.encoded is None:
            out = EncodedChunk([])
            for row in chunk.rows:
                try:
                    out.records.append((row, self.encode_line(plan, row, "snapshot", None)))
                except (ValueError, TypeError, OverflowError) as exc:
                    out.failed.append((row, f"value cannot be encoded for PostgreSQL: {exc}"))
            return out
        # The source encoded chunk.encoded_columns itself; the rest are canonical values.
        done = set(chunk.encoded_columns)
        rest = [
            (c.name, enc)
            for c, enc in zip(plan.source.columns, plan.encoders, strict=True)
            if c.name not in done
        ]
        fields = [plan.columns[n] for n in chunk.encoded_columns] + [plan.columns[n] for n, _e in rest]
        tail = "\n"
        if plan.metadata:
            fields += [OP_COLUMN, SOURCE_TS_COLUMN]
            tail = "\tsnapshot\t\\N\n"
        out = EncodedChunk([], layout=fields)
        if not rest:  # the common case: no per-value Python work
            out.records = [
                (row, prefix + tail) for prefix, row in zip(chunk.encoded, chunk.rows, strict=True)
            ]
            return out
        for prefix, row in zip(chunk.encoded, chunk.rows, strict=True):
            try:
                rest_text = "".join("\t" + enc(row[n]) for n, enc in rest)
            except (ValueError, TypeError, OverflowError) as exc:
                out.failed.append(
                    (self._with_fields(row, prefix, fields), f"value cannot be encoded for PostgreSQL: {exc}")
                )
                continue
            out.records.append((row, prefix + rest_text + tail))
        return out

    @staticmethod
    def _with_fields(row: Row, line: str, fields: Sequence[str]) -> Row:
        """``row`` completed with the columns only its COPY line holds (kept as text)."""
        out = dict(row)
        for name, text in zip(fields, line.rstrip("\n").split("\t"), strict=False):
            out.setdefault(name, None if text == "\\N" else text)
        return out

    def record_values(self, plan: TablePlan, record: Any, layout: Any = None) -> dict[str, Any]:
        fields = layout or self.copy_fields(plan)
        return self._with_fields({}, record, fields)

    # -- verify (RangeChecksums in base.py; docs/verify.md) ---------------------
    verify_exact_doubles = True  # double precision rendered in SQL (base.exact_double)
    verify_range_digest = True  # range_checksum(..., digest=True) (base.RangeChecksums)

    def range_checksum(
        self,
        plan: TablePlan,
        columns: Sequence[str],
        lower: RangeBound,
        upper: RangeBound,
        *,
        digest: bool = False,
    ) -> tuple[int, int | None]:
        return RangeQueries(plan, columns).checksum(self.conn, lower, upper, digest=digest)

    def range_rows(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> RangeRows:
        return RangeQueries(plan, columns).rows(self.conn, lower, upper)

    def range_values(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> RangeValues:
        return RangeQueries(plan, ()).values(self.conn, columns, lower, upper)

    def range_checksum_values(
        self,
        plan: TablePlan,
        columns: Sequence[str],
        value_columns: Sequence[str],
        lower: RangeBound,
        upper: RangeBound,
        *,
        digest: bool = False,
    ) -> tuple[int, int | None, RangeValues]:
        return RangeQueries(plan, columns).checksum_values(
            self.conn, value_columns, lower, upper, digest=digest
        )

    def verify_bounds(
        self, plan: TablePlan, lower: RangeBound, upper: RangeBound, every: int
    ) -> list[tuple[Any, ...]]:
        return RangeQueries(plan, ()).bounds(self.conn, lower, upper, every)

    def read_rows(self, plan: TablePlan) -> Iterator[Row] | None:
        from warpd.connectors.postgresql.reading import live_rows

        return live_rows(self.conn, plan)

    def encode_line(self, plan: TablePlan, row: Mapping[str, Any], op: str, source_ts: float | None) -> str:
        """One COPY text line for ``row`` (raises ValueError on a value PostgreSQL cannot hold)."""
        fields = plan.encode(row)
        if plan.keyless:
            fields.insert(0, plan.row_key(fields))
        if plan.metadata:
            fields.append(op)
            fields.append(_epoch_to_text(source_ts))
        return "\t".join(fields) + "\n"

    def write(
        self,
        plan: TablePlan,
        upserts: Sequence[str],
        deletes: Sequence[str] = (),
        *,
        direct: bool = False,
        keep_existing: bool = False,
        layout: Any = None,
        fence: Fence | None = None,
    ) -> None:
        """Apply COPY lines (made by :meth:`encode_line`) in one transaction (with ``fence``'s row).

        ``keep_existing`` inserts only the rows whose key is not there yet
        (``ON CONFLICT DO NOTHING``): a copy running beside the stream must
        never overwrite a newer streamed change.

        ``direct`` copies ``upserts`` straight into the target (snapshot rows
        that cannot be there yet; a unique violation means they partly are, and
        the caller retries without ``direct``).  Otherwise rows go through the
        stage tables and are merged: deletes first, then upserts, which is safe
        because a batch holds at most one final state per key.  ``layout`` names
        the lines' columns when they are not in :meth:`copy_fields` order.
        """
        target = _ident(plan.dest_schema, plan.dest_table)
        columns = sql.SQL(", ").join(map(_ident, layout or self.copy_fields(plan)))
        with self._transaction(plan) as cur:
            if fence is not None:
                self._write_fence(cur, fence)
            if direct:
                cur.copy_expert(
                    sql.SQL("COPY {} ({}) FROM STDIN").format(target, columns), io.StringIO("".join(upserts))
                )
                return
            up_stage, del_stage = self._ensure_stages(cur, plan)
            if deletes:
                cur.copy_expert(
                    sql.SQL("COPY {} ({}) FROM STDIN").format(_ident(del_stage), columns),
                    io.StringIO("".join(deletes)),
                )
                match = sql.SQL(" AND ").join(sql.SQL("t.{k} = s.{k}").format(k=_ident(k)) for k in plan.key)
                if plan.soft_delete:
                    sets = [
                        sql.SQL("{} = COALESCE(t.{}, now())").format(
                            _ident(DELETED_AT_COLUMN), _ident(DELETED_AT_COLUMN)
                        )
                    ]
                    if plan.metadata:
                        sets += [
                            sql.SQL("{c} = s.{c}").format(c=_ident(OP_COLUMN)),
                            sql.SQL("{c} = s.{c}").format(c=_ident(SOURCE_TS_COLUMN)),
                            sql.SQL("{} = now()").format(_ident(SYNCED_AT_COLUMN)),
                        ]
                    cur.execute(
                        sql.SQL("UPDATE {} AS t SET {} FROM {} AS s WHERE {}").format(
                            target, sql.SQL(", ").join(sets), _ident(del_stage), match
                        )
                    )
                else:
                    cur.execute(
                        sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {}").format(
                            target, _ident(del_stage), match
                        )
                    )
            if upserts:
                cur.copy_expert(
                    sql.SQL("COPY {} ({}) FROM STDIN").format(_ident(up_stage), columns),
                    io.StringIO("".join(upserts)),
                )
                cur.execute(self._merge_sql(plan, up_stage, keep_existing))

    # -- the fence of streaming batches (Capabilities.fenced_writes) ---------------
    def read_fence(self, where: str, schema: str) -> list[FenceRow]:
        """``schema``'s rows of ``where``.``_warp_checkpoints`` (the table is created first if missing)."""
        table = _ident(where, FENCE_TABLE)
        created_concurrently(lambda: self._create_fence(where))
        with self._transaction_plain() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT table_name, part, seq, position::text, skip, parts, rows_done, epoch, "
                    "skip_tables::text FROM {} WHERE schema_name = %s ORDER BY table_name, part"
                ).format(table),
                (schema,),
            )
            rows = cur.fetchall()
        return [
            FenceRow(t, p, q, json.loads(pos), k, n, d, e, skip_counts(k, by))
            for t, p, q, pos, k, n, d, e, by in rows
        ]

    def _create_fence(self, where: str) -> None:
        table = _ident(where, FENCE_TABLE)
        with self._transaction_plain() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(where)))
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (schema_name text NOT NULL, table_name text NOT NULL, "
                    "part integer NOT NULL, seq bigint NOT NULL, position jsonb NOT NULL, skip bigint NOT NULL, "
                    "parts integer NOT NULL, rows_done bigint NOT NULL, epoch bigint NOT NULL DEFAULT 0, "
                    "updated_at timestamptz NOT NULL DEFAULT now(), skip_tables jsonb, "
                    "PRIMARY KEY (schema_name, table_name, part))"
                ).format(table)
            )
            cur.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "AND column_name = 'skip_tables'",
                (where, FENCE_TABLE),
            )
            if cur.fetchone() is None:  # a fence table from before per-table counts (NULL: a total only)
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS skip_tables jsonb").format(table)
                )

    def clear_fence(self, where: str, schema: str) -> None:
        self.read_fence(where, schema)  # creates the table
        with self._transaction_plain() as cur:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE schema_name = %s AND table_name <> ''").format(
                    _ident(where, FENCE_TABLE)
                ),
                (schema,),
            )

    def take_over(self, where: str, schema: str) -> int:
        self.read_fence(where, schema)  # creates the table
        with self._transaction_plain() as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {t} AS f (schema_name, table_name, part, seq, position, skip, parts, rows_done, "
                    "epoch, updated_at) VALUES (%s, '', 0, 0, '{{}}', 0, 0, 0, 1, now()) ON CONFLICT "
                    "(schema_name, table_name, part) DO UPDATE SET epoch = f.epoch + 1, updated_at = now() "
                    "RETURNING epoch"
                ).format(t=_ident(where, FENCE_TABLE)),
                (schema,),
            )
            return int(cur.fetchone()[0])

    @contextmanager
    def _transaction_plain(self) -> Iterator[Any]:
        conn = self.conn
        with conn, conn.cursor() as cur:
            yield cur

    @staticmethod
    def _write_fence(cur: Any, fence: Fence) -> None:
        cur.execute(
            sql.SQL(
                "SELECT epoch, updated_at FROM {} WHERE schema_name = %s AND table_name = '' AND part = 0 "
                "FOR SHARE"
            ).format(_ident(fence.where, FENCE_TABLE)),
            (fence.schema,),
        )
        fence.check_epoch(cur.fetchone())
        if not fence.records:
            return
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (schema_name, table_name, part, seq, position, skip, parts, rows_done, epoch, "
                "skip_tables, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) ON CONFLICT "
                "(schema_name, table_name, part) DO UPDATE SET seq = excluded.seq, position = excluded.position, "
                "skip = excluded.skip, parts = excluded.parts, rows_done = excluded.rows_done, "
                "epoch = excluded.epoch, skip_tables = excluded.skip_tables, updated_at = excluded.updated_at"
            ).format(_ident(fence.where, FENCE_TABLE)),
            fence.values(),
        )

    def _merge_sql(self, plan: TablePlan, stage: str, keep_existing: bool = False) -> sql.Composable:
        insert_cols = ([ROW_KEY] if plan.keyless else []) + plan.data_columns()
        if plan.metadata:
            insert_cols += [OP_COLUMN, SOURCE_TS_COLUMN]
        values = [_ident(c) for c in insert_cols]
        updates = [c for c in insert_cols if c not in plan.key]
        sets = [sql.SQL("{c} = EXCLUDED.{c}").format(c=_ident(c)) for c in updates]
        if plan.metadata:
            sets.append(sql.SQL("{} = now()").format(_ident(SYNCED_AT_COLUMN)))
        if plan.soft_delete:
            sets.append(sql.SQL("{} = NULL").format(_ident(DELETED_AT_COLUMN)))
        conflict = (
            sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(sets))
            if sets and not keep_existing
            else sql.SQL("DO NOTHING")
        )
        # Identical rows of a keyless table share their row key (snapshot chunks may hold several),
        # and one INSERT ... ON CONFLICT DO UPDATE must not touch a row twice.
        distinct = (
            sql.SQL("DISTINCT ON ({}) ").format(sql.SQL(", ").join(map(_ident, plan.key)))
            if plan.keyless
            else sql.SQL("")
        )
        return sql.SQL("INSERT INTO {} ({}) SELECT {}{} FROM {} ON CONFLICT ({}) {}").format(
            _ident(plan.dest_schema, plan.dest_table),
            sql.SQL(", ").join(values),
            distinct,
            sql.SQL(", ").join(values),
            _ident(stage),
            sql.SQL(", ").join(map(_ident, plan.key)),
            conflict,
        )

    # -- foreign-key cascades (see warpd/engine/cascades.py) -----------------
    def ensure_index(self, plan: TablePlan, columns: Sequence[str]) -> list[str]:
        """An index on ``columns`` (source names) of ``plan``'s table, as InnoDB keeps for a foreign key.

        Without it every emulated cascade would read the whole child table.
        The name is derived from the table and columns, so a restart finds it.
        """
        names = [plan.columns[c] for c in columns]
        digest = hashlib.sha1("\0".join([plan.dest_table, *names]).encode()).hexdigest()[:16]
        return self._run(
            [
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    _ident(f"_warp_fk_{digest}"),
                    _ident(plan.dest_schema, plan.dest_table),
                    sql.SQL(", ").join(map(_ident, names)),
                )
            ]
        )

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor whose statements commit together at the end of the block (roll back on error)."""
        conn = self.conn
        with conn, conn.cursor() as cur:
            yield cur

    def cascade(
        self,
        cur: Any,
        plan: TablePlan,
        action: str,
        columns: Sequence[str],
        keys: Sequence[Sequence[str]],
        returning: Sequence[str] = (),
        source_ts: float | None = None,
    ) -> list[tuple[list[str], list[str] | None]]:
        """Apply one foreign-key action to the child table ``plan`` within ``cur``'s transaction.

        ``columns`` are the child's foreign-key columns (source names); each
        item of ``keys`` holds, as COPY text fields, the parent's old values of
        the referenced columns, followed for ``update`` by its new ones.
        ``delete`` removes the matching rows (marks them deleted with soft
        deletes), ``set_null`` sets ``columns`` to NULL, ``update`` sets them to
        the new values.  Rows already soft-deleted are left alone, as the
        source no longer has them.  Returns, per changed row, the COPY fields of
        the ``returning`` columns before and after (None after a delete), which
        the caller needs to follow constraints that have this table as parent;
        nothing when ``returning`` is empty.
        """
        if action not in CASCADE_ACTIONS:
            raise ValueError(f"unknown foreign-key action {action!r}")
        target = _ident(plan.dest_schema, plan.dest_table)
        fk = [_ident(plan.columns[c]) for c in columns]
        old = [_ident(f"o{i}") for i in range(len(columns))]
        new = [_ident(f"n{i}") for i in range(len(columns))] if action == "update" else []
        stage = _ident(CASCADE_STAGE)
        stage_cols = [sql.SQL("t.{} AS {}").format(c, o) for c, o in zip(fk, old, strict=True)]
        stage_cols += [sql.SQL("t.{} AS {}").format(c, n) for c, n in zip(fk, new, strict=False)]
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage))
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} AS t WITH NO DATA").format(
                stage, sql.SQL(", ").join(stage_cols), target
            )
        )
        cur.copy_expert(
            sql.SQL("COPY {} FROM STDIN").format(stage),
            io.StringIO("".join("\t".join(k) + "\n" for k in keys)),
        )
        where = [sql.SQL("t.{} = s.{}").format(c, o) for c, o in zip(fk, old, strict=True)]
        if plan.soft_delete:
            where.append(sql.SQL("t.{} IS NULL").format(_ident(DELETED_AT_COLUMN)))
        match = sql.SQL(" AND ").join(where)
        by_column = dict(zip(columns, range(len(columns)), strict=True))
        after = [sql.SQL("t.{}::text").format(_ident(plan.columns[r])) for r in returning]
        if action == "delete":
            before = after
            after = []
        else:
            before = [
                sql.SQL("s.{}::text").format(old[by_column[r]])
                if r in by_column
                else sql.SQL("t.{}::text").format(_ident(plan.columns[r]))
                for r in returning
            ]
        out = before + after
        # nothing to follow further down: no rows to send back
        listed = sql.SQL(" RETURNING {}").format(sql.SQL(", ").join(out)) if out else sql.SQL("")
        if action == "delete" and not plan.soft_delete:
            cur.execute(
                sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {}{}").format(target, stage, match, listed)
            )
        else:
            if action == "delete":
                sets = [sql.SQL("{} = now()").format(_ident(DELETED_AT_COLUMN))]
            elif action == "set_null":
                sets = [sql.SQL("{} = NULL").format(c) for c in fk]
            else:
                sets = [sql.SQL("{} = s.{}").format(c, n) for c, n in zip(fk, new, strict=True)]
            if plan.metadata:
                # literals, not parameters: a '%' in a quoted identifier must not read as a placeholder
                sets += [
                    sql.SQL("{} = {}").format(
                        _ident(OP_COLUMN), sql.Literal("delete" if action == "delete" else "update")
                    ),
                    sql.SQL("{} = to_timestamp({}::double precision)").format(
                        _ident(SOURCE_TS_COLUMN), sql.Literal(source_ts)
                    ),
                    sql.SQL("{} = now()").format(_ident(SYNCED_AT_COLUMN)),
                ]
            cur.execute(
                sql.SQL("UPDATE {} AS t SET {} FROM {} AS s WHERE {}{}").format(
                    target, sql.SQL(", ").join(sets), stage, match, listed
                )
            )
        if not out:
            return []
        n = len(before)
        changed = []
        for row in cur.fetchall():
            fields = [copy_text(v) for v in row]
            changed.append((fields[:n], fields[n:] if action != "delete" else None))
        return changed
