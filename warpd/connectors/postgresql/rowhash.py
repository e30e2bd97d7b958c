"""Key-range checksums for ``verify`` in PostgreSQL, computed by the server (the destination).

The same canonical rendering, row hash and range checksum as MySQL/MariaDB
(warpd/connectors/mysql/rowhash.py, docs/verify.md): the session's TimeZone
is UTC, so date-times render as UTC; a range's checksum is the row count and
the exact ``numeric`` sum of the first 60 bits of every row's MD5.  ``-infinity``
(a MySQL zero date in a NOT NULL column) renders as ``-infinity``, as the
MySQL side renders a zero date there.  A double renders exactly as its
significand and binary exponent, as MySQL's does (``base.exact_double``); real,
JSON and text-array values are returned as values (:meth:`RangeQueries.values`)
for verify to render.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg2 import errors, sql

from warpd.connectors.base import (
    DELETED_AT_COLUMN,
    RangeBound,
    RangeRows,
    RangeValues,
    TablePlan,
    exact_double,
    verify_key_kind,
)
from warpd.connectors.postgresql.types import pg_type_sql
from warpd.connectors.rowhash import FIELD_END, RECORD_END, unpack_values
from warpd.types import Column, Kind

_COUNT_ONLY = sql.SQL("count(*), 0")
"""A packed read's sums without a checksum (the values alone are wanted)."""


def _double(q: sql.Composable) -> sql.Composable:
    """A double as MySQL's rowhash renders a DOUBLE (base.exact_double), NaN and infinities as
    words: read from the value's IEEE 754 bits (``float8send``), as integers, where MySQL has to
    compute them (it has no such function).  A normal value's significand is its 52 stored bits
    and the implicit leading one, its exponent the stored one less the bias; a subnormal's
    significand is shifted up until its leading one is bit 52, its exponent lowered as much.
    About half the time of computing ``e`` from ``ln`` and ``m`` with ``power`` (as MySQL does)."""
    x = sql.SQL("({}::float8)").format(q)
    bits = sql.SQL("('x' || encode(float8send(abs({})), 'hex'))::bit(64)::bigint").format(x)
    lead = sql.SQL("(64 - position(B'1' in ({})::bit(64)))").format(bits)  # a subnormal's top bit
    m_e = sql.SQL(
        "CASE WHEN abs({0}) >= 2.2250738585072014e-308 "
        "THEN ((({1}) & 4503599627370495) | 4503599627370496)::text || 'p' || ((({1}) >> 52) - 1023)::text "
        "ELSE (({1}) << (52 - {2}))::text || 'p' || ({2} - 1074)::text END"
    ).format(x, bits, lead)
    return sql.SQL(
        "CASE WHEN {0} = 'NaN' THEN 'NaN' WHEN {0} = 'Infinity' THEN 'Infinity' "
        "WHEN {0} = '-Infinity' THEN '-Infinity' WHEN {0} = 0 THEN '0' "
        "ELSE CASE WHEN {0} < 0 THEN '-' ELSE '' END || {1} END"
    ).format(x, m_e)


def _decimal(col: Column, q: sql.Composable) -> sql.Composable:
    """Trailing fractional zeros (and a bare point) trimmed: a numeric the destination declares with a
    scale above zero (types.pg_type_sql) always renders with a point (NaN and the infinities hold no
    trailing zero or point), one of scale zero never; in an unconstrained numeric, the point is looked for."""
    if pg_type_sql(col.type).startswith("numeric("):
        text = "rtrim(rtrim({}::text, '0'), '.')" if (col.type.scale or 0) > 0 else "{}::text"
        return sql.SQL(text).format(q)
    return sql.SQL(
        "CASE WHEN position('.' in {0}::text) > 0 THEN rtrim(rtrim({0}::text, '0'), '.') ELSE {0}::text END"
    ).format(q)


def _text(col: Column, q: sql.Composable) -> sql.Composable:
    kind = col.type.kind
    if exact_double(col):
        return _double(q)
    if kind in (Kind.INT, Kind.UUID, Kind.TEXT, Kind.BITS):
        return sql.SQL("{}::text").format(q)
    if kind is Kind.DECIMAL:
        return _decimal(col, q)
    if kind is Kind.BYTES:
        return sql.SQL("upper(encode({}, 'hex'))").format(q)
    if kind is Kind.BOOLEAN:
        return sql.SQL("CASE WHEN {0} THEN '1' WHEN NOT {0} THEN '0' END").format(q)  # NULL stays NULL
    if kind is Kind.DATE:
        return sql.SQL("CASE WHEN isfinite({0}) THEN to_char({0}, 'YYYY-MM-DD') ELSE {0}::text END").format(q)
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return sql.SQL(
            "CASE WHEN isfinite({0}) THEN to_char({0}, 'YYYY-MM-DD HH24:MI:SS.US') ELSE {0}::text END"
        ).format(q)
    if kind is Kind.TIME:  # held as an interval (MySQL TIME runs past 24 hours and below zero)
        return sql.SQL("round(extract(epoch FROM {}) * 1000000)::bigint::text").format(q)
    raise ValueError(f"verify: no rendering of {col.type.describe()}")


def _part(col: Column, q: sql.Composable) -> sql.Composable:
    if col.type.kind is Kind.TEXT:  # the one rendering that may hold a comma: prefixed by its length
        return sql.SQL(
            "CASE WHEN {0} IS NULL THEN 'N' ELSE octet_length({0}::text) || ':' || {0}::text END"
        ).format(q)
    return sql.SQL("coalesce({}, 'N')").format(_text(col, q))


def _order(col: Column, q: sql.Composable) -> sql.Composable:
    if col.type.kind in (Kind.TEXT, Kind.UUID):
        return sql.SQL("convert_to({}, 'UTF8')").format(_text(col, q))
    return q


class RangeQueries:
    """The verify queries over ``plan``'s destination table (live rows only) for the source ``columns``."""

    def __init__(self, plan: TablePlan, columns: Sequence[str]):
        by_name = {c.name: c for c in plan.source.columns}
        keys = [by_name[k] for k in plan.source.key]
        for k in keys:
            verify_key_kind(plan, k)
        self.table = sql.Identifier(plan.dest_schema, plan.dest_table)
        self.live = (
            sql.SQL("{} IS NULL").format(sql.Identifier(DELETED_AT_COLUMN)) if plan.soft_delete else None
        )
        ident = {c.name: sql.Identifier(plan.columns[c.name]) for c in plan.source.columns}
        self.nkey = len(keys)
        self.by_name, self.ident = by_name, ident
        self.order = sql.SQL(", ").join(_order(c, ident[c.name]) for c in keys)
        self.key_text = [_text(c, ident[c.name]) for c in keys]
        parts = [_part(by_name[n], ident[n]) for n in columns] or [sql.SQL("''")]
        self.row = sql.SQL("concat_ws(',', {})").format(sql.SQL(", ").join(parts))
        self.row_hash = sql.SQL("md5({})").format(self.row)

    def _where(self, lower: RangeBound, upper: RangeBound) -> tuple[sql.Composable, tuple[Any, ...]]:
        conds: list[sql.Composable] = [self.live] if self.live is not None else []
        args: tuple[Any, ...] = ()
        marks = sql.SQL(", ").join([sql.Placeholder()] * self.nkey)
        for op, bound in ((">", lower), ("<=", upper)):
            if bound is not None:
                conds.append(sql.SQL("ROW({}) {} ROW({})").format(self.order, sql.SQL(op), marks))
                args += tuple(bound)
        if not conds:
            return sql.SQL(""), args
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conds), args

    def _sums(self, digest: bool = False) -> sql.Composable:
        """The range's row count and checksum: the sum of its rows' hashes' first 60 bits, or
        (``digest``, base.RangeChecksums) those of the MD5 of its rows' renderings in key order."""
        if digest:
            return sql.SQL(
                "count(*), coalesce(('x' || left(md5(string_agg({}, ',' ORDER BY {})), 15))::bit(60)::bigint, 0)"
            ).format(self.row, self.order)
        return sql.SQL("count(*), coalesce(sum(('x' || left({}, 15))::bit(60)::bigint), 0)").format(
            self.row_hash
        )

    def checksum(
        self, conn: Any, lower: RangeBound, upper: RangeBound, *, digest: bool = False
    ) -> tuple[int, int | None]:
        where, args = self._where(lower, upper)
        query = sql.SQL("SELECT {} FROM {}{}").format(self._sums(digest), self.table, where)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(query, args)
                count, total = cur.fetchone()
        except (errors.OutOfMemory, errors.ProgramLimitExceeded):  # the rows joined past 1 GB
            if not digest:
                raise
            return self.checksum(conn, lower, upper)[0], None
        return int(count), int(total)

    def rows(self, conn: Any, lower: RangeBound, upper: RangeBound) -> RangeRows:
        where, args = self._where(lower, upper)
        query = sql.SQL("SELECT {}, {} FROM {}{}").format(
            sql.SQL(", ").join(self.key_text), self.row_hash, self.table, where
        )
        with conn, conn.cursor() as cur:
            cur.execute(query, args)
            return [(tuple(r[: self.nkey]), str(r[self.nkey])) for r in cur.fetchall()]

    def values(
        self, conn: Any, columns: Sequence[str], lower: RangeBound, upper: RangeBound, *, packed: bool = True
    ) -> RangeValues:
        """Each row's key (rendered) and the values of FLOAT, JSON and text-array ``columns``
        (base.RangeValues): JSON as its text, read back from ``jsonb``."""
        if packed and self._all_json(columns):
            found = self._packed(conn, columns, lower, upper)
            if found is not None:
                return found[2]
        exprs = [
            sql.SQL("{}::text").format(self.ident[n])
            if self.by_name[n].type.kind is Kind.JSON
            else self.ident[n]
            for n in columns
        ]
        where, args = self._where(lower, upper)
        query = sql.SQL("SELECT {} FROM {}{}").format(
            sql.SQL(", ").join([*self.key_text, *exprs]), self.table, where
        )
        with conn, conn.cursor() as cur:
            cur.execute(query, args)
            return [(tuple(r[: self.nkey]), tuple(r[self.nkey :])) for r in cur.fetchall()]

    def checksum_values(
        self, conn: Any, columns: Sequence[str], lower: RangeBound, upper: RangeBound, *, digest: bool = False
    ) -> tuple[int, int | None, RangeValues]:
        """:meth:`checksum` and :meth:`values` of the range, in one scan where every one of
        ``columns`` is JSON (the documents packed beside the sums), else in two queries."""
        if self._all_json(columns):
            found = self._packed(conn, columns, lower, upper, self._sums(digest))
            if found is not None:
                return found
            count, total = self.checksum(conn, lower, upper, digest=digest)
            return count, total, self.values(conn, columns, lower, upper, packed=False)
        count, total = self.checksum(conn, lower, upper, digest=digest)
        return count, total, self.values(conn, columns, lower, upper)

    def _all_json(self, columns: Sequence[str]) -> bool:
        return bool(columns) and all(self.by_name[n].type.kind is Kind.JSON for n in columns)

    def _packed(
        self,
        conn: Any,
        columns: Sequence[str],
        lower: RangeBound,
        upper: RangeBound,
        sums: sql.Composable = _COUNT_ONLY,
    ) -> tuple[int, int, RangeValues] | None:
        """The range's row count, ``sums``' checksum (0 without it) and its JSON values packed into one
        string_agg string (rowhash.unpack_values), or None when they cannot be unpacked from it (then
        each is read again, the values row by row)."""
        values = [sql.SQL("coalesce('=' || {}::text, '')").format(self.ident[n]) for n in columns]
        record = sql.SQL("concat_ws(chr({}), {}) || chr({})").format(
            sql.Literal(ord(FIELD_END)),
            sql.SQL(", ").join([*self.key_text, *values]),
            sql.Literal(ord(RECORD_END)),
        )
        where, args = self._where(lower, upper)
        query = sql.SQL("SELECT {}, string_agg({}, '') FROM {}{}").format(sums, record, self.table, where)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(query, args)
                count, total, packed = cur.fetchone()
        except (errors.OutOfMemory, errors.ProgramLimitExceeded):  # past a text's 1 GB (rolled back)
            return None
        found = unpack_values(packed, int(count), self.nkey, len(columns))
        return None if found is None else (int(count), int(total), found)

    def bounds(self, conn: Any, lower: RangeBound, upper: RangeBound, every: int) -> list[tuple[Any, ...]]:
        """The key (in verify order) of every ``every``-th live row after ``lower`` up to ``upper``."""
        found: list[tuple[Any, ...]] = []
        last = lower
        with conn, conn.cursor() as cur:
            while True:
                where, args = self._where(last, upper)
                cur.execute(
                    sql.SQL("SELECT {0} FROM {1}{2} ORDER BY {0} LIMIT 1 OFFSET {3}").format(
                        self.order, self.table, where, sql.Literal(max(0, int(every) - 1))
                    ),
                    args,
                )
                row = cur.fetchone()
                if row is None:
                    return found
                last = tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                found.append(last)
