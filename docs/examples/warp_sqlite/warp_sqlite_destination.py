"""A SQLite destination for cartridge-warp: an example connector plugin (docs/writing-a-connector.md).

URI ``sqlite:///path/to/file.db`` (everything after ``sqlite://`` is the file's
absolute path).  Each replicated table is one SQLite table named
``<destination schema>__<table>``.  Values are stored exactly and read back as
the canonical values of :mod:`warpd.types`:

==============================  ==============================================
kind                            stored as
==============================  ==============================================
BOOLEAN, INT                    INTEGER (booleans 0/1)
FLOAT                           REAL; NaN and -0.0 as the text ``NaN``/``-0.0``
DECIMAL, TEXT, BITS, UUID       TEXT (decimals as written: no rounding)
BYTES                           BLOB
DATE, TIMESTAMP, TIMESTAMPTZ    ISO 8601 TEXT (UTC for TIMESTAMPTZ), or ``infinity``
TIME                            TEXT ``[-]H:MM:SS.ffffff`` (hours may exceed 24)
JSON, TEXT_ARRAY                TEXT holding JSON
==============================  ==============================================

Declared column types are INTEGER, REAL, TEXT or BLOB, so SQLite's type
affinity never converts a bound value.  A change that would need another
storage class for a column that holds rows (e.g. INT widened to DECIMAL) is
not converted in place: :class:`CannotFollow` makes the engine copy the table
again (a schema change) or stop with the fix (a MongoDB shape evolution).
"""

# ruff: noqa: S608 - SQL is built only from names passed through quote(); values are bound parameters

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal
from typing import Any

from warpd.connectors.base import (
    DELETED_AT_COLUMN,
    OP_COLUMN,
    RESERVED_COLUMNS,
    ROW_KEY,
    SOURCE_TS_COLUMN,
    SYNCED_AT_COLUMN,
    Capabilities,
    EncodedChunk,
    Row,
    SchemaOpKind,
    SnapshotChunk,
    TablePlan,
)
from warpd.connectors.registry import register_destination
from warpd.errors import ConfigError, FatalError
from warpd.types import ColumnType, Kind, TableSchema

CAPABILITIES = Capabilities(
    name="SQLite",
    max_identifier_length=1000,  # SQLite has no limit of its own; keep names readable
    identifier_unit="characters",
    max_columns=2000,  # SQLITE_MAX_COLUMN's default
    json="text",
    max_decimal_precision=None,  # decimals are kept as text, exactly
    transactional_ddl=True,
    bulk_formats=frozenset(),  # rows arrive as canonical values; no source-side encoding
    foreign_key_actions=False,  # foreign_key_cascades: emulate is refused at start-up
    json_widening=False,  # a column that becomes JSON makes the engine ask for a resync
)

_STORAGE = {
    Kind.BOOLEAN: "INTEGER",
    Kind.INT: "INTEGER",
    Kind.FLOAT: "REAL",
    Kind.BYTES: "BLOB",
}  # every other kind is TEXT

_INFINITIES = ("infinity", "-infinity")
_INT64 = range(-(2**63), 2**63)


class CannotFollow(Exception):
    """A change this destination does not apply in place (not transient: the engine re-copies the table)."""


def check_uri(uri: str) -> None:
    """Refuse a URI this connector cannot open (run by --validate-config, before any connection)."""
    path = uri.removeprefix("sqlite://")
    if path == uri or not path.startswith("/") or path == "/":
        raise ConfigError("a SQLite URI names an absolute file path: sqlite:///path/to/file.db")


@register_destination("sqlite", check_uri=check_uri)
def sqlite_destination(uri: str, application_name: str) -> SQLiteDestination:
    return SQLiteDestination(uri.removeprefix("sqlite://"))


def quote(name: str) -> str:
    """A SQLite identifier, always quoted (the one quoting helper of this module)."""
    return '"' + name.replace('"', '""') + '"'


def storage(kind: Kind) -> str:
    return _STORAGE.get(kind, "TEXT")


# -- values: canonical -> SQLite, and back -----------------------------------


def _time_text(value: dt.timedelta) -> str:
    sign, micros = ("-", -value) if value < dt.timedelta(0) else ("", value)
    seconds, us = divmod(micros // dt.timedelta(microseconds=1), 1_000_000)
    minutes, s = divmod(seconds, 60)
    h, m = divmod(minutes, 60)
    return f"{sign}{h}:{m:02}:{s:02}.{us:06}"


def _text_time(text: str) -> dt.timedelta:
    h, m, s = text.lstrip("-").split(":")
    seconds, us = s.split(".")
    value = dt.timedelta(hours=int(h), minutes=int(m), seconds=int(seconds), microseconds=int(us))
    return -value if text.startswith("-") else value


def to_sqlite(kind: Kind, value: Any) -> Any:
    """The SQLite value holding canonical ``value`` exactly (ValueError/TypeError/OverflowError if none)."""
    if value is None:
        return None
    if kind is Kind.BOOLEAN:
        return int(bool(value))
    if kind is Kind.INT:
        if not isinstance(value, int) or value not in _INT64:
            raise OverflowError(f"{value!r} is not a 64-bit integer")
        return value
    if kind is Kind.FLOAT:
        value = float(value)
        return repr(value) if math.isnan(value) or (value == 0 and math.copysign(1, value) < 0) else value
    if kind is Kind.DECIMAL:
        return str(Decimal(value))
    if kind is Kind.BYTES:
        return bytes(value)
    if kind in (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        if value in _INFINITIES:
            return value
        if kind is Kind.TIMESTAMPTZ:
            return value.astimezone(dt.UTC).isoformat(sep=" ")
        return value.isoformat(sep=" ") if kind is Kind.TIMESTAMP else value.isoformat()
    if kind is Kind.TIME:
        return _time_text(value)
    if kind is Kind.TEXT_ARRAY:
        return json.dumps(list(value))
    if not isinstance(value, str):
        raise TypeError(f"{kind.value} value {value!r} is not a string")
    return value  # TEXT, BITS, UUID, JSON


def from_sqlite(kind: Kind, value: Any) -> Any:
    """The canonical value of a stored one (JSON parsed, as verification compares it)."""
    if value is None:
        return None
    if kind is Kind.BOOLEAN:
        return bool(value)
    if kind is Kind.FLOAT:
        return float(value)
    if kind is Kind.DECIMAL:
        return Decimal(value)
    if kind in (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ) and value in _INFINITIES:
        return value
    if kind is Kind.DATE:
        return dt.date.fromisoformat(value)
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return dt.datetime.fromisoformat(value)
    if kind is Kind.TIME:
        return _text_time(value)
    if kind in (Kind.JSON, Kind.TEXT_ARRAY):
        return json.loads(value)
    return value


def _encoder(column_type: ColumnType) -> Callable[[Any], str]:
    """A text field for a canonical value (what TablePlan.encode and a keyless table's row key use)."""

    def encode(value: Any) -> str:
        stored = to_sqlite(column_type.kind, value)
        if stored is None:
            return "\\N"
        return stored.hex() if isinstance(stored, bytes) else str(stored).replace("\\", "\\\\")

    return encode


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(sep=" ")


def _epoch(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(sep=" ")


# -- the destination -----------------------------------------------------------


class SQLiteDestination:
    """One connection to the SQLite file (implements :class:`warpd.connectors.base.Destination`)."""

    capabilities = CAPABILITIES

    def __init__(self, path: str):
        self.path = path
        self._conn: sqlite3.Connection | None = None

    # -- connection ----------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                # autocommit mode: this class opens every transaction itself (see _transaction);
                # one thread at a time uses an instance, but the engine may close it from another
                self._conn = sqlite3.connect(
                    self.path, isolation_level=None, timeout=30, check_same_thread=False
                )
            except sqlite3.OperationalError as exc:
                raise FatalError(f"cannot open the SQLite destination {self.path}: {exc}") from exc
            # a commit is on disk before the engine stores the checkpoint that covers it
            self._conn.execute("PRAGMA synchronous=FULL")
        return self._conn

    def connect(self) -> None:
        self.conn.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def is_transient(self, exc: BaseException) -> bool:
        # another process holds the file's write lock longer than the connection's timeout
        return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))

    def rejects_rows(self, exc: BaseException) -> bool:
        return isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError))

    def is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE constraint failed" in str(exc)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: everything in the block commits together, or nothing does."""
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def _run(self, statements: list[str]) -> list[str]:
        with self._transaction() as cur:
            for statement in statements:
                cur.execute(statement)
        return statements

    # -- tables --------------------------------------------------------------
    def plan(self, schema: TableSchema, dest_schema: str, *, soft_delete: bool, metadata: bool) -> TablePlan:
        taken = {name.lower() for name in RESERVED_COLUMNS}
        columns = {}
        for col in schema.columns:  # SQLite names are case-insensitive: "Id" and "id" get distinct names
            name, n = col.name, 0
            while name.lower() in taken:
                n += 1
                name = f"{col.name}_{n}"
            taken.add(name.lower())
            columns[col.name] = name
        return TablePlan(
            source=schema,
            dest_schema=dest_schema,
            dest_table=schema.name,
            columns=columns,
            key=tuple(columns[k] for k in schema.key) if schema.key else (ROW_KEY,),
            soft_delete=soft_delete,
            metadata=metadata,
            encoders=tuple(_encoder(c.type) for c in schema.columns),
        )

    @staticmethod
    def table_name(plan: TablePlan) -> str:
        """``<destination schema>__<table>``: one SQLite file holds every schema's tables."""
        return f"{plan.dest_schema}__{plan.dest_table}"

    def table(self, plan: TablePlan) -> str:
        return quote(self.table_name(plan))

    def _live_columns(self, plan: TablePlan) -> list[tuple[str, str, bool, int]] | None:
        """(name, declared type, NOT NULL without default, position in the key) per column; None: no table."""
        rows = self.conn.execute(
            'SELECT name, type, "notnull" AND dflt_value IS NULL, pk FROM pragma_table_info(?)',
            (self.table_name(plan),),
        ).fetchall()
        return rows or None

    def table_exists(self, plan: TablePlan) -> bool:
        return self._live_columns(plan) is not None

    def _wanted(self, plan: TablePlan) -> dict[str, str]:
        """Every column of ``plan``'s table and its definition."""
        out = {ROW_KEY: "TEXT NOT NULL"} if plan.keyless else {}
        for col in plan.source.columns:
            null = " NOT NULL" if col.name in plan.source.key else ""
            out[plan.columns[col.name]] = storage(col.type.kind) + null
        if plan.metadata:
            out |= {OP_COLUMN: "TEXT", SOURCE_TS_COLUMN: "TEXT", SYNCED_AT_COLUMN: "TEXT"}
        if plan.soft_delete:
            out[DELETED_AT_COLUMN] = "TEXT"
        return out

    def plan_ddl(self, plan: TablePlan) -> list[str]:
        live = self._live_columns(plan)
        if live is None:
            defs = [f"{quote(name)} {definition}" for name, definition in self._wanted(plan).items()]
            defs.append(f"PRIMARY KEY ({', '.join(map(quote, plan.key))})")
            return [f"CREATE TABLE IF NOT EXISTS {self.table(plan)} ({', '.join(defs)})"]
        have = {name for name, *_ in live}
        return [
            f"ALTER TABLE {self.table(plan)} ADD COLUMN {quote(name)} {definition.removesuffix(' NOT NULL')}"
            for name, definition in self._wanted(plan).items()
            if name not in have
        ]

    def prepare(self, plan: TablePlan) -> list[str]:
        return self._run(self.plan_ddl(plan))

    def misfit(self, plan: TablePlan) -> str | None:
        live = self._live_columns(plan)
        if live is None:
            return None
        key = tuple(name for name, _t, _r, pk in sorted(live, key=lambda c: c[3]) if pk)
        problems = []
        if key != plan.key:
            problems.append(
                f"its primary key is ({', '.join(key) or 'none'}), the new one ({', '.join(plan.key)})"
            )
        wanted = self._wanted(plan)
        for name, declared, required, _pk in live:
            if name in wanted and declared != wanted[name].split()[0]:
                problems.append(f"column {name} is {declared}, the new one {wanted[name].split()[0]}")
            if required and name not in wanted:
                problems.append(f"column {name} is NOT NULL and not written any more")
        return "; ".join(problems) or None

    def swap_in(self, beside: TablePlan, plan: TablePlan) -> list[str]:
        return self._run(
            [
                f"DROP TABLE IF EXISTS {self.table(plan)}",
                f"ALTER TABLE {self.table(beside)} RENAME TO {quote(self.table_name(plan))}",
            ]
        )

    def drop(self, plan: TablePlan) -> list[str]:
        return self._run([f"DROP TABLE IF EXISTS {self.table(plan)}"])

    def truncate(self, plan: TablePlan) -> None:
        self._run([f"DELETE FROM {self.table(plan)}"])

    def soft_delete_all(self, plan: TablePlan) -> None:
        with self._transaction() as cur:
            cur.execute(
                f"UPDATE {self.table(plan)} SET {quote(DELETED_AT_COLUMN)} = ? "
                f"WHERE {quote(DELETED_AT_COLUMN)} IS NULL",
                (_now(),),
            )

    def schema_change(
        self,
        kind: SchemaOpKind,
        old: TablePlan,
        new: TablePlan,
        old_column: str | None = None,
        new_column: str | None = None,
    ) -> list[str]:
        """Follow one source change; every branch checks the live table first, so a replay is a no-op."""
        live = self._live_columns(old)
        if kind is SchemaOpKind.RENAME_TABLE:
            if live is None or self.table_exists(new):
                return []
            return self._run([f"ALTER TABLE {self.table(old)} RENAME TO {quote(self.table_name(new))}"])
        if live is None:
            return self.prepare(new)
        have = {name for name, *_ in live}
        if kind is SchemaOpKind.DROP_COLUMN and old_column is not None:
            name = old.columns[old_column]
            # SQLite refuses to drop a key or indexed column: a non-transient error, so the table is re-copied
            return self._run(
                [f"ALTER TABLE {self.table(old)} DROP COLUMN {quote(name)}"] if name in have else []
            )
        if kind in (SchemaOpKind.RENAME_COLUMN, SchemaOpKind.MODIFY_COLUMN) and old_column is not None:
            new_column = new_column or old_column
            before, after = old.columns[old_column], new.columns[new_column]
            old_col, new_col = old.source.column(old_column), new.source.column(new_column)
            if old_col and new_col and storage(old_col.type.kind) != storage(new_col.type.kind):
                raise CannotFollow(f"{old_column}: {old_col.type.describe()} -> {new_col.type.describe()}")
            if before != after and before in have and after not in have:
                return self._run(
                    [f"ALTER TABLE {self.table(old)} RENAME COLUMN {quote(before)} TO {quote(after)}"]
                )
            return []
        return self.prepare(new)  # ADD_COLUMN, or CREATE_TABLE over an existing table: add what is missing

    def evolve(self, old: TablePlan, new: TablePlan) -> list[str]:
        """Add columns; a widening within one storage class (INT 32 -> 64 bits) needs nothing more."""
        for col in new.source.columns:
            before = old.source.column(col.name)
            if before is not None and storage(before.type.kind) != storage(col.type.kind):
                raise CannotFollow(
                    f"{col.name!r} now needs {storage(col.type.kind)} storage: the SQLite example does not "
                    f"convert stored values; run warpctl resync on {new.source.name!r} (or delete the state "
                    "of this table) to copy it again in the new shape"
                )
        return self.prepare(new)

    # -- rows ----------------------------------------------------------------
    def fields(self, plan: TablePlan) -> list[str]:
        """The columns of one record, in order."""
        out = ([ROW_KEY] if plan.keyless else []) + plan.data_columns()
        return out + ([OP_COLUMN, SOURCE_TS_COLUMN] if plan.metadata else [])

    def encode(self, plan: TablePlan, row: Row, op: str, source_ts: float | None) -> tuple[Any, ...]:
        """A record: the row's SQLite values in :meth:`fields` order."""
        values = [to_sqlite(c.type.kind, row.get(c.name)) for c in plan.source.columns]
        if plan.keyless:
            values.insert(0, plan.row_key(plan.encode(row)))
        if plan.metadata:
            values += [op, _epoch(source_ts)]
        return tuple(values)

    def encode_chunk(self, plan: TablePlan, chunk: SnapshotChunk) -> EncodedChunk:
        # bulk_formats is empty, so the engine never asks a source for pre-encoded rows
        assert chunk.encoded is None, "a chunk in a bulk format this destination never asked for"
        out = EncodedChunk([])
        for row in chunk.rows:
            try:
                out.records.append((row, self.encode(plan, row, "snapshot", None)))
            except (ValueError, TypeError, OverflowError) as exc:
                out.failed.append((row, f"value cannot be encoded for SQLite: {exc}"))
        return out

    def record_values(self, plan: TablePlan, record: Any, layout: Any = None) -> dict[str, Any]:
        return {
            name: "\\x" + value.hex() if isinstance(value, bytes) else value
            for name, value in zip(self.fields(plan), record, strict=True)
        }

    def write(
        self,
        plan: TablePlan,
        upserts: Sequence[Any],
        deletes: Sequence[Any] = (),
        *,
        direct: bool = False,
        keep_existing: bool = False,
        layout: Any = None,
    ) -> None:
        """Deletes, then upserts, in one transaction (a batch holds one final state per key)."""
        fields = self.fields(plan)
        table, now = self.table(plan), _now()
        at = [fields.index(k) for k in plan.key]
        match = " AND ".join(f"{quote(k)} = ?" for k in plan.key)
        written = fields + ([SYNCED_AT_COLUMN] if plan.metadata else [])  # synced_at: set on every write
        insert = (
            f"INSERT INTO {table} ({', '.join(map(quote, written))}) VALUES ({', '.join('?' * len(written))})"
        )
        if not direct:
            updates = [f"{quote(c)} = excluded.{quote(c)}" for c in fields if c not in plan.key]
            if plan.metadata:
                updates.append(f"{quote(SYNCED_AT_COLUMN)} = excluded.{quote(SYNCED_AT_COLUMN)}")
            if plan.soft_delete:
                updates.append(f"{quote(DELETED_AT_COLUMN)} = NULL")
            action = f"DO UPDATE SET {', '.join(updates)}" if updates and not keep_existing else "DO NOTHING"
            insert += f" ON CONFLICT ({', '.join(map(quote, plan.key))}) {action}"
        with self._transaction() as cur:
            for record in deletes:
                key = [record[i] for i in at]
                if not plan.soft_delete:
                    cur.execute(f"DELETE FROM {table} WHERE {match}", key)
                    continue
                sets = [f"{quote(DELETED_AT_COLUMN)} = COALESCE({quote(DELETED_AT_COLUMN)}, ?)"]
                args: list[Any] = [now]
                if plan.metadata:
                    sets += [f"{quote(c)} = ?" for c in (OP_COLUMN, SOURCE_TS_COLUMN, SYNCED_AT_COLUMN)]
                    args += [record[-2], record[-1], now]
                cur.execute(f"UPDATE {table} SET {', '.join(sets)} WHERE {match}", args + key)
            cur.executemany(insert, [(*r, now) if plan.metadata else r for r in upserts])

    def read_rows(self, plan: TablePlan) -> Iterator[Row] | None:
        if not self.table_exists(plan):
            return None
        names = [c.name for c in plan.source.columns]
        kinds = [c.type.kind for c in plan.source.columns]
        live = f" WHERE {quote(DELETED_AT_COLUMN)} IS NULL" if plan.soft_delete else ""
        select = ", ".join(quote(plan.columns[n]) for n in names)
        rows = self.conn.execute(f"SELECT {select} FROM {self.table(plan)}{live}").fetchall()
        return iter(
            [{n: from_sqlite(k, v) for n, k, v in zip(names, kinds, row, strict=True)} for row in rows]
        )

    # -- foreign-key actions: not offered (capabilities.foreign_key_actions is False) --------
    def ensure_index(self, plan: TablePlan, columns: Sequence[str]) -> list[str]:
        raise NotImplementedError("SQLite example: no foreign-key actions")

    def transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError("SQLite example: no foreign-key actions")

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
        raise NotImplementedError("SQLite example: no foreign-key actions")
