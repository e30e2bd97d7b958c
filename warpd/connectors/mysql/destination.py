"""MySQL/MariaDB destination: load a batch into a temporary stage table, then merge it set-based.

A batch travels as ``LOAD DATA LOCAL INFILE`` lines sent from memory (see
:class:`_InfileConnection`), or, when the server has ``local_infile`` off, as
multi-row INSERTs into the same stage table; then one ``INSERT ... SELECT ...
ON DUPLICATE KEY UPDATE`` and one DELETE (or UPDATE for soft deletes) apply it,
all in one InnoDB transaction.  Never ``REPLACE``: it deletes the old row, which
fires delete triggers and foreign-key cascades.  Snapshot chunks (``direct``
writes of keys not there yet) load straight into the table, without the stage;
their lines may come encoded by the source server
(:data:`~warpd.connectors.base.MYSQL_LOAD_TEXT`).

The session runs in strict SQL mode with time_zone '+00:00', so a value the
column cannot hold is an error (the engine then splits the batch down to the
row and dead-letters it), never a silent truncation.  ``LOAD DATA LOCAL`` turns
data errors into warnings (the server cannot stop the client's upload), so any
warning of the load is raised as a :class:`StageRefused` error instead.

Every identifier goes through :func:`~warpd.connectors.mysql.connection.quote_ident`.
"""

# Statements are built from names quoted by quote_ident and from constants; values travel as
# bound parameters or LOAD DATA fields, never in the SQL text.
# ruff: noqa: S608

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pymysql
import pymysql.connections
import pymysql.cursors
import pymysql.err

from warpd.connectors.base import (
    DELETED_AT_COLUMN,
    FENCE_TABLE,
    MYSQL_LOAD_TEXT,
    OP_COLUMN,
    RESERVED_COLUMNS,
    ROW_KEY,
    SOURCE_TS_COLUMN,
    SYNCED_AT_COLUMN,
    Capabilities,
    EncodedChunk,
    Fence,
    FenceRow,
    Row,
    SchemaOpKind,
    SnapshotChunk,
    TablePlan,
)
from warpd.connectors.mysql.connection import MySQLParams, error_code, parse_uri, quote_ident
from warpd.connectors.mysql.dest_types import (
    JSON_KEY_COMMENT,
    KEY_BYTES,
    NULL_FIELD,
    canonical,
    field_encoder,
    fixed_key_bytes,
    mysql_type_sql,
    plain_decimal,
    stage_expr,
    text_decimal,
    unescape,
    variable_length,
)
from warpd.connectors.mysql.rowhash import RangeChecksumMethods, RangeQueries
from warpd.connectors.postgresql.naming import fit_identifier, map_columns
from warpd.errors import FatalError, TransientError
from warpd.redact import redact
from warpd.types import Column, ColumnType, Kind, TableSchema, json_of, skip_counts

log = logging.getLogger(__name__)

MAX_IDENTIFIER_CHARS = 64
MAX_COLUMNS = 1017  # InnoDB's limit per table
DUPLICATE_COLUMN = 1060  # ER_DUP_FIELDNAME
EPOCH_LOCK_WAIT = 600
"""Seconds a takeover or a DDL statement waits for a schema's writer lock (:meth:`MySQLDestination._epoch_lock`)."""

# No silent truncation or zero dates: a value the column cannot hold is an error.
SQL_MODE = (
    "STRICT_ALL_TABLES,STRICT_TRANS_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO"
)
# one multi-row INSERT of the fallback stays well under the default max_allowed_packet (16 MiB)
INSERT_BYTES = 4 << 20
INFILE_NAME = "cartridge-warp-batch"  # the name LOAD DATA asks for; served from memory, never opened

# Lost connection, server gone/shutting down, deadlock, lock wait timeout, too many connections,
# query interrupted, read-only (a failover in progress).
_TRANSIENT = {2002, 2003, 2006, 2013, 2055, 1040, 1053, 1077, 1152, 1158, 1159, 1160, 1161}
_TRANSIENT |= {1205, 1213, 1317, 1927, 1290, 1836}
# Data the server refused: out of range, bad value, too long, bad date/time, wrong count, NULL in
# NOT NULL, duplicate key (a direct write), foreign key, check constraint, invalid JSON...
_REJECTS = {1048, 1062, 1264, 1265, 1292, 1366, 1367, 1406, 1411, 1416, 1452, 1451, 3140, 4025, 1690}
_REJECTS |= {1471, 1525, 1918, 3819, 1153}  # 1153: one row larger than max_allowed_packet
_REJECTS.add(1118)  # row size too large: InnoDB's 8,126 bytes of values kept in the row
# what to do when the server refuses DDL for good (docs/type-mapping.md, "Row size")
_WIDE = (
    "; InnoDB keeps 20 bytes of every TEXT, JSON and BLOB column (and whole values of up to 40 bytes) "
    "in a row of at most 8,126 bytes, so a table holds about 400 such columns: lower max_columns "
    "(MongoDB sources: further fields then go to _warp_extra) or leave columns out, then copy the "
    "table again (warpctl resync)"
)
_DDL_REMEDIES = {1118: _WIDE, 1117: _WIDE}
# LOAD DATA LOCAL refused: MariaDB 4166, MySQL 3948 (local_infile off), 1148 (older servers)
_INFILE_OFF = {4166, 3948, 1148}
_ACCESS_DENIED = {1044, 1045, 1142, 1227, 1698, 1370, 1143}


class StageRefused(pymysql.err.DataError):
    """A warning of ``LOAD DATA LOCAL`` (the server turns its data errors into warnings), raised."""


class _InfileConnection(pymysql.connections.Connection):
    """A PyMySQL connection whose ``LOAD DATA LOCAL INFILE`` reads a buffer in memory, never a file.

    PyMySQL's own handler opens whatever file name the server asks for; this
    one serves :attr:`infile` (set just before the statement) for the name
    cartridge-warp sent, and refuses any other name, so a hostile server
    cannot read the client's files.
    """

    infile: bytes = b""

    def _read_query_result(self, unbuffered: bool = False) -> int:
        self._result = None
        result = _InfileResult(self)
        if unbuffered:
            result.init_unbuffered_query()
        else:
            result.read()
        self._result = result
        if result.server_status is not None:
            self.server_status = result.server_status
        return int(result.affected_rows or 0)


class _InfileResult(pymysql.connections.MySQLResult):
    def _read_load_local_packet(self, first_packet: Any) -> None:
        conn = self.connection
        load = pymysql.connections.LoadLocalPacketWrapper(first_packet)
        data = conn.infile if load.filename in (INFILE_NAME, INFILE_NAME.encode()) else None
        conn.infile = b""
        try:
            if data is not None:
                size = min(conn.max_allowed_packet, 1 << 20)
                for start in range(0, len(data), size):
                    conn.write_packet(data[start : start + size])
        finally:
            conn.write_packet(b"")  # the end of the upload
        ok = conn._read_packet()
        if not ok.is_ok_packet():
            raise pymysql.err.OperationalError(2014, "Commands Out of Sync")
        self._read_ok_packet(ok)
        if data is None:
            raise pymysql.err.OperationalError(
                2068, "the server asked for a LOAD DATA LOCAL file cartridge-warp did not send"
            )


def _q(name: str) -> str:
    return quote_ident(name)


def _table(plan: TablePlan) -> str:
    return f"{_q(plan.dest_schema)}.{_q(plan.dest_table)}"


def _epoch_field(ts: float | None) -> str:
    if ts is None:
        return NULL_FIELD
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).replace(tzinfo=None).isoformat(" ")


_DATE_KINDS = (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ)

_META_TYPES = {
    ROW_KEY: "char(32) character set ascii collate ascii_bin",
    OP_COLUMN: "varchar(16) character set ascii collate ascii_bin",
    SOURCE_TS_COLUMN: "datetime(6)",
}


class MySQLDestination(RangeChecksumMethods):
    """One connection to a MySQL/MariaDB destination (implements :class:`warpd.connectors.base.Destination`)."""

    def __init__(self, uri: str, *, application_name: str = "cartridge-warp"):
        self.params: MySQLParams = parse_uri(uri, where="destination.connection_string")
        self.application_name = application_name
        self._conn: _InfileConnection | None = None
        self._staged: set[tuple[Any, ...]] = set()
        self.local_infile: bool | None = None  # known after connect
        self.collation = "utf8mb4_bin"
        self.capabilities = self._capabilities(())

    def _capabilities(self, notes: tuple[str, ...]) -> Capabilities:
        return Capabilities(
            name="MySQL",
            max_identifier_length=MAX_IDENTIFIER_CHARS,
            identifier_unit="characters",
            max_columns=MAX_COLUMNS,
            json="json",
            max_decimal_precision=65,
            transactional_ddl=False,
            # snapshot rows the source server encoded as LOAD DATA fields load as they are
            bulk_formats=frozenset({MYSQL_LOAD_TEXT}),
            foreign_key_actions=False,
            json_widening=True,
            fenced_writes=True,
            notes=notes,
        )

    # -- connection ----------------------------------------------------------
    @property
    def conn(self) -> _InfileConnection:
        if self._conn is None or not self._conn.open:
            self._staged.clear()
            self._conn = self._open()
        return self._conn

    def _open(self) -> _InfileConnection:
        where = self.params.redacted
        try:
            conn = _InfileConnection(
                **self.params.connect_kwargs(),
                local_infile=True,
                program_name=self.application_name[:32],
            )
        except pymysql.err.MySQLError as exc:
            code = error_code(exc)
            detail = redact(exc.args[1] if len(exc.args) > 1 else exc)
            if code in _ACCESS_DENIED:
                raise FatalError(
                    f"MySQL destination {where}: access denied ({detail}); check the user and password "
                    "of destination.connection_string"
                ) from exc
            if is_transient(exc):
                raise TransientError(f"cannot reach the MySQL destination {where}: {detail}") from exc
            raise FatalError(f"MySQL destination {where}: {detail}") from exc
        with conn.cursor() as cur:
            cur.execute(f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'")
            cur.execute("SELECT @@GLOBAL.local_infile, VERSION()")
            infile, version = cur.fetchone()
            cur.execute(
                "SELECT COLLATION_NAME FROM information_schema.COLLATIONS "
                "WHERE COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')"
            )
            nopad = [r[0] for r in cur.fetchall()]
        self.collation = nopad[0] if nopad else "utf8mb4_bin"
        self.local_infile = bool(int(infile))
        notes = [
            f"server {version}; rows load with LOAD DATA LOCAL INFILE from memory"
            if self.local_infile
            else f"server {version}; local_infile is OFF, rows load with multi-row INSERTs (slower); "
            "SET GLOBAL local_infile = 1 for the faster path"
        ]
        notes.append(f"text is stored with collation {self.collation}, sessions in strict SQL mode, UTC")
        if not nopad:
            notes.append(
                "no NO PAD binary collation (utf8mb4_nopad_bin, utf8mb4_0900_bin): text keys differing "
                "only in trailing spaces compare equal"
            )
        self.capabilities = self._capabilities(tuple(notes))
        return conn

    def connect(self) -> None:
        self.conn  # noqa: B018 - connects (and checks) now

    def close(self) -> None:
        if self._conn is not None and self._conn.open:
            self._conn.close()
        self._conn = None

    def reset(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the connection is already broken
            self._conn = None

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def rejects_rows(self, exc: BaseException) -> bool:
        if isinstance(exc, (pymysql.err.DataError, pymysql.err.IntegrityError)):
            return True
        return isinstance(exc, pymysql.err.MySQLError) and error_code(exc) in _REJECTS

    def is_duplicate(self, exc: BaseException) -> bool:
        return error_code(exc) == 1062

    # -- plans -----------------------------------------------------------------
    def plan(self, schema: TableSchema, dest_schema: str, *, soft_delete: bool, metadata: bool) -> TablePlan:
        return make_plan(schema, dest_schema, soft_delete=soft_delete, metadata=metadata)

    def column_type(self, plan: TablePlan, col: Column) -> str:
        return column_type(plan, col, self.collation)

    # -- DDL -------------------------------------------------------------------
    def _execute(self, statements: list[str], fence: Fence | None = None) -> list[str]:
        """Run DDL; a statement the server refuses for good stops the schema with the statement and a remedy.

        With ``fence``, the writer's epoch is checked right before each statement: DDL commits
        implicitly, so the check cannot share its transaction; the schema's epoch lock, held from
        the check to the statement's end, keeps a takeover from landing in between
        (:meth:`_epoch_lock`; docs/how-it-works.md)."""
        self._staged.clear()
        for stmt in statements:
            with self._epoch_checked(fence), self.conn.cursor() as cur:
                try:
                    cur.execute(stmt.replace("%", "%%"), ())
                except pymysql.err.MySQLError as exc:
                    if is_transient(exc):
                        raise
                    code = error_code(exc)
                    detail = redact(exc.args[1] if len(exc.args) > 1 else exc)
                    shown = stmt if len(stmt) <= 160 else stmt[:160] + " …"
                    raise FatalError(
                        f"the MySQL destination refused {shown}: ({code}) {detail}{_DDL_REMEDIES.get(code or 0, '')}"
                    ) from exc
        return statements

    def live_columns(self, plan: TablePlan) -> dict[str, tuple[str, bool]] | None:
        """Column name -> (type, NOT NULL without default) of the live table; None when it does not exist."""
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'NO' AND COLUMN_DEFAULT IS NULL, "
                "COLLATION_NAME, CHARACTER_SET_NAME, COLUMN_COMMENT FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                (plan.dest_schema, plan.dest_table),
            )
            rows = cur.fetchall()
            if not rows:
                cur.execute(
                    "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                    (plan.dest_schema, plan.dest_table),
                )
                if cur.fetchone() is None:
                    return None
        out = {}
        for name, ctype, required, collation, charset, comment in rows:
            text = str(ctype).lower()
            if charset:
                text += f" character set {charset} collate {collation}"
            if comment == JSON_KEY_COMMENT:
                text += f" comment '{JSON_KEY_COMMENT}'"
            out[str(name)] = (text, bool(required))
        return out

    def table_exists(self, plan: TablePlan) -> bool:
        return self.live_columns(plan) is not None

    def create_sql(self, plan: TablePlan) -> list[str]:
        defs = []
        if plan.keyless:
            defs.append(f"{_q(ROW_KEY)} {_META_TYPES[ROW_KEY]} NOT NULL")
        key_sources = set(plan.source.key)
        for col in plan.source.columns:
            null = " NOT NULL" if col.name in key_sources else ""
            defs.append(f"{_q(plan.columns[col.name])} {self.column_type(plan, col)}{null}")
        defs += [f"{_q(name)} {ddl}" for name, ddl in _extra_columns(plan)]
        defs.append(f"PRIMARY KEY ({', '.join(map(_q, plan.key))})")
        return [
            f"CREATE DATABASE IF NOT EXISTS {_q(plan.dest_schema)} CHARACTER SET utf8mb4 COLLATE {self.collation}",
            f"CREATE TABLE IF NOT EXISTS {_table(plan)} ({', '.join(defs)}) ENGINE=InnoDB "
            f"DEFAULT CHARSET=utf8mb4 COLLATE={self.collation}",
        ]

    def _missing_sql(self, plan: TablePlan, have: set[str]) -> list[str]:
        out = [
            f"ALTER TABLE {_table(plan)} ADD COLUMN {_q(plan.columns[c.name])} {self.column_type(plan, c)}"
            for c in plan.source.columns
            if plan.columns[c.name] not in have
        ]
        out += [
            f"ALTER TABLE {_table(plan)} ADD COLUMN {_q(name)} {ddl}"
            for name, ddl in _extra_columns(plan)
            if name not in have
        ]
        return out

    def prepare_sql(self, plan: TablePlan) -> list[str]:
        live = self.live_columns(plan)
        if live is None:
            return self.create_sql(plan)
        return self._missing_sql(plan, set(live))

    def plan_ddl(self, plan: TablePlan) -> list[str]:
        return self.prepare_sql(plan)

    def prepare(self, plan: TablePlan, *, fence: Fence | None = None) -> list[str]:
        return self._execute(self.prepare_sql(plan), fence)

    def misfit(self, plan: TablePlan) -> str | None:
        live = self.live_columns(plan)
        if not live:
            return None
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s "
                "AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                (plan.dest_schema, plan.dest_table),
            )
            key = tuple(str(r[0]) for r in cur.fetchall())
        problems = []
        if key != plan.key:
            problems.append(
                f"its primary key is ({', '.join(key) or 'none'}), the new one ({', '.join(plan.key)})"
            )
        wanted = {plan.columns[c.name]: self.column_type(plan, c) for c in plan.source.columns}
        for name, want in wanted.items():
            if name in live and not same_type(live[name][0], want):
                problems.append(f"column {name} is {live[name][0]}, the new one {want}")
        written = set(wanted) | {n for n, _d in _extra_columns(plan)} | ({ROW_KEY} if plan.keyless else set())
        problems += [
            f"column {name} is NOT NULL and not written any more"
            for name, (_t, required) in live.items()
            if required and name not in written
        ]
        return "; ".join(problems) or None

    def swap_in(self, beside: TablePlan, plan: TablePlan, *, fence: Fence | None = None) -> list[str]:
        """Replace the live table by the complete copy ``beside``: one atomic RENAME TABLE, then a DROP
        (``fence``'s epoch checked before each)."""
        if self.live_columns(beside) is None:
            return []  # already swapped (a replay)
        if self.live_columns(plan) is None:
            return self._execute([f"RENAME TABLE {_table(beside)} TO {_table(plan)}"], fence)
        old = replace(
            plan,
            dest_table=fit_identifier(f"_warp_old_{plan.dest_table}", MAX_IDENTIFIER_CHARS, "characters"),
        )
        return self._execute(
            [
                f"DROP TABLE IF EXISTS {_table(old)}",
                f"RENAME TABLE {_table(plan)} TO {_table(old)}, {_table(beside)} TO {_table(plan)}",
                f"DROP TABLE IF EXISTS {_table(old)}",
            ],
            fence,
        )

    def drop(self, plan: TablePlan, *, fence: Fence | None = None) -> list[str]:
        return self._execute([f"DROP TABLE IF EXISTS {_table(plan)}"], fence)

    def truncate(self, plan: TablePlan, *, fence: Fence | None = None) -> None:
        self._execute([f"TRUNCATE TABLE {_table(plan)}"], fence)

    def soft_delete_all(self, plan: TablePlan, *, fence: Fence | None = None) -> None:
        d = _q(DELETED_AT_COLUMN)
        stmt = f"UPDATE {_table(plan)} SET {d} = CURRENT_TIMESTAMP(6) WHERE {d} IS NULL"
        if fence is None:
            self._execute([stmt])
            return
        with self._transaction() as cur:  # a row update: the epoch check shares its transaction
            self._write_fence(cur, fence)
            cur.execute(stmt, ())

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
        return self._execute(self.schema_change_sql(kind, old, new, old_column, new_column), fence)

    def schema_change_sql(
        self,
        kind: SchemaOpKind,
        old: TablePlan,
        new: TablePlan,
        old_column: str | None = None,
        new_column: str | None = None,
    ) -> list[str]:
        """DDL turning ``old`` into ``new``; checks the live table first, so a replay is a no-op."""
        live = self.live_columns(old)
        if kind is SchemaOpKind.RENAME_TABLE:
            if live is None or self.live_columns(new) is not None:
                return []
            return [f"RENAME TABLE {_table(old)} TO {_table(new)}"]
        if live is None:
            return self.create_sql(new)
        have = set(live)
        target = _table(new)
        if kind is SchemaOpKind.DROP_COLUMN and old_column is not None:
            name = old.columns.get(old_column)
            return [f"ALTER TABLE {target} DROP COLUMN {_q(name)}"] if name in have else []
        if kind in (SchemaOpKind.RENAME_COLUMN, SchemaOpKind.MODIFY_COLUMN) and old_column is not None:
            new_column = new_column or old_column
            before, after = old.columns[old_column], new.columns[new_column]
            new_col = new.source.column(new_column)
            want = self.column_type(new, new_col) if new_col else None
            null = " NOT NULL" if new_col and new_col.name in new.source.key else ""
            if before != after and before in have and after not in have:
                if want is None:
                    return []
                # CHANGE renames and retypes in one statement
                return [f"ALTER TABLE {target} CHANGE COLUMN {_q(before)} {_q(after)} {want}{null}"]
            if (
                kind is SchemaOpKind.MODIFY_COLUMN
                and want
                and after in have
                and not same_type(live[after][0], want)
            ):
                return [f"ALTER TABLE {target} MODIFY COLUMN {_q(after)} {want}{null}"]
            return []
        return self._missing_sql(new, have)

    def evolve(self, old: TablePlan, new: TablePlan, *, fence: Fence | None = None) -> list[str]:
        """Add missing columns and widen changed ones; a column widened into JSON converts its values.

        A widening between numbers or texts is one ``MODIFY COLUMN`` (only
        exact widenings reach here).  Into JSON, each value becomes the JSON
        text the shared rule gives a fresh value (:func:`json_of`, PostgreSQL's
        ``to_jsonb`` rendering), computed here in Python: the values go to a
        JSON column beside the old one, which then replaces it in one ALTER.
        Every step checks the live table first, so a replay after a crash
        redoes only what is missing.
        """
        live = self.live_columns(old)
        if live is None:
            return self._execute(self.create_sql(new), fence)
        done = self._execute(self._missing_sql(new, set(live)), fence)
        for col in new.source.columns:
            name = new.columns[col.name]
            before = old.source.column(col.name)
            want = self.column_type(new, col)
            if name not in live or before is None or same_type(live[name][0], want):
                continue
            if col.type.kind is Kind.JSON and before.type.kind is not Kind.JSON:
                done += self._convert_in_place(new, name, before.type, live, "JSON", json_of, fence)
                continue
            if before.type.kind is Kind.FLOAT and col.type.kind is Kind.DECIMAL and text_decimal(col.type):
                # the server would print a double its own way (1e300); a fresh value is plain notation
                done += self._convert_in_place(
                    new, name, before.type, live, "decimal", _float_decimal_text, fence
                )
                continue
            null = " NOT NULL" if col.name in new.source.key else ""
            done += self._execute([f"ALTER TABLE {_table(new)} MODIFY COLUMN {_q(name)} {want}{null}"], fence)
        return done

    def evolve_sql(self, old: TablePlan, new: TablePlan) -> list[str]:
        """What :meth:`evolve` would run now, rendered (JSON conversions as one line each)."""
        live = self.live_columns(old)
        if live is None:
            return self.create_sql(new)
        out = self._missing_sql(new, set(live))
        for col in new.source.columns:
            name = new.columns[col.name]
            before = old.source.column(col.name)
            want = self.column_type(new, col)
            if name in live and before is not None and not same_type(live[name][0], want):
                out.append(f"ALTER TABLE {_table(new)} MODIFY COLUMN {_q(name)} {want} -- values converted")
        return out

    def _convert_in_place(
        self,
        plan: TablePlan,
        name: str,
        before: ColumnType,
        live: dict[str, tuple[str, bool]],
        what: str,
        convert: Callable[[ColumnType, Any], str | None],
        fence: Fence | None = None,
    ) -> list[str]:
        """Replace column ``name`` by one of its new type holding ``convert(before, value)`` of each value.

        Into a column beside it (``_warp_json_<name>``), then one ALTER drops
        the old column and renames the new one; a key column's primary key is
        rebuilt in that same ALTER.
        """
        target = _table(plan)
        tmp = fit_identifier(f"_warp_json_{name}", MAX_IDENTIFIER_CHARS, "characters")
        # a key column's new type is indexable (mysql_type_sql), and the primary key is rebuilt on it
        col = next(c for c in plan.source.columns if plan.columns[c.name] == name)
        in_key = name in plan.key
        want = self.column_type(plan, col)
        done = []
        if tmp not in live:
            done += self._execute(
                [f"ALTER TABLE {target} ADD COLUMN {_q(tmp)} {want} AFTER {_q(name)}"], fence
            )
        keys = ", ".join(map(_q, plan.key))
        head = f"INSERT INTO {target} ({keys}, {_q(tmp)}) VALUES ".replace("%", "%%")
        tail = f" ON DUPLICATE KEY UPDATE {target}.{_q(tmp)} = VALUES({_q(tmp)})".replace("%", "%%")
        row_sql = "(" + ", ".join(["%s"] * (len(plan.key) + 1)) + ")"
        select = f"SELECT {keys}, {_q(name)} FROM {target} WHERE {_q(name)} IS NOT NULL"
        count = 0
        # read through a second, unbuffered connection (a consistent read, no locks), so a large
        # table never sits in memory; write on this one, in one transaction
        reader = pymysql.connect(**self.params.connect_kwargs(), cursorclass=pymysql.cursors.SSCursor)
        try:
            with reader.cursor() as rows, self._transaction() as cur:
                if fence is not None:
                    self._write_fence(cur, fence)
                rows.execute(select.replace("%", "%%"), ())
                while part := rows.fetchmany(500):
                    args = [v for r in part for v in (*r[:-1], convert(before, canonical(before, r[-1])))]
                    # every key is there already: each row only updates its JSON column
                    cur.execute(head + ", ".join([row_sql] * len(part)) + tail, args)
                    count += len(part)
        finally:
            reader.close()
        done.append(f"UPDATE {target} SET {_q(tmp)} = <{name} as {what}> -- {count} rows")
        if in_key:
            # one ALTER: the table is never without its primary key, and a replay finds it done
            swap = (
                f"ALTER TABLE {target} DROP PRIMARY KEY, DROP COLUMN {_q(name)}, "
                f"CHANGE COLUMN {_q(tmp)} {_q(name)} {want} NOT NULL, "
                f"ADD PRIMARY KEY ({', '.join(map(_q, plan.key))})"
            )
        else:
            swap = f"ALTER TABLE {target} DROP COLUMN {_q(name)}, CHANGE COLUMN {_q(tmp)} {_q(name)} {want}"
        done += self._execute([swap], fence)
        return done

    # -- records ---------------------------------------------------------------
    def fields(self, plan: TablePlan) -> list[str]:
        """Destination columns of one record, in order."""
        cols = ([ROW_KEY] if plan.keyless else []) + plan.data_columns()
        if plan.metadata:
            cols += [OP_COLUMN, SOURCE_TS_COLUMN]
        return cols

    def encode(self, plan: TablePlan, row: Row, op: str, source_ts: float | None) -> str:
        fields = plan.encode(row)
        if plan.keyless:
            fields.insert(0, plan.row_key(fields))
        if plan.metadata:
            fields += [op, _epoch_field(source_ts)]
        return "\t".join(fields) + "\n"

    def encode_chunk(self, plan: TablePlan, chunk: SnapshotChunk) -> EncodedChunk:
        """LOAD DATA lines for a snapshot chunk; rows the source encoded (``chunk.encoded``, in
        :data:`~warpd.connectors.base.MYSQL_LOAD_TEXT`) are completed with the other columns."""
        if chunk.encoded is None:
            out = EncodedChunk([])
            for row in chunk.rows:
                try:
                    out.records.append((row, self.encode(plan, row, "snapshot", None)))
                except (ValueError, TypeError, OverflowError) as exc:
                    out.failed.append((row, f"value cannot be encoded for MySQL: {exc}"))
            return out
        if plan.keyless:  # the row key hashes the canonical encoding: never asked for
            raise ValueError("source-encoded snapshot fields for a keyless table")
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
            tail = f"\tsnapshot\t{NULL_FIELD}\n"
        out = EncodedChunk([], layout=fields)
        # A zero date of a NOT NULL column arrives as '-infinity', which MySQL cannot hold: refused
        # here with the canonical path's reason (the date encoder's), not as a warning of the load.
        by_name = dict(zip((c.name for c in plan.source.columns), plan.encoders, strict=True))
        dates = [
            (i, by_name[n])
            for i, n in enumerate(chunk.encoded_columns)
            if (c := plan.source.column(n)) is not None and c.type.kind in _DATE_KINDS
        ]
        if dates and not any("infinity" in line for line in chunk.encoded):
            dates = []  # no zero date in this chunk
        if not rest and not dates:  # the common case: no per-value Python work
            out.records = [(row, line + tail) for line, row in zip(chunk.encoded, chunk.rows, strict=True)]
            return out
        for line, row in zip(chunk.encoded, chunk.rows, strict=True):
            try:
                if dates and "infinity" in line:
                    texts = line.split("\t")
                    for i, enc in dates:
                        if texts[i].endswith("infinity"):
                            enc(texts[i])  # raises ValueError
                rest_text = "".join("\t" + enc(row.get(n)) for n, enc in rest)
            except (ValueError, TypeError, OverflowError) as exc:
                values = dict(row)
                values.update(
                    (k, v) for k, v in self.record_values(plan, line, fields).items() if k not in values
                )
                out.failed.append((values, f"value cannot be encoded for MySQL: {exc}"))
                continue
            out.records.append((row, line + rest_text + tail))
        return out

    def record_values(self, plan: TablePlan, record: Any, layout: Any = None) -> dict[str, Any]:
        """A record's fields by destination column name, for a dead letter: integers as numbers, the
        rest as the text loaded (``\\N`` as None)."""
        texts = str(record).rstrip("\n").split("\t")
        ints = {plan.columns[c.name] for c in plan.source.columns if c.type.kind is Kind.INT}
        out: dict[str, Any] = {}
        for name, text in zip(layout or self.fields(plan), texts, strict=False):
            value = unescape(text)
            if name in ints and value is not None:
                try:
                    out[name] = int(value)
                    continue
                except ValueError:
                    pass
            out[name] = value
        return out

    # -- writing ---------------------------------------------------------------
    def _stage_types(self, plan: TablePlan) -> list[tuple[str, str, str]]:
        """(stage column, its type, the expression of a loaded field) per record field."""
        out = []
        if plan.keyless:
            out.append((ROW_KEY, _META_TYPES[ROW_KEY], "{}"))
        for c in plan.source.columns:
            out.append((plan.columns[c.name], self.column_type(plan, c), stage_expr(c.type, "{}")))
        if plan.metadata:
            out += [
                (OP_COLUMN, _META_TYPES[OP_COLUMN], "{}"),
                (SOURCE_TS_COLUMN, _META_TYPES[SOURCE_TS_COLUMN], "{}"),
            ]
        return out

    def _stages(self, cur: Any, plan: TablePlan) -> tuple[str, ...]:
        digest = hashlib.sha1(f"{plan.dest_schema}.{plan.dest_table}".encode()).hexdigest()[:16]
        # temporary tables live in a database too: the plan's (the connection selects none)
        names = tuple(f"{_q(plan.dest_schema)}.{_q(f'_warp_{what}_{digest}')}" for what in ("up", "del"))
        types = self._stage_types(plan)
        token = (plan.dest_schema, plan.dest_table, tuple(types))
        if token in self._staged:
            return names
        key = ", ".join(_q(k) for k in plan.key)
        defs = ", ".join(f"{_q(n)} {t}" for n, t, _e in types)
        for stage in names:
            # temporary (per connection, no implicit commit), InnoDB so a rollback empties it too
            cur.execute(f"DROP TEMPORARY TABLE IF EXISTS {stage}")
            cur.execute(f"CREATE TEMPORARY TABLE {stage} ({defs}, KEY ({key})) ENGINE=InnoDB")
        self._staged = {t for t in self._staged if t[:2] != token[:2]}
        self._staged.add(token)
        return names

    def _load(
        self,
        cur: Any,
        plan: TablePlan,
        stage: str,
        records: Sequence[str],
        layout: Sequence[str] | None = None,
    ) -> None:
        """Load ``records`` (fields in ``layout`` order, default :meth:`fields`) into table ``stage``."""
        types = self._stage_types(plan)
        if layout is not None:
            by_name = {n: (n, t, e) for n, t, e in types}
            types = [by_name[n] for n in layout]
        if self.local_infile:
            variables = [f"@v{i}" for i in range(len(types))]
            sets = ", ".join(
                f"{_q(n)} = {e.format(v)}" for (n, _t, e), v in zip(types, variables, strict=True)
            )
            self.conn.infile = "".join(records).encode("utf-8")
            try:
                cur.execute(
                    f"LOAD DATA LOCAL INFILE '{INFILE_NAME}' INTO TABLE {stage} CHARACTER SET utf8mb4 "
                    "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
                    f"({', '.join(variables)}) SET {sets}".replace("%", "%%"),
                    (),
                )
            except pymysql.err.OperationalError as exc:
                if error_code(exc) not in _INFILE_OFF:
                    raise
                # local_infile was turned off since this connection checked it: nothing was loaded,
                # the same stage is filled by INSERTs from now on
                self.conn.infile = b""
                self.local_infile = False
                log.warning(
                    "MySQL destination: the server refused LOAD DATA LOCAL (local_infile turned off?); "
                    "rows now load with multi-row INSERTs (slower)"
                )
                self._load(cur, plan, stage, records, layout)
                return
            cur.execute("SHOW WARNINGS")
            problems = [w for w in cur.fetchall() if str(w[0]).lower() != "note"]
            if problems:
                level, code, message = problems[0]
                if int(code) in (1265, 1406):  # the server says "truncated": nothing is
                    message += " (the value does not fit the column: the row is refused, not cut)"
                raise StageRefused(int(code), f"{message} (LOAD DATA {level.lower()})")
            return
        # local_infile OFF: the same stage, filled by multi-row INSERTs (strict mode raises by itself)
        row_sql = "(" + ", ".join(e.format("%s") for _n, _t, e in types) + ")"
        head = f"INSERT INTO {stage} ({', '.join(_q(n) for n, _t, _e in types)}) VALUES ".replace("%", "%%")
        part: list[list[str | None]] = []
        size = 0
        for record in records:
            part.append([unescape(t) for t in record.rstrip("\n").split("\t")])
            size += len(record)
            if size >= INSERT_BYTES or len(part) >= 1000:
                cur.execute(head + ", ".join([row_sql] * len(part)), [v for r in part for v in r])
                part, size = [], 0
        if part:
            cur.execute(head + ", ".join([row_sql] * len(part)), [v for r in part for v in r])

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self.conn
        conn.begin()
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - the original error matters
                self.reset()
            raise

    def write(
        self,
        plan: TablePlan,
        upserts: Sequence[Any],
        deletes: Sequence[Any] = (),
        *,
        direct: bool = False,
        keep_existing: bool = False,
        layout: Any = None,
        fence: Fence | None = None,
    ) -> None:
        """Apply records (made by :meth:`encode` or :meth:`encode_chunk`, fields in ``layout`` order)
        in one transaction: deletes first, then upserts (and ``fence``'s row).

        A ``direct`` write loads the records straight into the table: a key already there is a
        warning of the load, raised as :class:`StageRefused` (1062), so the engine merges instead.
        """
        target = _table(plan)
        if direct and not deletes:
            with self._transaction() as cur:
                if fence is not None:
                    self._write_fence(cur, fence)
                self._load(cur, plan, target, upserts, layout)
            return
        columns = [n for n, _t, _e in self._stage_types(plan)]
        cols = ", ".join(map(_q, columns))
        with self.conn.cursor() as cur:
            # outside the transaction: MySQL with GTIDs refuses temporary-table DDL inside one
            up_stage, del_stage = self._stages(cur, plan)
        with self._transaction() as cur:
            if fence is not None:
                self._write_fence(cur, fence)
            cur.execute(f"DELETE FROM {up_stage}")
            cur.execute(f"DELETE FROM {del_stage}")
            if deletes:
                self._load(cur, plan, del_stage, deletes)
                match = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in plan.key)
                if plan.soft_delete:
                    d = _q(DELETED_AT_COLUMN)
                    sets = [f"t.{d} = COALESCE(t.{d}, CURRENT_TIMESTAMP(6))"]
                    if plan.metadata:
                        sets += [
                            f"t.{_q(OP_COLUMN)} = s.{_q(OP_COLUMN)}",
                            f"t.{_q(SOURCE_TS_COLUMN)} = s.{_q(SOURCE_TS_COLUMN)}",
                            f"t.{_q(SYNCED_AT_COLUMN)} = CURRENT_TIMESTAMP(6)",
                        ]
                    stmt = f"UPDATE {target} AS t JOIN {del_stage} AS s ON {match} SET {', '.join(sets)}"
                else:
                    # no alias for the target: MariaDB resolves a multi-table DELETE's alias in the
                    # default database, and the connection selects none
                    full = " AND ".join(f"{target}.{_q(k)} = s.{_q(k)}" for k in plan.key)
                    stmt = f"DELETE {target} FROM {target} JOIN {del_stage} AS s ON {full}"
                cur.execute(stmt.replace("%", "%%"), ())
            if upserts:
                self._load(cur, plan, up_stage, upserts, layout)
                insert = f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {up_stage}"
                if not direct:
                    noop = f"{target}.{_q(plan.key[0])} = {target}.{_q(plan.key[0])}"
                    if keep_existing:
                        # a no-op on a duplicate key only: unlike IGNORE, data errors still raise
                        sets = [noop]
                    else:
                        # qualified: the stage's columns have the same names
                        sets = [f"{target}.{_q(c)} = VALUES({_q(c)})" for c in columns if c not in plan.key]
                        if plan.metadata:
                            sets.append(f"{target}.{_q(SYNCED_AT_COLUMN)} = CURRENT_TIMESTAMP(6)")
                        if plan.soft_delete:
                            sets.append(f"{target}.{_q(DELETED_AT_COLUMN)} = NULL")
                        sets = sets or [noop]
                    insert += f" ON DUPLICATE KEY UPDATE {', '.join(sets)}"
                cur.execute(insert.replace("%", "%%"), ())

    # -- the fence of streaming batches (Capabilities.fenced_writes) ---------------
    def read_fence(self, where: str, schema: str) -> list[FenceRow]:
        """``schema``'s rows of ``where``.``_warp_checkpoints`` (the table is created first if missing)."""
        table = f"{_q(where)}.{_q(FENCE_TABLE)}"
        self.conn  # noqa: B018 - connects first: the collation is the server's (_open)
        self._execute(
            [
                f"CREATE DATABASE IF NOT EXISTS {_q(where)} CHARACTER SET utf8mb4 COLLATE {self.collation}",
                f"CREATE TABLE IF NOT EXISTS {table} (schema_name VARCHAR(255) NOT NULL, "
                "table_name VARCHAR(255) NOT NULL, part INT NOT NULL, seq BIGINT NOT NULL, "
                "position LONGTEXT NOT NULL, skip BIGINT NOT NULL, parts INT NOT NULL, "
                "rows_done BIGINT NOT NULL, epoch BIGINT NOT NULL DEFAULT 0, "
                "updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), skip_tables LONGTEXT NULL, "
                "PRIMARY KEY (schema_name, table_name, part)) ENGINE=InnoDB "
                f"DEFAULT CHARSET=utf8mb4 COLLATE={self.collation}",
            ]
        )
        with self._transaction() as cur:
            cur.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "AND column_name = 'skip_tables'",
                (where, FENCE_TABLE),
            )
            missing = cur.fetchone() is None
        if missing:  # a fence table from before per-table counts (NULL: a total only)
            try:  # (MySQL has no ADD COLUMN IF NOT EXISTS)
                with self.conn.cursor() as cur:
                    cur.execute(f"ALTER TABLE {table} ADD COLUMN skip_tables LONGTEXT NULL")
            except pymysql.err.MySQLError as exc:
                if error_code(exc) != DUPLICATE_COLUMN:  # another process added it a moment ago
                    raise
        with self._transaction() as cur:
            cur.execute(
                f"SELECT table_name, part, seq, position, skip, parts, rows_done, epoch, skip_tables FROM {table} "
                "WHERE schema_name = %s ORDER BY table_name, part",
                (schema,),
            )
            rows = cur.fetchall()
        return [
            FenceRow(
                t, int(p), int(q), json.loads(pos), int(k), int(n), int(d), int(e), skip_counts(int(k), by)
            )
            for t, p, q, pos, k, n, d, e, by in rows
        ]

    def clear_fence(self, where: str, schema: str) -> None:
        self.read_fence(where, schema)  # creates the table
        with self._transaction() as cur:
            cur.execute(
                f"DELETE FROM {_q(where)}.{_q(FENCE_TABLE)} WHERE schema_name = %s AND table_name <> ''",
                (schema,),
            )

    def take_over(self, where: str, schema: str) -> int:
        self.read_fence(where, schema)  # creates the table
        table = f"{_q(where)}.{_q(FENCE_TABLE)}"
        with self._epoch_lock(where, schema), self._transaction() as cur:
            cur.execute(
                f"INSERT INTO {table} (schema_name, table_name, part, seq, position, skip, parts, rows_done, "
                "epoch, updated_at) VALUES (%s, '', 0, 0, '{}', 0, 0, 0, 1, CURRENT_TIMESTAMP(6)) "
                "ON DUPLICATE KEY UPDATE epoch = epoch + 1, updated_at = CURRENT_TIMESTAMP(6)",
                (schema,),
            )
            cur.execute(
                f"SELECT epoch FROM {table} WHERE schema_name = %s AND table_name = '' AND part = 0",
                (schema,),
            )
            return int(cur.fetchone()[0])

    @contextmanager
    def _epoch_checked(self, fence: Fence | None) -> Iterator[None]:
        """With ``fence``: hold the schema's epoch lock, raise SupersededError when another writer
        took the schema over, and keep the lock while the body (a DDL statement) runs."""
        if fence is None:
            yield
            return
        with self._epoch_lock(fence.where, fence.schema):
            with self._transaction() as cur:
                self._write_fence(cur, Fence.guard(fence.where, fence.schema, fence.epoch))
            yield

    @contextmanager
    def _epoch_lock(self, where: str, schema: str) -> Iterator[None]:
        """The server's named lock of ``schema``'s epoch (in ``where``), held by a takeover and by a DDL
        statement from its epoch check to its end: DDL commits implicitly, so the check's shared row
        lock (what keeps a takeover from passing a write: :meth:`_write_fence`) ends before the
        statement runs, and this session-level lock spans both instead.  Released with the session
        if the process dies."""
        name = "cartridge-warp:" + hashlib.sha1(f"{where}\0{schema}".encode()).hexdigest()
        with self.conn.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, %s)", (name, EPOCH_LOCK_WAIT))
            got = cur.fetchone()[0]
        if got != 1:
            raise TransientError(
                f"waited {EPOCH_LOCK_WAIT} s for the writer lock of schema {schema!r} in {where!r}: another "
                "cartridge-warp process holds it (a long schema change there, or a takeover); retrying"
            )
        try:
            yield
        finally:
            try:
                with self.conn.cursor() as cur:
                    cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
            except (pymysql.err.MySQLError, OSError):
                self.reset()  # the session ends, and its locks with it

    @staticmethod
    def _write_fence(cur: Any, fence: Fence) -> None:
        cur.execute(
            f"SELECT epoch, updated_at FROM {_q(fence.where)}.{_q(FENCE_TABLE)} WHERE schema_name = %s "
            "AND table_name = '' AND part = 0 LOCK IN SHARE MODE",
            (fence.schema,),
        )
        fence.check_epoch(cur.fetchone())
        if not fence.records:
            return
        cur.execute(
            f"INSERT INTO {_q(fence.where)}.{_q(FENCE_TABLE)} (schema_name, table_name, part, seq, position, "
            "skip, parts, rows_done, epoch, skip_tables, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, CURRENT_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE seq = VALUES(seq), "
            "position = VALUES(position), skip = VALUES(skip), parts = VALUES(parts), "
            "rows_done = VALUES(rows_done), epoch = VALUES(epoch), skip_tables = VALUES(skip_tables), "
            "updated_at = VALUES(updated_at)",
            fence.values(),
        )

    # -- verify (RangeChecksums in base.py; docs/verify.md) -------------------------
    def _ranges(self, plan: TablePlan, columns: Sequence[str] = ()) -> RangeQueries:
        live = f"{_q(DELETED_AT_COLUMN)} IS NULL" if plan.soft_delete else ""
        return RangeQueries(plan, _table(plan), dict(plan.columns), columns, live, json_arrays=True)

    # -- reading back ------------------------------------------------------------
    def read_rows(self, plan: TablePlan) -> Iterator[Row] | None:
        if self.live_columns(plan) is None:
            return None
        cols = plan.source.columns
        query = f"SELECT {', '.join(_q(plan.columns[c.name]) for c in cols)} FROM {_table(plan)}"
        if plan.soft_delete:
            query += f" WHERE {_q(DELETED_AT_COLUMN)} IS NULL"
        with self.conn.cursor() as cur:
            cur.execute(query.replace("%", "%%"), ())
            rows = [
                {c.name: canonical(c.type, v) for c, v in zip(cols, rec, strict=True)}
                for rec in cur.fetchall()
            ]
        return iter(rows)

    # -- foreign-key actions: not offered (capabilities.foreign_key_actions is False) ----------
    def ensure_index(self, plan: TablePlan, columns: Sequence[str]) -> list[str]:
        raise NotImplementedError("the MySQL destination does not emulate foreign-key actions")

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._transaction() as cur:
            yield cur

    def cascade(self, *args: Any, **kwargs: Any) -> list[tuple[list[str], list[str] | None]]:
        raise NotImplementedError("the MySQL destination does not emulate foreign-key actions")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (pymysql.err.InterfaceError, ConnectionError)):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, pymysql.err.MySQLError):
        return True
    return error_code(exc) in _TRANSIENT


def _extra_columns(plan: TablePlan) -> list[tuple[str, str]]:
    out = []
    if plan.metadata:
        out += [
            (OP_COLUMN, _META_TYPES[OP_COLUMN]),
            (SOURCE_TS_COLUMN, _META_TYPES[SOURCE_TS_COLUMN]),
            (SYNCED_AT_COLUMN, "datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"),
        ]
    if plan.soft_delete:
        out.append((DELETED_AT_COLUMN, "datetime(6)"))
    return out


def storable_name(name: str) -> str:
    """``name`` as MySQL/MariaDB can hold it: kept when it can, else cleaned and made distinct.

    MySQL refuses names that end with a space, and characters outside the
    Basic Multilingual Plane (emoji: identifiers are utf8mb3) or NUL.  Such a
    name has each of those characters replaced by ``_``, trailing spaces
    dropped, and gains ``_`` plus the first 8 hex digits of the SHA-1 of the
    full name (the rule of names over the length limit), so two source names
    never become one.
    """
    if name and not name.endswith(" ") and all(0 < ord(c) <= 0xFFFF for c in name):
        return name
    cleaned = "".join(c if 0 < ord(c) <= 0xFFFF else "_" for c in name).rstrip(" ")
    return f"{cleaned}_{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"


def make_plan(schema: TableSchema, dest_schema: str, *, soft_delete: bool, metadata: bool) -> TablePlan:
    """Names (64 characters at most, distinct ignoring case, storable), key and encoders for ``schema``."""
    columns = map_columns(
        (c.name for c in schema.columns),
        reserved=RESERVED_COLUMNS,
        limit=MAX_IDENTIFIER_CHARS,
        unit="characters",
        fold=str.lower,
        clean=storable_name,
    )
    key = tuple(columns[k] for k in schema.key) if schema.key else (ROW_KEY,)
    return TablePlan(
        source=schema,
        dest_schema=fit_identifier(storable_name(dest_schema), MAX_IDENTIFIER_CHARS, "characters"),
        dest_table=fit_identifier(storable_name(schema.name), MAX_IDENTIFIER_CHARS, "characters"),
        columns=columns,
        key=key,
        soft_delete=soft_delete,
        metadata=metadata,
        encoders=tuple(field_encoder(c.type) for c in schema.columns),
    )


def column_type(plan: TablePlan, col: Column, collation: str) -> str:
    """``col``'s DDL type in ``plan``'s table (key columns of text/bytes get an indexable type: their
    share of what the key's fixed-size columns leave of InnoDB's key limit)."""
    share, fixed = 0, 0
    if col.name in plan.source.key:
        key = [c for k in plan.source.key if (c := plan.source.column(k))]
        share = sum(1 for c in key if variable_length(c.type))
        fixed = sum(fixed_key_bytes(c.type) for c in key)
    return mysql_type_sql(
        col.type,
        key_share=share if variable_length(col.type) else 0,
        key_bytes=KEY_BYTES - fixed,
        collation=collation,
    )


_INT_WIDTH = ("bigint(", "int(", "smallint(", "tinyint(", "mediumint(")


def same_type(live: str, wanted: str) -> bool:
    """Whether a live COLUMN_TYPE (+ charset/collation) is the type ``wanted`` (as rendered here)."""

    def norm(text: str) -> str:
        text = text.lower().strip()
        for prefix in _INT_WIDTH:
            if text.startswith(prefix) and not text.startswith("tinyint(1)"):
                text = prefix[:-1] + text.split(")", 1)[1]
        # MariaDB's JSON is LONGTEXT with a JSON_VALID check (utf8mb4_bin)
        if text.startswith("longtext character set utf8mb4 collate utf8mb4_bin"):
            return "json?" + text
        return text

    a, b = norm(live), norm(wanted)
    return a == b or (b == "json" and a.startswith("json?")) or (a == "json" and b.startswith("json?"))


def column_type_for(ct: ColumnType, collation: str = "utf8mb4_bin") -> str:
    """The DDL type of a non-key column of ``ct`` (documentation and tests)."""
    return mysql_type_sql(ct, collation=collation)


def _float_decimal_text(ct: ColumnType, value: Any) -> str | None:
    """A double as the exact decimal a fresh value of a text-held DECIMAL column gets.

    The shortest decimal that reads back as the same double, in plain
    notation (``0.1``, ``2``, ``1e300`` as 1 and 300 zeros), as for JSON
    (:mod:`warpd.types`).  NaN and the infinities cannot be held (the writer
    refuses them too), so none is stored.
    """
    if value is None:
        return None
    return plain_decimal(format(Decimal(repr(float(value)).removesuffix(".0")), "f"))
