"""MySQL/MariaDB source: prerequisite checks, table shapes and the chunked snapshot.

Change streaming from the binlog lives in :mod:`warpd.connectors.mysql.binlog`.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pymysql

from warpd.connectors.base import (
    CASCADING_RULES,
    PG_COPY_TEXT,
    Event,
    ForeignKey,
    Position,
    RowChange,
    SnapshotChunk,
    TablePlan,
)
from warpd.connectors.keycodec import decode_key, encode_key
from warpd.connectors.mysql import copytext
from warpd.connectors.mysql import types as mtypes
from warpd.connectors.mysql.chunks import ChunkReader
from warpd.connectors.mysql.connection import (
    BIND,
    MySQLParams,
    classify,
    connect,
    execute_bound,
    is_transient,
    parse_uri,
    qualified,
    quote_ident,
)
from warpd.connectors.mysql.rowhash import RangeChecksumMethods, RangeQueries
from warpd.errors import FatalError, PositionLostError
from warpd.types import Column, TableSchema

log = logging.getLogger(__name__)

SETUP_HINT = "scripts/setup-databases.sh in the cartridge-warp repository configures a local server this way"


_NO_COLUMNS: dict[str, Any] = {}


def _loose(collation: str | None) -> bool:
    """Whether strings compare equal under ``collation`` without being equal byte for byte.

    Only ``binary`` and the NO PAD binary collations compare exactly; ``_bin``
    ones still ignore trailing spaces (PAD SPACE), ``_ci`` ones case and accents.
    """
    if not collation:
        return False
    name = collation.lower()
    return not (name == "binary" or name.endswith("_nopad_bin") or name.endswith("_0900_bin"))


def default_server_id(schema_name: str) -> int:
    """A replica server id derived from the schema name, unlikely to clash with real servers."""
    return 100_000 + zlib.crc32(schema_name.encode("utf-8")) % 4_000_000


def binlog_order(position: Position) -> tuple[int, int]:
    """Binlog positions in log order (file names end in a sequence number)."""
    return int(str(position["file"]).rsplit(".", 1)[-1]), int(position["pos"])


def _mariadb_snapshot_position(cur: Any) -> tuple[Any, ...] | None:
    cur.execute("SHOW MASTER STATUS")  # fails without BINLOG MONITOR, as the binlog reader would
    if not cur.fetchone():
        return None
    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    try:
        cur.execute("SHOW SESSION STATUS LIKE 'binlog\\_snapshot\\_%'")
        status = {name.lower(): value for name, value in cur.fetchall()}
    finally:
        cur.execute("COMMIT")
    return status.get("binlog_snapshot_file"), status.get("binlog_snapshot_position")


def _mysql_locked_position(cur: Any) -> tuple[Any, ...] | None:
    cur.execute("SET SESSION lock_wait_timeout = 30")  # never queue writers behind a long query for long
    cur.execute("FLUSH TABLES WITH READ LOCK")  # waits for commits in flight to reach the storage engine
    try:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    finally:
        cur.execute("UNLOCK TABLES")
    return tuple(row[:2]) if row else None


class MySQLSource(RangeChecksumMethods):
    """Reads one MySQL/MariaDB database: snapshot and binlog changes."""

    is_transient = staticmethod(is_transient)
    # the server renders snapshot rows as PostgreSQL COPY text (connectors/mysql/copytext.py)
    bulk_formats = frozenset(copytext.FORMATS)

    # decoding a binlog row is light next to the destination's merge of it: overlap the two (base.py)
    pipelined_apply = True

    def __init__(self, uri: str, database: str, *, server_id: int, options: Mapping[str, Any] | None = None):
        self.params: MySQLParams = parse_uri(uri)
        self.database = database
        self.server_id = server_id
        self.options = dict(options or {})
        self._conn: pymysql.connections.Connection | None = None
        self._stream: Any = None
        # table -> binlog position read just after its last copy; see table_copied()
        self.copied_at: dict[str, Position] = {}
        # whether an UPDATE's before image may hold only the key (the engine says; Source in base.py)
        self.update_before_keys_only: Callable[[], bool] = lambda: False

    # -- plumbing ------------------------------------------------------------
    @property
    def conn(self) -> pymysql.connections.Connection:
        if self._conn is None or not self._conn.open:
            self._conn = connect(self.params, "connecting to read table definitions")
            with self._conn.cursor() as cur:
                for stmt in mtypes.SNAPSHOT_SESSION_SQL:
                    cur.execute(stmt)
        return self._conn

    def _query(self, sql: str, args: Any = None, doing: str = "querying") -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        except pymysql.err.MySQLError as exc:
            self.reset()
            raise classify(exc, self.params, doing) from exc

    def reset(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
        self._conn = None

    def close(self) -> None:
        self.reset()
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    # -- checks --------------------------------------------------------------
    def check_prerequisites(self) -> None:
        """Fail with the fix when binlog capture cannot work on this server."""
        where = self.params.redacted
        variables = dict(
            self._query(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', "
                "'binlog_transaction_compression')"
            )
        )
        if str(variables.get("log_bin", "OFF")).upper() not in ("ON", "1"):
            raise FatalError(
                f"MySQL source {where}: the binary log is off. Add `log_bin = mysql-bin`, "
                "`binlog_format = ROW`, `binlog_row_image = FULL` and `binlog_row_metadata = FULL` "
                f"to the server's [mysqld] section and restart it ({SETUP_HINT})."
            )
        wanted = {"binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}
        for name, value in wanted.items():
            actual = str(variables.get(name, "(unsupported)")).upper()
            if actual != value:
                raise FatalError(
                    f"MySQL source {where}: {name} is {actual}, cartridge-warp needs {value}. "
                    f"Run `SET GLOBAL {name} = '{value}'` and add `{name} = {value}` to [mysqld] "
                    f"so it survives a restart ({SETUP_HINT})."
                )
        if str(variables.get("binlog_transaction_compression", "OFF")).upper() in ("ON", "1"):
            # MySQL 8.0.20+: whole transactions become one compressed payload the binlog library
            # cannot read; the reader would stop at the first one anyway (binlog_checks).
            raise FatalError(
                f"MySQL source {where}: binlog_transaction_compression is ON; cartridge-warp cannot "
                "read compressed transaction payloads. Run `SET GLOBAL binlog_transaction_compression "
                "= OFF` and remove it from [mysqld]."
            )
        try:
            self.current_position()
        except FatalError:
            raise
        grants = " ".join(r[0] for r in self._query("SHOW GRANTS FOR CURRENT_USER()")).upper()
        if not any(
            g in grants for g in ("REPLICATION SLAVE", "REPLICATION REPLICA", "ALL PRIVILEGES ON *.*")
        ):
            raise FatalError(
                f"MySQL source {where}: user {self.params.user!r} lacks the REPLICATION SLAVE "
                f"privilege needed to read the binlog; run `GRANT REPLICATION SLAVE, REPLICATION "
                f"CLIENT ON *.* TO '{self.params.user}'@'%'` (BINLOG MONITOR instead of "
                "REPLICATION CLIENT on MariaDB 10.5+)."
            )
        rows = self._query(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (self.database,)
        )
        if not rows:
            raise FatalError(
                f"MySQL source {where}: database {self.database!r} does not exist (or this user "
                "cannot see it); check the schema name or source_database."
            )

    # -- positions -----------------------------------------------------------
    def current_position(self) -> Position:
        """The binlog position up to which every transaction is visible to reads from now on.

        ``SHOW MASTER STATUS`` alone is not that: a transaction is written to the
        binlog before InnoDB makes it visible, so a copy started just after could
        miss it while the stream starts after it.  MariaDB reports the exact pair
        for a consistent snapshot (``binlog_snapshot_file``/``_position``);
        MySQL's binlog position is read under a brief global read lock
        (``FLUSH TABLES WITH READ LOCK``, which needs the RELOAD privilege).
        """
        try:
            with self.conn.cursor() as cur:
                if "mariadb" in self.conn.get_server_info().lower():
                    row = _mariadb_snapshot_position(cur)
                else:
                    row = _mysql_locked_position(cur)
        except pymysql.err.MySQLError as exc:
            self.reset()
            err = classify(exc, self.params, "reading the binlog position (SHOW MASTER STATUS)")
            raise err from exc
        if not row or not row[0]:
            raise FatalError(
                f"MySQL source {self.params.redacted}: SHOW MASTER STATUS returned nothing; the "
                f"binary log is off or this user lacks REPLICATION CLIENT / BINLOG MONITOR "
                f"({SETUP_HINT})."
            )
        return {"file": row[0], "pos": int(row[1])}

    def check_position(self, position: Position) -> None:
        """Raise PositionLostError if the binlog file holding ``position`` was purged."""
        files = [r[0] for r in self._query("SHOW BINARY LOGS", doing="listing binary logs")]
        if position["file"] not in files:
            first = files[0] if files else "(none)"
            raise PositionLostError(
                f"MySQL source {self.params.redacted}: the checkpointed binlog position {position['file']}:"
                f"{position['pos']} is gone (the oldest binlog is {first}; it was purged, e.g. by "
                "expire_logs_days or binlog_expire_logs_seconds). Changes since then cannot be replayed. "
                "Set on_position_lost: resnapshot to re-copy every table automatically, or run once with it, "
                "and keep binlogs longer than the longest outage you want to survive."
            )

    # -- tables --------------------------------------------------------------
    def list_tables(self) -> list[str]:
        rows = self._query(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
            "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (self.database,),
            doing="listing tables",
        )
        return [r[0] for r in rows]

    def table_exists(self, table: str) -> bool:
        return bool(
            self._query(
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (self.database, table),
            )
        )

    def describe(self, table: str, key_columns: tuple[str, ...] | None = None) -> TableSchema:
        try:
            with self.conn.cursor() as cur:
                described = mtypes.describe_columns(cur, self.database, table)
        except pymysql.err.MySQLError as exc:
            self.reset()
            raise classify(exc, self.params, f"describing table {table!r}") from exc
        if not described:
            raise FatalError(f"MySQL source: table {table!r} not found in database {self.database!r}")
        columns = tuple(dataclasses.replace(col, charset=info.charset) for col, info in described)
        if key_columns:
            names = {c.name for c in columns}
            missing = [k for k in key_columns if k not in names]
            if missing:
                raise FatalError(
                    f"table {table!r}: key_columns {missing} are not columns of the table "
                    f"(it has {sorted(names)})"
                )
            key = tuple(key_columns)
        else:
            pk = self._query(
                "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND "
                "TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
                (self.database, table),
            )
            key = tuple(r[0] for r in pk)
        return TableSchema(name=table, columns=columns, key=key)

    def unlogged_cascades(self) -> list[ForeignKey]:
        """Foreign keys of this database's tables with CASCADE / SET NULL actions.

        InnoDB applies those actions inside the storage engine and writes
        nothing about the child rows to the binlog, so a consumer of the
        binlog alone never sees them (see the Source protocol).
        """
        rows = self._query(
            # the referenced table from KEY_COLUMN_USAGE: MariaDB 10.11 shows
            # REFERENTIAL_CONSTRAINTS.REFERENCED_TABLE_NAME as NULL to a user without global privileges
            "SELECT rc.CONSTRAINT_NAME, rc.TABLE_NAME, k.REFERENCED_TABLE_NAME, rc.DELETE_RULE, "
            "rc.UPDATE_RULE, k.COLUMN_NAME, k.REFERENCED_COLUMN_NAME, k.REFERENCED_TABLE_SCHEMA, "
            "c.COLLATION_NAME "
            "FROM information_schema.REFERENTIAL_CONSTRAINTS rc "
            "JOIN information_schema.KEY_COLUMN_USAGE k ON k.CONSTRAINT_SCHEMA = rc.CONSTRAINT_SCHEMA "
            "AND k.CONSTRAINT_NAME = rc.CONSTRAINT_NAME AND k.TABLE_NAME = rc.TABLE_NAME "
            "LEFT JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = k.TABLE_SCHEMA "
            "AND c.TABLE_NAME = k.TABLE_NAME AND c.COLUMN_NAME = k.COLUMN_NAME "
            "WHERE rc.CONSTRAINT_SCHEMA = %s AND (rc.DELETE_RULE IN (%s, %s) OR rc.UPDATE_RULE IN (%s, %s)) "
            "ORDER BY rc.TABLE_NAME, rc.CONSTRAINT_NAME, k.ORDINAL_POSITION",
            (self.database, *CASCADING_RULES, *CASCADING_RULES),
            doing="reading foreign keys",
        )
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for name, table, parent, on_delete, on_update, column, parent_column, parent_db, collation in rows:
            fk = found.setdefault(
                (table, name),
                {
                    "name": name,
                    "table": table,
                    "parent": parent,
                    "on_delete": on_delete,
                    "on_update": on_update,
                    "parent_database": None if parent_db == self.database else parent_db,
                    "columns": [],
                    "parent_columns": [],
                    "loose_collation": None,
                },
            )
            if _loose(collation):
                fk["loose_collation"] = fk["loose_collation"] or collation
            fk["columns"].append(column)
            fk["parent_columns"].append(parent_column)
        return [
            ForeignKey(
                **{**fk, "columns": tuple(fk["columns"]), "parent_columns": tuple(fk["parent_columns"])}
            )
            for fk in found.values()
        ]

    def estimate_rows(self, table: str) -> int:
        rows = self._query(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (self.database, table),
        )
        return int(rows[0][0] or 0) if rows else 0

    # -- verify (RangeChecksums, RangeBounds in base.py; docs/verify.md) ------
    def _ranges(self, plan: TablePlan, columns: Sequence[str] = ()) -> RangeQueries:
        names = {c.name: c.name for c in plan.source.columns}
        return RangeQueries(plan, qualified(self.database, plan.source.name), names, columns)

    def rows_by_key(self, schema: TableSchema, keys: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """The current rows whose key equals one of ``keys`` in the source's comparison (a collation may
        match ``'A'`` to ``'a'``: the caller keeps the exact ones), as a snapshot reads them.  ``verify
        --repair`` reads the differing keys again through it (docs/verify.md)."""
        if not keys:
            return []
        cols = schema.columns
        select = [mtypes.snapshot_select_expr(c, quote_ident(c.name)) for c in cols]
        converters = [mtypes.snapshot_converter(c) for c in cols]
        row_marks = "(" + ", ".join([BIND] * len(schema.key)) + ")"
        query = (
            f"SELECT {', '.join(select)} FROM {qualified(self.database, schema.name)} "  # noqa: S608 - quoted
            f"WHERE ({', '.join(quote_ident(k) for k in schema.key)}) IN ({', '.join([row_marks] * len(keys))})"
        )
        args = [v for key in keys for v in key]
        try:
            with self.conn.cursor() as cur:
                execute_bound(cur, query, args)
                raw = cur.fetchall()
        except pymysql.err.MySQLError as exc:
            raise classify(exc, self.params, f"reading keys of {schema.name!r}") from exc
        return [{c.name: conv(v) for c, conv, v in zip(cols, converters, r, strict=True)} for r in raw]

    # -- snapshot ------------------------------------------------------------
    def snapshot(
        self,
        schema: TableSchema,
        resume_after: Mapping[str, Any] | None,
        chunk_size: int,
        bulk_format: str | None = None,
        copy_text: bool = False,
    ) -> Iterator[SnapshotChunk]:
        """Read ``schema``'s table in primary-key order, ``chunk_size`` rows at a time.

        Each chunk is its own query (no long transaction holding undo logs;
        see :class:`~warpd.connectors.mysql.chunks.ChunkReader`); changes made
        meanwhile are replayed from the binlog afterwards.  A
        keyless table is read in one streaming pass and cannot resume.  With
        ``copy_text`` the server encodes every column it can as PostgreSQL COPY
        text (:mod:`warpd.connectors.mysql.copytext`); keyless tables never
        do, as their row key hashes the canonical encoding.  ``bulk_format``
        :data:`~warpd.connectors.base.MYSQL_LOAD_TEXT` does the same for a MySQL
        destination's ``LOAD DATA``; ``copy_text=True`` is the older spelling of
        ``bulk_format=PG_COPY_TEXT``.
        """
        fmt = bulk_format or (PG_COPY_TEXT if copy_text else None)
        yield from self._read_keyed(schema, resume_after, chunk_size, fmt)

    def read_since(
        self,
        schema: TableSchema,
        cursor_column: str,
        mark: Mapping[str, Any] | None,
        lag: Any,
        chunk_size: int,
        bulk_format: str | None = None,
    ) -> Iterator[SnapshotChunk]:
        """mode: batch: the rows whose ``cursor_column`` is at or after ``mark``'s cursor minus ``lag``,
        in (cursor, key) order; see :class:`~warpd.connectors.base.Source`.

        ``lag`` is a :class:`datetime.timedelta` for a date/time cursor and a number otherwise. Each
        chunk's ``resume_after`` is the next run's mark: ``{"cursor": ..., "key": [...]}``.
        """
        cursor = next((c for c in schema.columns if c.name == cursor_column), None)
        if cursor is None:
            raise FatalError(
                f"MySQL source: table {schema.name!r} has no column {cursor_column!r} (cursor_column); "
                f"its columns: {', '.join(c.name for c in schema.columns)}"
            )
        order = (cursor_column, *(k for k in schema.key if k != cursor_column))
        floor = None
        if mark is not None and mark.get("cursor") is not None:
            floor = mtypes.snapshot_key_value(cursor, decode_key({"key": [mark["cursor"]]})[0])
            if lag:
                floor = floor - lag
        yield from self._read_keyed(
            dataclasses.replace(schema, key=order), None, chunk_size, bulk_format, floor=floor, cursor=True
        )

    def _read_keyed(
        self,
        schema: TableSchema,
        resume_after: Mapping[str, Any] | None,
        chunk_size: int,
        fmt: str | None,
        floor: Any = None,
        cursor: bool = False,
    ) -> Iterator[SnapshotChunk]:
        """Chunks in ``schema.key`` order after ``resume_after``; with ``cursor`` (a batch run), the first
        key column is the cursor, read from ``floor`` on, and each chunk's resume point says so."""
        if fmt is not None and fmt not in copytext.FORMATS:
            raise ValueError(f"the MySQL source encodes no {fmt!r}")
        cols = schema.columns
        fast: list[Column] = []
        if fmt is not None and schema.key:
            fast = [c for c in cols if copytext.copy_text_expr(c, quote_ident(c.name), fmt=fmt) is not None]
        fast_names = {c.name for c in fast}
        slow = [c for c in cols if c.name not in fast_names]
        slow_select = [mtypes.snapshot_select_expr(c, quote_ident(c.name)) for c in slow]
        converters = [mtypes.snapshot_converter(c) for c in slow]
        names = [c.name for c in slow]
        first_slow = 1 if fast else 0
        conn = connect(self.params, f"snapshotting {schema.name!r}", cursorclass=pymysql.cursors.SSCursor)
        try:
            with conn.cursor() as cur:
                for stmt in (
                    *mtypes.SNAPSHOT_SESSION_SQL,
                    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                ):
                    cur.execute(stmt)
            if not schema.key:
                source = qualified(self.database, schema.name)
                yield from self._snapshot_keyless(
                    conn, slow_select, source, names, converters, schema.name, chunk_size
                )
                return
            with conn.cursor(pymysql.cursors.Cursor) as cur:
                cur.execute("SELECT @@max_allowed_packet")
                max_packet = int(cur.fetchone()[0])
            reader = ChunkReader(self.database, schema, fast, slow_select, max_packet, fmt or PG_COPY_TEXT)
            if floor is not None:
                reader.set_floor(floor)
            nkey = len(schema.key)
            key_cols = [c for k in schema.key for c in cols if c.name == k]
            last = None
            if resume_after:
                last = [
                    mtypes.snapshot_key_value(c, v)
                    for c, v in zip(key_cols, decode_key(dict(resume_after)), strict=True)
                ]
            while True:
                try:
                    chunk = reader.read(conn, last, chunk_size)
                except pymysql.err.MySQLError as exc:
                    raise classify(exc, self.params, f"snapshotting {schema.name!r}") from exc
                raw = chunk.raw
                if not raw:
                    yield SnapshotChunk(schema.name, [], resume_after=self._resume(last, cursor), done=True)
                    return
                if slow:
                    rows = [
                        {n: conv(v) for n, conv, v in zip(names, converters, r[first_slow:], strict=False)}
                        for r in raw
                    ]
                else:
                    rows = [_NO_COLUMNS] * len(raw)  # every column is in the encoded line
                last = list(raw[-1][-nkey:])
                done = len(raw) < chunk_size
                if not done and None in last:  # WHERE (key) > (NULL) would end the copy here
                    raise FatalError(
                        f"MySQL source: table {schema.name!r}: key column(s) {list(schema.key)} hold NULL "
                        f"(a chunk ended on key {last!r}), so the copy cannot page past it. Use key_columns "
                        "that are NOT NULL (or a unique NOT NULL index's columns) for this table."
                    )
                yield SnapshotChunk(
                    schema.name,
                    rows,
                    resume_after=self._resume(last, cursor),
                    done=done,
                    encoded=chunk.lines,
                    encoded_columns=tuple(c.name for c in fast),
                )
                if done:
                    return
        finally:
            conn.close()

    @staticmethod
    def _resume(last: list[Any] | None, cursor: bool) -> dict[str, Any] | None:
        if not last:
            return None
        stored = encode_key(last)
        if cursor:  # a batch run's mark: the cursor apart, for the next run's floor and for status
            return {"cursor": stored["key"][0], "key": stored["key"][1:]}
        return stored

    def _snapshot_keyless(
        self,
        conn: Any,
        select: list[str],
        source: str,
        names: list[str],
        converters: list[Any],
        table: str,
        chunk_size: int,
    ) -> Iterator[SnapshotChunk]:
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT {', '.join(select)} FROM {source}")  # noqa: S608 - quoted by quote_ident
                while True:
                    raw = cur.fetchmany(chunk_size)
                    rows = [
                        {n: conv(v) for n, conv, v in zip(names, converters, r, strict=False)} for r in raw
                    ]
                    done = len(raw) < chunk_size
                    yield SnapshotChunk(table, rows, resume_after=None, done=done)
                    if done:
                        return
        except pymysql.err.MySQLError as exc:
            raise classify(exc, self.params, f"snapshotting {table!r}") from exc

    # -- streaming -----------------------------------------------------------
    def table_copied(self, table: str, position: Position | None = None) -> Position:
        """Remember where the binlog stood after ``table`` was copied; see :class:`~warpd.connectors.base.Source`.

        Any DDL on the table that the copy's shape already reflects was logged
        before this position (the shape was read after the DDL committed).
        """
        mark = dict(position) if position is not None else dict(self.current_position())
        self.copied_at[table] = mark
        return mark

    def order_key(self, change: RowChange) -> str:
        """Where ``change`` lies in the binlog, as text that sorts in log order (file sequence number,
        position of its row event, the row's index in it): equal for a change and its replay, and
        different for any two changes (see :class:`~warpd.connectors.base.Source`)."""
        at = change.at or change.position
        file, pos = binlog_order(at)
        return f"{file:010d}.{pos:020d}.{int(at.get('row', 0)):010d}"

    def precedes(self, at: Position, mark: Position) -> bool:
        """Whether the binlog event ending at ``at`` lies at or before ``mark``; see :class:`~warpd.connectors.base.Source`.

        ``mark`` comes from :meth:`current_position`, a transaction boundary, and a
        transaction's events are contiguous in the binlog: a row event ends at or
        before ``mark`` exactly when its transaction committed before it.
        """
        return binlog_order(at) <= binlog_order(mark)

    def stream(
        self,
        start: Position,
        tables: Mapping[str, TableSchema],
        included: Callable[[str], bool],
        key_override: Callable[[str], tuple[str, ...] | None],
        skipped: Callable[[str], bool] = lambda _t: False,
    ) -> Iterator[Event]:
        """Binlog events from ``start``; see :class:`~warpd.connectors.mysql.binlog.BinlogReader`."""
        from warpd.connectors.mysql.binlog import BinlogReader

        reader = BinlogReader(self, start, tables, included, key_override, skipped)
        self._stream = reader
        yield from reader.events()
