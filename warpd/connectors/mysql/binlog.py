"""Binlog streaming: row events, commits and DDL, turned into engine events.

Positions: a row event is only a safe place to resume if its transaction's
table-map events come after it, so the reader reports a position only at
transaction boundaries (XID / COMMIT) and after each DDL statement (DDL
commits implicitly).  Row events inside a transaction carry the position of
the transaction's start; the engine checkpoints only boundary positions.

Nothing that carries rows is filtered away unseen: every event class the
reader does not turn into changes is looked at, and one it cannot decode
(or a statement-logged data change, or a partial row image) on a replicated
table stops the schema (:mod:`warpd.connectors.mysql.binlog_checks`).  XA
transactions are held until their XA COMMIT or XA ROLLBACK.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pymysql
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

from warpd.connectors.base import (
    Event,
    Heartbeat,
    Op,
    Position,
    RowChange,
    SchemaChange,
    SchemaOpKind,
    Truncate,
)
from warpd.connectors.mysql import ddl as mddl
from warpd.connectors.mysql import libfixes, rowdecoder
from warpd.connectors.mysql import types as mtypes
from warpd.connectors.mysql.binlog_checks import (
    FIX_ROW_FORMAT,
    FIX_ROW_IMAGE,
    UnreplicableEvent,
    XaTransactions,
    missing_columns,
    undecodable_event,
    unreplicable,
    xa_decision,
)
from warpd.connectors.mysql.connection import classify
from warpd.connectors.mysql.source import binlog_order
from warpd.errors import ConfigError, TransientError
from warpd.types import Column, TableSchema

if TYPE_CHECKING:
    from warpd.connectors.mysql.source import MySQLSource

log = logging.getLogger(__name__)

libfixes.apply()
rowdecoder.install()

# The error a replica reads when the server dropped it for a newer connection with its server_id
# (MariaDB: "A slave with the same server_uuid/server_id is already connected"; MySQL 8: "A replica ...").
_SAME_REPLICA_ID = re.compile(r"same server_uuid/server_id", re.IGNORECASE)
# Rows_log_event flag: the statement ran with foreign_key_checks=0, so InnoDB ran no ON DELETE/UPDATE action
NO_FOREIGN_KEY_CHECKS = 0x0002
# DDL text that may add, drop or rename a foreign key without changing a table's columns
_CONSTRAINT_WORDS = re.compile(r"\b(FOREIGN|REFERENCES|CONSTRAINT)\b", re.IGNORECASE)

# How often a quiet server sends a heartbeat: the engine flushes a waiting batch and moves the
# checkpoint only when an event (or a heartbeat) arrives, so this bounds the latency of a lone change.
HEARTBEAT_SECONDS = 0.2

# MariaDB's GTID event flag for the prepared part of an XA transaction (sql/log_event.h FL_PREPARED_XA).
_FL_PREPARED_XA = 0x40
_ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)


class BinlogReader:
    """Reads the binlog from ``start`` and yields :mod:`warpd.connectors.base` events.

    ``tables`` is the engine's map of replicated table shapes; the reader
    updates it as DDL arrives, so decoding always uses the shape in force at
    that point of the stream.  ``included(name)`` says whether a table (even
    one created later) is replicated; ``key_override(name)`` returns the
    configured key_columns; ``skipped(name)`` says whether a table's changes
    are skipped for now (paused): an event of it that cannot be replicated is
    then dropped instead of stopping the schema.
    """

    def __init__(
        self,
        source: MySQLSource,
        start: Position,
        tables: Mapping[str, TableSchema],
        included: Callable[[str], bool],
        key_override: Callable[[str], tuple[str, ...] | None] = lambda _t: None,
        skipped: Callable[[str], bool] = lambda _t: False,
    ):
        self.source = source
        self.database = source.database
        self.tables = tables
        self.included = included
        self.key_override = key_override
        self.skipped = skipped
        self.file = start["file"]
        self.pos = int(start["pos"])
        # table -> (the shape the converters were built for, converters by column)
        self._converters: dict[str, tuple[TableSchema, dict[str, Callable[[Any], Any]]]] = {}
        self._stream: BinLogStreamReader | None = None
        self._txn_start: Position = {"file": self.file, "pos": self.pos}
        self._in_txn = False
        self._xa = XaTransactions()
        self._xa_rows: list[Event] | None = None  # rows of an XA transaction being prepared
        # session (thread id) -> its temporary tables seen created in the stream, see _without_temporary
        self._temporary: dict[int | None, set[tuple[str, str]]] = {}

    # -- setup ---------------------------------------------------------------
    def _open(self) -> BinLogStreamReader:
        p = self.source.params
        settings = {
            "host": p.host,
            "port": p.port,
            "user": p.user,
            "passwd": p.password_bytes,
            "connect_timeout": 10,
        }
        return BinLogStreamReader(
            connection_settings=settings,
            server_id=self.source.server_id,
            resume_stream=True,
            log_file=self.file,
            log_pos=self.pos,
            blocking=True,
            slave_heartbeat=HEARTBEAT_SECONDS,
            # Every class that can carry rows or end a transaction, NotImplementedEvent included:
            # what is not listed here is dropped unseen by the library.
            only_events=[
                WriteRowsEvent,
                UpdateRowsEvent,
                DeleteRowsEvent,
                PartialUpdateRowsEvent,
                QueryEvent,
                ExecuteLoadQueryEvent,
                XidEvent,
                XAPrepareEvent,
                MariadbGtidEvent,
                RotateEvent,
                HeartbeatLogEvent,
                NotImplementedEvent,
                *libfixes.COMPRESSED_EVENTS.values(),
            ],
            filter_non_implemented_events=False,
            enable_logging=False,  # is_mariadb=True would ignore log_file/log_pos (GTID mode)
            # Table maps (and so rows) of other databases are skipped unparsed: a table elsewhere
            # on the server that the library cannot decode must not stop this schema.  Query
            # events are not filtered by it, so DDL naming this database from another stays seen.
            only_schemas=[self.database],
        )

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001 - closing a broken stream
                pass
            self._stream = None

    def converters(self, table: str) -> dict[str, Callable[[Any], Any]]:
        shape = self.tables[table]
        cached = self._converters.get(table)
        if cached is None or cached[0] is not shape:  # the engine may have re-described the table
            cached = (
                shape,
                {
                    c.name: mtypes.binlog_converter(c, mtypes.MySQLColumnInfo(c.name, charset=c.charset))
                    for c in shape.columns
                },
            )
            self._converters[table] = cached
        return cached[1]

    def _set_table(self, name: str, schema: TableSchema | None) -> None:
        """``name`` takes shape ``schema`` (None: gone) with the change about to be reported.

        The engine owns the map of shapes and applies the reported
        :class:`SchemaChange` before asking for the next event; the reader
        only forgets what it derived from the old shape.
        """
        self._converters.pop(name, None)

    # -- the loop ------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        self._stream = self._open()
        try:
            while True:
                try:
                    ev = self._stream.fetchone()
                except (pymysql.err.MySQLError, OSError, ConnectionError) as exc:
                    if _SAME_REPLICA_ID.search(str(exc)):
                        raise self._evicted() from exc
                    raise TransientError(
                        str(classify(exc, self.source.params, "reading the binlog"))
                    ) from exc
                except AttributeError as exc:  # pymysqlreplication after a dropped socket
                    raise TransientError(f"binlog connection lost: {exc}") from exc
                except libfixes.CompressedEventError as exc:
                    # the library reports no position for an event it failed on: the last one read
                    raise self._stop(
                        f"an event after binlog {self.file}:{self.pos} that cannot be inflated ({exc})",
                        None,
                        {"file": self.file, "pos": self.pos},
                        "check the server's binlog (mysqlbinlog from that position); "
                        "turn log_bin_compress off if it is on.",
                    ) from exc
                if ev is None:
                    continue
                self.file = self._stream.log_file
                self.pos = self._stream.log_pos
                here = {"file": self.file, "pos": self.pos}
                if isinstance(ev, _ROW_EVENTS):
                    self._in_txn = True
                    for change in self._rows(ev, here):
                        if self._xa_rows is not None:
                            self._xa_rows.append(change)
                        else:
                            yield change
                elif isinstance(ev, XidEvent):
                    yield from self._end_xa_part(here)  # XA COMMIT ... ONE PHASE ends with an XID
                    self._commit(here)
                    yield self._boundary(here, float(ev.timestamp))
                elif isinstance(ev, QueryEvent):
                    yield from self._query(ev, here)
                elif isinstance(ev, MariadbGtidEvent):
                    self._xa_rows = [] if ev.flags & _FL_PREPARED_XA else None
                elif isinstance(ev, XAPrepareEvent):
                    yield from self._xa_prepared(ev, here)
                elif isinstance(ev, ExecuteLoadQueryEvent):
                    # LOAD DATA logged as a statement; the library does not read its text or database
                    self._statement_dml(ev, None, here)
                elif isinstance(ev, HeartbeatLogEvent):
                    yield Heartbeat(
                        position=None if self._in_txn else self._safe(here),
                        source_ts=None if self._in_txn else time.time(),
                    )
                elif isinstance(ev, NotImplementedEvent):
                    self._undecodable(ev, here)
                elif isinstance(ev, RotateEvent):
                    # A server restart starts a new file and reuses thread ids: a temporary table whose
                    # DROP was never logged must not hide a later session's real table of that name.
                    self._temporary.clear()
        finally:
            self.close()

    def _commit(self, here: Position) -> None:
        self._in_txn = False
        self._txn_start = dict(here)
        self._xa_rows = None

    def _safe(self, here: Position) -> Position:
        """``here``, or the start of the oldest XA transaction still undecided (its rows are held)."""
        return self._xa.hold() or here

    def _boundary(self, here: Position, ts: float) -> Heartbeat:
        return Heartbeat(position=self._safe(here), source_ts=ts)

    def _rows(self, ev: Any, here: Position) -> list[RowChange | SchemaChange]:
        if ev.schema != self.database or ev.table not in self.tables:
            return []
        try:
            return list(self._decode_rows(ev, here))
        except UnreplicableEvent as exc:
            if not self.skipped(ev.table):
                raise
            # Paused: its changes are skipped anyway and it is copied again on resume.  The rows are
            # still decoded first, as a paused parent's changes drive foreign-key actions on its children.
            log.warning(
                "%s.%s is paused; skipping an event it cannot replicate: %s", self.database, ev.table, exc
            )
            return []

    def _decode_rows(self, ev: Any, here: Position) -> Iterator[RowChange | SchemaChange]:
        table = ev.table
        if isinstance(ev, PartialUpdateRowsEvent):
            raise self._stop(
                "a partial JSON update (binlog_row_value_options=PARTIAL_JSON)",
                table,
                here,
                "set binlog_row_value_options to '' globally and in every session.",
            )
        convs = self.converters(table)
        ts = float(ev.timestamp)
        pos = self._txn_start
        if isinstance(ev, UpdateRowsEvent) and self.source.update_before_keys_only():
            key = self.tables[table].key
            if key:  # the old key is all the engine reads of the before image (rowdecoder.py)
                ev._warp_before_columns = frozenset(key)
        try:
            rows = ev.rows
        except (pymysql.err.MySQLError, OSError):
            raise  # the library's control connection: transient
        except Exception as exc:  # noqa: BLE001 - whatever the library failed on, name table and position
            raise self._stop(
                f"a row event that cannot be decoded ({type(exc).__name__}: {exc})",
                table,
                here,
                "correct or delete the row at the source (later events then carry a decodable value).",
            ) from exc
        checks = not (getattr(ev, "flags", 0) & NO_FOREIGN_KEY_CHECKS)
        for index, row in enumerate(rows):
            at = {**here, "row": index}  # the row's place in the log (MySQLSource.order_key)
            try:
                if isinstance(ev, WriteRowsEvent):
                    after = self._image(table, convs, row["values"], row.get("none_sources"), here)
                    yield RowChange(table, Op.INSERT, None, after, pos, ts, foreign_key_checks=checks, at=at)
                elif isinstance(ev, DeleteRowsEvent):
                    before = self._image(table, convs, row["values"], row.get("none_sources"), here)
                    yield RowChange(table, Op.DELETE, before, None, pos, ts, foreign_key_checks=checks, at=at)
                else:
                    before = self._image(
                        table, convs, row["before_values"], row.get("before_none_sources"), here
                    )
                    after = self._image(
                        table, convs, row["after_values"], row.get("after_none_sources"), here
                    )
                    yield RowChange(
                        table, Op.UPDATE, before, after, pos, ts, foreign_key_checks=checks, at=at
                    )
            except _UnknownColumn as unknown:
                # the engine copies the table again, unless its copy holds this event (engine/runner.py)
                log.debug(
                    "table %r: row event carries column %r unknown to the replicated shape",
                    table,
                    unknown.args[0],
                )
                yield SchemaChange(
                    table,
                    SchemaOpKind.RESYNC_TABLE,
                    position=pos,
                    statement=f"(row event with unknown column {unknown.args[0]!r})",
                    source_ts=ts,
                    at=here,
                )
                return

    def _image(
        self,
        table: str,
        convs: dict[str, Callable[[Any], Any]],
        values: dict[str, Any],
        none_sources: dict[str, str] | None,
        here: Position,
    ) -> dict[str, Any]:
        """One full, canonical row image; a partial one (MINIMAL/NOBLOB) stops the schema."""
        for name in values:
            if name not in convs:
                raise _UnknownColumn(name)
        missing = missing_columns(none_sources)
        if missing:
            # Upserting it would null the missing columns, and a missing key would read as a key change.
            raise self._stop(
                f"a partial row image without columns {missing} (binlog_row_image MINIMAL or NOBLOB)",
                table,
                here,
                FIX_ROW_IMAGE,
            )
        try:
            image = mtypes.binlog_image(values, none_sources, convs)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise self._stop(
                f"a row value that cannot be converted ({exc})",
                table,
                here,
                "correct or delete the row at the source (later events then carry a convertible value).",
            ) from exc
        return image

    def _stop(self, what: str, table: str | None, here: Position, fix: str) -> UnreplicableEvent:
        return unreplicable(what, self.database, table, here, self._txn_start, fix)

    def _evicted(self) -> ConfigError:
        """The server dropped this connection for another replica with our id: reconnecting evicts that
        one in turn, forever (MariaDB and MySQL both do so), so it is a configuration error."""
        sid = self.source.server_id
        return ConfigError(
            f"another replica connected to the source with this schema's server_id {sid} (database "
            f"{self.database}, at binlog {self.file}:{self.pos}), and two replicas with one id evict each "
            "other. Give every process its own id: list every schema in the configuration file (schema i "
            "uses source.server_id + i), or set source.server_id per process "
            "(CARTRIDGE_WARP_SOURCE__SERVER_ID), or leave it unset to derive one from the schema's name; "
            "keep the ids clear of other servers' and replicas'."
        )

    # -- events that must not pass unseen ----------------------------------------
    def _undecodable(self, ev: Any, here: Position) -> None:
        found = undecodable_event(ev.event_type)
        if found is not None:
            what, fix = found
            raise self._stop(what, None, here, fix)

    def _statement_dml(self, ev: Any, statement: str | None, here: Position) -> None:
        """A data change logged as a statement (binlog_format STATEMENT/MIXED) that touches a replicated table."""
        schema = getattr(ev, "schema", None)
        default_db = schema.decode("utf-8", "replace") if isinstance(schema, bytes) else schema
        targets = mddl.dml_targets(statement, default_db or None) if statement is not None else None
        if targets is None:  # cannot tell which tables: assume the session's database
            ours = (
                statement is None or default_db == self.database or self.database.lower() in statement.lower()
            )
            tables: list[str | None] = [None] if ours else []
        else:
            # A view writes the table under it, which the statement does not name: a view of this
            # database counts as ours (an excluded or temporary table does not).
            temporary = self._temporary.get(getattr(ev, "slave_proxy_id", None), set())
            tables = [
                t
                for db, t in targets
                if db == self.database and (db, t) not in temporary and (t in self.tables or self._is_view(t))
            ]
        for table in tables:
            if table is not None and self.skipped(table):
                continue
            shown = repr(statement[:120]) if statement is not None else "LOAD DATA"
            raise self._stop(f"a data change logged as a statement ({shown})", table, here, FIX_ROW_FORMAT)

    def _is_view(self, name: str) -> bool:
        """Whether *name* is a view of this database now (asked only for statement-logged DML)."""
        return bool(
            self.source._query(
                "SELECT 1 FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (self.database, name),
                "checking whether a statement writes through a view",
            )
        )

    # -- XA ----------------------------------------------------------------------
    def _end_xa_part(self, here: Position) -> Iterator[Event]:
        rows, self._xa_rows = self._xa_rows, None
        yield from rows or ()

    def _xa_prepared(self, ev: Any, here: Position) -> Iterator[Event]:
        rows, self._xa_rows = self._xa_rows or [], None
        if ev.one_phase:  # XA COMMIT ... ONE PHASE: an ordinary commit
            yield from rows
        else:
            self._xa.prepared((ev.xid_format_id, ev.xid_gtrid, ev.xid_bqual), self._txn_start, rows)
        self._commit(here)
        yield self._boundary(here, float(ev.timestamp))

    def _xa_decided(self, verb: str, xid: Any, statement: str, here: Position, ts: float) -> Iterator[Event]:
        rows = self._xa.decide(xid)
        if rows is None and verb == "COMMIT":
            # Prepared before this stream's start (e.g. before the snapshot, which could not see its rows):
            # which tables it changed is unknown, so every replicated table is copied again.
            log.warning(
                "%s at %s commits an XA transaction prepared before the stream's start; its rows are not "
                "in the stream from here, so every replicated table is copied again",
                statement[:100],
                here,
            )
            for table in sorted(self.tables):
                yield SchemaChange(table, SchemaOpKind.RESYNC_TABLE, here, statement, source_ts=ts)
        elif verb == "COMMIT":
            # the rows were logged with the prepare, but take effect here (what a copy orders them by)
            for index, change in enumerate(rows or ()):
                if isinstance(change, RowChange):
                    yield dataclasses.replace(change, at={**here, "row": index})
                elif isinstance(change, SchemaChange):
                    yield dataclasses.replace(change, at=here)
                else:
                    yield change
        self._commit(here)
        yield self._boundary(here, ts)

    # -- statements ----------------------------------------------------------
    def _query(self, ev: Any, here: Position) -> Iterator[Event]:
        statement = ev.query if isinstance(ev.query, str) else ev.query.decode("utf-8", "replace")
        kind = mddl.classify(statement)
        if kind == "transaction":
            head = statement.lstrip()[:12].upper()
            decided = xa_decision(statement)
            if decided is not None:
                yield from self._xa_decided(*decided, statement, here, float(ev.timestamp))
            elif head.startswith("XA START") or head.startswith("XA BEGIN"):
                self._xa_rows = []  # MySQL logs XA START; MariaDB flags the GTID event instead
            elif head.startswith("COMMIT"):
                self._commit(here)
                yield self._boundary(here, float(ev.timestamp))
            return
        if kind == "dml":
            self._statement_dml(ev, statement, here)
            return
        if kind not in ("ddl", "truncate"):
            return
        default_db = ev.schema.decode("utf-8", "replace") if isinstance(ev.schema, bytes) else ev.schema
        parsed = self._without_temporary(mddl.parse_ddl(statement, default_db or None), ev)
        if parsed is None:
            return  # about a temporary table only: session-private, never replicated
        ts = float(ev.timestamp)
        self._commit(here)  # DDL commits implicitly; positions after it are safe
        ours = [(db, t) for db, t in parsed.tables if db == self.database]
        if parsed.statement == "DROP DATABASE" and self.database in parsed.databases:
            for table in list(self.tables):
                self._set_table(table, None)
                yield SchemaChange(
                    table, SchemaOpKind.DROP_TABLE, here, statement, old_name=table, source_ts=ts
                )
            yield self._boundary(here, ts)
            return
        for db, table in parsed.truncates:
            if db == self.database and table in self.tables:
                yield Truncate(table, position=here, source_ts=ts)
        if not parsed.understood or parsed.primary_key_changed:
            for _db, table in ours:
                if table in self.tables or (not parsed.primary_key_changed and self.included(table)):
                    log.warning(
                        "re-copying %r: its DDL cannot be followed in place (%s): %s",
                        table,
                        parsed.reason or "primary key changed",
                        statement[:200],
                    )
                    yield SchemaChange(
                        table, SchemaOpKind.RESYNC_TABLE, position=here, statement=statement, source_ts=ts
                    )
            yield self._boundary(here, ts)
            return
        for op in parsed.ops:
            yield from self._ddl_op(op, statement, here, ts)
        if ours and not parsed.ops and _CONSTRAINT_WORDS.search(statement):
            # e.g. ALTER TABLE ... ADD FOREIGN KEY: no shape change, but cascades may have changed
            yield SchemaChange(ours[0][1], SchemaOpKind.FOREIGN_KEYS, here, statement, source_ts=ts)
        yield self._boundary(here, ts)

    def _without_temporary(self, parsed: mddl.ParsedDdl, ev: Any) -> mddl.ParsedDdl | None:
        """*parsed* without what it does to the temporary tables of the event's session.

        Under statement-based logging a session's temporary table may shadow a replicated table of the
        same name: its TRUNCATE or ALTER, logged as ``TRUNCATE TABLE t``, must not reach the real ``t``.
        The temporary tables are followed per session (thread id) from their CREATE to their DROP.
        None when the statement touches temporary tables only.
        """
        thread = getattr(ev, "slave_proxy_id", None)
        temporary = self._temporary.setdefault(thread, set())
        if parsed.temporary:
            if parsed.statement.startswith("CREATE"):
                temporary.update(parsed.temporary)
            else:
                temporary.difference_update(parsed.temporary)
            if not temporary:
                self._temporary.pop(thread, None)
            return None
        if not temporary:
            self._temporary.pop(thread, None)
            return parsed
        ops = []
        named = set(temporary)  # the statement's names of temporary tables, old and new
        for op in parsed.ops:
            if (op.database, op.table) not in temporary:
                ops.append(op)
            elif op.kind == SchemaOpKind.RENAME_TABLE and op.new_name:  # it goes on under its new name
                temporary.discard((op.database, op.table))
                temporary.add((op.new_database or op.database, op.new_name))
                named.add((op.new_database or op.database, op.new_name))
        tables = tuple(t for t in parsed.tables if t not in named)
        if not tables and parsed.tables:
            return None
        return dataclasses.replace(
            parsed,
            ops=tuple(ops),
            truncates=tuple(t for t in parsed.truncates if t not in named),
            tables=tables,
        )

    def _ddl_op(self, op: Any, statement: str, here: Position, ts: float) -> Iterator[Event]:
        K = SchemaOpKind
        if op.kind == K.RENAME_TABLE:
            yield from self._rename_table(op, statement, here, ts)
            return
        if op.database != self.database:
            return
        table = op.table
        current = self.tables.get(table)
        if op.kind == K.CREATE_TABLE:
            if not self.included(table):
                return
            if op.if_exists and current is not None:
                # CREATE TABLE IF NOT EXISTS on a table that exists did nothing (MySQL still logs it):
                # the table keeps the shape it has, whatever the statement's column list says.
                return
            if op.columns and not op.like:
                key = self.key_override(table) or tuple(op.primary_key)
                schema = TableSchema(table, tuple(_column(c) for c in op.columns), key)
                self._set_table(table, schema)
                yield SchemaChange(table, K.CREATE_TABLE, here, statement, schema=schema, source_ts=ts)
            else:
                yield SchemaChange(table, K.RESYNC_TABLE, here, statement, source_ts=ts)
            return
        if current is None:
            return  # not replicated: never disturbs the stream
        if op.kind == K.DROP_TABLE:
            self._set_table(table, None)
            yield SchemaChange(table, K.DROP_TABLE, here, statement, old_name=table, source_ts=ts)
            return
        if self._copied_after(table, here):
            # The table was (re)copied after this statement ran: its shape already has the change,
            # and rows replayed from before it carry values the statement may have rewritten
            # (defaults, truncation), so only a new copy is exact.
            yield SchemaChange(table, K.RESYNC_TABLE, here, statement, source_ts=ts)
            return
        cols = list(current.columns)
        names = [c.name for c in cols]
        if op.kind == K.ADD_COLUMN:
            if op.column.name in names:
                return
            if op.column.has_default or not op.column.nullable or op.column.generated:
                # MySQL fills existing rows without writing row events: copy them again
                yield SchemaChange(table, K.RESYNC_TABLE, here, statement, source_ts=ts)
                return
            new_col = _column(op.column)
            if op.first:
                cols.insert(0, new_col)
            elif op.after and op.after in names:
                cols.insert(names.index(op.after) + 1, new_col)
            else:
                cols.append(new_col)
            schema = TableSchema(table, tuple(cols), current.key)
            self._set_table(table, schema)
            yield SchemaChange(
                table, K.ADD_COLUMN, here, statement, schema=schema, column=new_col, source_ts=ts
            )
        elif op.kind == K.DROP_COLUMN:
            name = op.old_name
            if name not in names:
                return
            if name in current.key:
                yield SchemaChange(table, K.RESYNC_TABLE, here, statement, source_ts=ts)
                return
            schema = TableSchema(table, tuple(c for c in cols if c.name != name), current.key)
            self._set_table(table, schema)
            yield SchemaChange(
                table, K.DROP_COLUMN, here, statement, schema=schema, old_name=name, source_ts=ts
            )
        elif op.kind in (K.MODIFY_COLUMN, K.RENAME_COLUMN):
            old = op.old_name or (op.column.name if op.column else None)
            if old not in names:
                return
            prior = cols[names.index(old)]
            new_name = op.new_name or (op.column.name if op.column else old)
            new_col = (
                _column(op.column)
                if op.column
                else Column(
                    new_name, prior.type, prior.nullable, prior.source_type, prior.generated, prior.charset
                )
            )
            cols[names.index(old)] = new_col
            key = tuple(new_name if k == old else k for k in current.key)
            schema = TableSchema(table, tuple(cols), key)
            self._set_table(table, schema)
            yield SchemaChange(
                table,
                op.kind,
                here,
                statement,
                schema=schema,
                column=new_col,
                old_name=old,
                new_name=new_name,
                source_ts=ts,
            )

    def _copied_after(self, table: str, here: Position) -> bool:
        """Whether ``table`` was last copied after the event that ends at ``here``."""
        mark = self.source.copied_at.get(table)
        if mark is None:
            return False
        if binlog_order(here) <= binlog_order(mark):
            return True
        del self.source.copied_at[table]  # the stream has caught up with the copy
        return False

    def _rename_table(self, op: Any, statement: str, here: Position, ts: float) -> Iterator[Event]:
        K = SchemaOpKind
        old_ours = op.database == self.database and op.table in self.tables
        new_db = op.new_database or op.database
        new_ours = new_db == self.database and self.included(op.new_name)
        if old_ours and new_ours:
            schema = TableSchema(op.new_name, self.tables[op.table].columns, self.tables[op.table].key)
            self._set_table(op.table, None)
            self._set_table(op.new_name, schema)
            yield SchemaChange(
                op.table,
                K.RENAME_TABLE,
                here,
                statement,
                schema=schema,
                old_name=op.table,
                new_name=op.new_name,
                source_ts=ts,
            )
        elif old_ours:
            self._set_table(op.table, None)
            yield SchemaChange(op.table, K.DROP_TABLE, here, statement, old_name=op.table, source_ts=ts)
        elif new_ours:
            yield SchemaChange(op.new_name, K.RESYNC_TABLE, here, statement, source_ts=ts)


class _UnknownColumn(Exception):
    pass


def _column(c: Any) -> Column:
    return Column(
        name=c.name,
        type=mtypes.column_type(c.type_sql, is_json=c.type_sql.upper().startswith("JSON")),
        nullable=c.nullable,
        source_type=c.type_sql.lower(),
        generated=c.generated,
        charset=c.charset,
    )
