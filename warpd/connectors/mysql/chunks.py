"""The queries of a keyed MySQL/MariaDB snapshot: one chunk of rows after a key, in key order.

:class:`ChunkReader` is built once per table copy.  It reads each chunk with
one query (``WHERE (key) > (last) ORDER BY key LIMIT n``), most columns
encoded by the server as COPY text (:mod:`warpd.connectors.mysql.copytext`).
Values the server must not encode come back :data:`~copytext.DEFERRED` and
are read raw by a second query over the same key range, in the same
consistent-snapshot transaction, then encoded in Python.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pymysql

from warpd.connectors.base import PG_COPY_TEXT
from warpd.connectors.mysql import copytext
from warpd.connectors.mysql import types as mtypes
from warpd.connectors.mysql.connection import BIND, execute_bound, qualified, quote_ident
from warpd.errors import FatalError
from warpd.types import Column, Kind, TableSchema

log = logging.getLogger(__name__)

MAX_SERVER_ENCODED_BYTES = 1 << 20
"""Bytes and text values longer than this are always read raw and encoded in Python: the
server's copy of a value a few times its size stays small, and the Python cost is linear."""

_PACKET_OVERFLOW = 1301  # ER_WARN_ALLOWED_PACKET_OVERFLOWED: a function result became NULL


@dataclass(frozen=True)
class _Deferrable:
    field: int  # position in the encoded line
    column: Column
    condition: str  # SQL: true where the line holds DEFERRED instead of the value
    encode: Callable[[Any], str]


@dataclass
class Chunk:
    raw: list[tuple[Any, ...]]  # what the chunk query returned: [line], slow columns, key values
    lines: list[str] | None  # the encoded lines, deferred fields filled in (None without copy text)


class ChunkReader:
    """Reads ``schema``'s table chunk by chunk; see the module docstring.

    ``max_packet`` is the session's ``max_allowed_packet``: the server turns a
    function result longer than that into NULL, so no encoded line may come
    near it.  ``fmt`` is the bulk format of the encoded lines (copytext.FORMATS).
    """

    def __init__(
        self,
        database: str,
        schema: TableSchema,
        fast: Sequence[Column],
        slow_select: list[str],
        max_packet: int,
        fmt: str = PG_COPY_TEXT,
    ):
        self.table = schema.name
        self.source = qualified(database, schema.name)
        keys = [c for k in schema.key for c in schema.columns if c.name == k]
        self.order = ", ".join(quote_ident(k) for k in schema.key)
        self.first = quote_ident(schema.key[0]) if schema.key else ""
        self.key_select = [mtypes.snapshot_key_expr(c, quote_ident(c.name)) for c in keys]
        self.nkey = len(keys)
        long_kinds = sum(1 for c in fast if c.type.kind in (Kind.TEXT, Kind.JSON, Kind.BYTES))
        # Half the packet for the deferrable fields; text may triple (UTF-8, escapes), hex doubles.
        limit = max(1, min(MAX_SERVER_ENCODED_BYTES, max_packet // 2 // (3 * max(1, long_kinds))))
        exprs, self.deferrable = [], []
        for index, col in enumerate(fast):
            quoted = quote_ident(col.name)
            expr = copytext.copy_text_expr(col, quoted, limit, fmt)
            assert expr is not None
            exprs.append(expr)
            condition = copytext.deferral_condition(col, quoted, limit)
            if condition is not None:
                self.deferrable.append(_Deferrable(index, col, condition, copytext.python_encoder(col, fmt)))
        self.encoded = bool(fast)
        self.select = ([copytext.line_expr(exprs)] if fast else []) + slow_select + self.key_select
        # mode: batch reads only the rows whose first "key" column (the cursor) is at or above a floor
        self.floor: tuple[str, tuple[Any, ...]] = ("", ())

    def set_floor(self, value: Any) -> None:
        """Read only rows whose first order column (a batch run's cursor) is ``>= value``."""
        self.floor = (f"{self.key_select[0]} >= {BIND}", (value,))

    def _bound(self, op: str, last: Sequence[Any] | None) -> tuple[str, tuple[Any, ...]]:
        if last is None:
            return "", ()
        return f"({self.order}) {op} ({', '.join([BIND] * self.nkey)})", tuple(last)

    def _lower(self, last: Sequence[Any] | None) -> tuple[str, tuple[Any, ...]]:
        """The chunk's lower bound: after ``last``, and at or above the floor."""
        after, args = self._bound(">", last)
        floor, floor_args = self.floor
        if last is not None and self.nkey > 1:
            # implied by the row comparison, but MariaDB reads an index by a row comparison only through
            # its first column's own bound: without it every chunk of a (cursor, key) read scans the table
            after, args = f"{self.first} >= {BIND} AND {after}", (last[0], *args)
        return " AND ".join(w for w in (floor, after) if w), floor_args + args

    def read(self, conn: Any, last: Sequence[Any] | None, size: int) -> Chunk:
        """The ``size`` rows after key ``last`` (from the start when None)."""
        where, args = self._lower(last)
        # identifiers quoted by quote_ident, values bound: nothing from the source is spliced raw
        query = (
            f"SELECT {', '.join(self.select)} FROM {self.source}"  # noqa: S608
            f"{' WHERE ' + where if where else ''} ORDER BY {self.order} LIMIT {int(size)}"
        )
        with conn.cursor(pymysql.cursors.Cursor) as cur:  # buffered, whatever the connection's default
            if self.deferrable:  # the raw values read later must be those of the rows read now
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            try:
                execute_bound(cur, query, args)
                raw = list(cur.fetchall())
                if cur.warning_count:
                    self._check_warnings(cur, last)
                lines = [r[0] for r in raw] if self.encoded else None
                if lines is not None and self.deferrable and any(copytext.DEFERRED in ln for ln in lines):
                    self._fill_deferred(cur, raw, lines, last)
            finally:
                if self.deferrable:
                    cur.execute("COMMIT")
        return Chunk(raw, lines)

    def _fill_deferred(self, cur: Any, raw: list[tuple[Any, ...]], lines: list[str], last: Any) -> None:
        """Read the deferred values of this chunk raw and put their COPY text into ``lines``."""
        lower, args = self._lower(last)
        upper, upper_args = self._bound("<=", raw[-1][-self.nkey :])
        wanted = " OR ".join(d.condition for d in self.deferrable)
        where = " AND ".join(w for w in (lower, upper, f"({wanted})") if w)
        values = ", ".join(f"IF({d.condition}, {quote_ident(d.column.name)}, NULL)" for d in self.deferrable)
        execute_bound(
            cur,
            f"SELECT {', '.join(self.key_select)}, {values} FROM {self.source} "  # noqa: S608 - quoted
            f"WHERE {where} ORDER BY {self.order}",
            args + upper_args,
        )
        found = list(cur.fetchall())
        marked = [i for i, ln in enumerate(lines) if copytext.DEFERRED in ln]
        if len(found) != len(marked) or any(
            tuple(f[: self.nkey]) != tuple(raw[i][-self.nkey :]) for f, i in zip(found, marked, strict=False)
        ):
            raise FatalError(
                f"MySQL source: table {self.table!r}: the long values of the rows after key {last!r} read "
                "differently from the rows themselves within one consistent-snapshot transaction; is the "
                "table transactional (InnoDB)? Stopping rather than copying a row that never existed."
            )
        for row, index in zip(found, marked, strict=True):
            fields = lines[index].split("\t")  # encoded fields never hold a raw tab
            for d, value in zip(self.deferrable, row[self.nkey :], strict=True):
                if value is not None:
                    fields[d.field] = d.encode(value)
            lines[index] = "\t".join(fields)

    def _check_warnings(self, cur: Any, last: Any) -> None:
        cur.execute("SHOW WARNINGS")
        warnings = list(cur.fetchall())
        for _level, code, message in warnings:
            if int(code) == _PACKET_OVERFLOW:
                raise FatalError(
                    f"MySQL source: table {self.table!r}, rows after key {last!r}: the server could not "
                    f"encode a value ({message}); it would have arrived as NULL. Raise max_allowed_packet "
                    "on the source server (SET GLOBAL max_allowed_packet = 1073741824, and in [mysqld]) "
                    "and restart cartridge-warp; the snapshot resumes at this chunk."
                )
        log.debug("table %r: snapshot chunk warnings: %s", self.table, warnings)
