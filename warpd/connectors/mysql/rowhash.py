"""Key-range checksums for ``verify`` in MySQL/MariaDB, computed by the server (source and destination).

Every compared value is rendered as text the same way PostgreSQL renders it
(warpd/connectors/postgresql/rowhash.py; the rendering is specified in
docs/verify.md): integers in decimal, decimals with trailing fractional zeros
removed, text as its UTF-8, bytes as upper-case hex, bits as ``0``/``1``
digits, dates ``YYYY-MM-DD``, date-times ``YYYY-MM-DD HH:MM:SS.ffffff`` in
UTC, times as a signed number of microseconds.  A row is the ``,``-joined
list of its values, each ``N`` when NULL, text as ``<bytes>:<text>`` (the one
rendering that may hold a comma or be ``N``), and hashes as its MD5.  A range's checksum is the row count and the exact sum of
the first 60 bits of every row hash (an unsigned DECIMAL here, a numeric in
PostgreSQL: no overflow, no order dependence).

Zero and partial dates (``0000-00-00``, ``2020-00-15``), which replication
writes as NULL in a nullable column and ``-infinity`` in a NOT NULL one
(docs/type-mapping.md), render as that: ``N`` and ``-infinity``.

A DOUBLE renders exactly as its significand and binary exponent
(``warpd.connectors.base.exact_double``; PostgreSQL's rendering computes the
same text).  32-bit FLOAT, JSON and SET values are not rendered here:
:meth:`RangeQueries.values` returns them with their keys, for verify to render
(warpd/verify_ranges.py).

Keys order by the same expression on both sides: text and UUID keys by the
bytes of their UTF-8 text (MariaDB's collation and PostgreSQL's would order
them differently), other keys by their value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from warpd.connectors.base import (
    RangeBound,
    RangeRows,
    RangeValues,
    TablePlan,
    exact_double,
    verify_key_kind,
)
from warpd.connectors.mysql.connection import BIND, execute_bound, quote_ident
from warpd.connectors.mysql.dest_types import text_decimal
from warpd.connectors.mysql.types import snapshot_select_expr
from warpd.connectors.rowhash import FIELD_END, HASH_PREFIX_HEX, RECORD_END, unpack_values
from warpd.types import Column, Kind

PACKED_MAX = 1 << 30
"""GROUP_CONCAT's length limit for a range's packed JSON values (the server's max_allowed_packet
bounds it too: a longer string is NULL, and the range is read row by row)."""


def _bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


def _zero_dated(col: Column, q: str, rendered: str) -> str:
    """``rendered``, or what replication writes for a zero or partial date: NULL in a nullable
    column, ``-infinity`` in a NOT NULL one."""
    instead = "NULL" if col.nullable else "'-infinity'"
    # TO_DAYS is NULL for a zero or partial date (and for NULL), below 366 in year 0
    return f"IF(IFNULL(TO_DAYS({q}), 0) < 366, {instead}, {rendered})"


def _double(q: str) -> str:
    """A DOUBLE as ``[-]<m>p<e>`` (base.exact_double): ``e`` is FLOOR(LOG2), put right where LOG2's
    rounding made it one off (LOG2 is ``log(x) / ln 2``), and bounded so every POW is a double;
    ``m`` is the value times 2**(52 - e), exact, in two steps below 1e-290 (2**1126 is no double).

    The server computes each repeated sub-expression again (LOG2 several times a row, about 1 s a
    million rows); computing them once into user variables saved about 0.3 s of it, but relies on
    an evaluation order the manuals leave undefined, in a hash whose wrong text could hide a
    difference: not done."""
    x = f"({q} + 0e0)"
    a = f"ABS({x})"
    e0 = f"LEAST(GREATEST(FLOOR(LOG2({a})), -1074), 1023)"
    e = f"({e0} - ({a} < POW(2, {e0})) + ({a} / POW(2, {e0}) >= 2))"
    h = f"FLOOR((52 - {e}) / 2)"
    # (one power when 2**(52 - e) is a double: every value of at least 1e-290)
    m = f"IF({a} >= 1e-290, {a} * POW(2, 52 - {e}), {a} * POW(2, {h}) * POW(2, 52 - {e} - {h}))"
    return (
        f"CASE WHEN {x} = 0 THEN '0' "
        f"ELSE CONCAT(IF({x} < 0, '-', ''), CAST({m} AS UNSIGNED), 'p', CAST({e} AS SIGNED)) END"
    )


def _text(col: Column, q: str) -> str:
    kind = col.type.kind
    if exact_double(col):
        return _double(q)
    if kind in (Kind.INT, Kind.UUID):
        return f"CAST({q} AS CHAR)"
    if kind is Kind.DECIMAL:
        return _decimal(col, q)
    if kind is Kind.TEXT:
        return q
    if kind is Kind.BYTES:
        return f"HEX({q})"
    if kind is Kind.BOOLEAN:
        return f"CASE WHEN {q} THEN '1' WHEN NOT {q} THEN '0' END"  # NULL stays NULL
    if kind is Kind.BITS:
        return f"LPAD(BIN({q} + 0), {int(col.type.length or 1)}, '0')"
    if kind is Kind.DATE:
        return _zero_dated(col, q, f"DATE_FORMAT({q}, '%Y-%m-%d')")
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        # a DATETIME(6) or TIMESTAMP(6) is cast in that very form, cheaper than DATE_FORMAT builds it
        six = col.type.precision == 6
        return _zero_dated(
            col, q, f"CAST({q} AS CHAR)" if six else f"DATE_FORMAT({q}, '%Y-%m-%d %H:%i:%s.%f')"
        )
    if kind is Kind.TIME:
        return f"CAST(ROUND(TIME_TO_SEC({q}) * 1000000) AS SIGNED)"
    raise ValueError(f"verify: no rendering of {col.type.describe()}")


def _decimal(col: Column, q: str) -> str:
    """Trailing fractional zeros (and a bare point) trimmed: a DECIMAL of scale above zero always casts
    with a point, one of scale zero never; the point is looked for in a decimal a destination holds as
    text (dest_types.text_decimal: no precision, or wider than DECIMAL(65,30)), whatever its scale."""
    t = f"CAST({q} AS CHAR)"
    trimmed = f"TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {t}))"
    if text_decimal(col.type):
        return f"IF(LOCATE('.', {t}) > 0, {trimmed}, {t})"
    return trimmed if (col.type.scale or 0) > 0 else t


def _utf8(col: Column, q: str) -> str:
    return f"CONVERT({_text(col, q)} USING utf8mb4)"


def _part(col: Column, q: str) -> str:
    """One value as it enters the row: only text is converted to utf8mb4 (unless its column holds
    utf8mb4 already), every other rendering being ASCII, the same bytes in the connection's charset."""
    if col.type.kind is not Kind.TEXT:
        return f"IFNULL({_text(col, q)}, 'N')"
    t = q if (col.charset or "").lower() == "utf8mb4" else _utf8(col, q)
    # the one rendering that may hold a comma: prefixed by its length
    return f"IF({q} IS NULL, 'N', CONCAT(LENGTH({t}), ':', {t}))"


def _order(col: Column, q: str) -> str:
    if col.type.kind in (Kind.TEXT, Kind.UUID):
        return f"CAST({_utf8(col, q)} AS BINARY)"
    return q


class RangeQueries:
    """The verify queries over one table; ``names`` maps each source column to its name in ``table``.

    ``table`` is the qualified, quoted table; ``live`` an extra condition on its rows (soft deletes);
    ``json_arrays``: SET values are held as JSON arrays (a destination), not as MySQL SETs.
    """

    def __init__(
        self,
        plan: TablePlan,
        table: str,
        names: dict[str, str],
        columns: Sequence[str],
        live: str = "",
        *,
        json_arrays: bool = False,
    ):
        by_name = {c.name: c for c in plan.source.columns}
        keys = [by_name[k] for k in plan.source.key]
        for k in keys:
            verify_key_kind(plan, k)
        self.table = table
        self.live = live
        self.nkey = len(keys)
        self.order = [_order(c, quote_ident(names[c.name])) for c in keys]
        self.key_text = [_utf8(c, quote_ident(names[c.name])) for c in keys]
        parts = [_part(by_name[n], quote_ident(names[n])) for n in columns]
        self.row = "CONCAT_WS(',', " + (", ".join(parts) or "''") + ")"
        self.row_hash = f"MD5({self.row})"
        self.by_name, self.names, self.json_arrays = by_name, names, json_arrays

    def _where(self, lower: RangeBound, upper: RangeBound) -> tuple[str, tuple[Any, ...]]:
        conds, args = [self.live] if self.live else [], ()
        row = f"({', '.join(self.order)})"
        marks = f"({', '.join([BIND] * self.nkey)})"
        if lower is not None:
            conds.append(f"{row} > {marks}")
            args += tuple(lower)
        if upper is not None:
            conds.append(f"{row} <= {marks}")
            args += tuple(upper)
        return (" WHERE " + " AND ".join(conds) if conds else ""), args

    def checksum(
        self, conn: Any, lower: RangeBound, upper: RangeBound, *, digest: bool = False
    ) -> tuple[int, int | None]:
        where, args = self._where(lower, upper)
        # identifiers quoted by quote_ident, values bound at BIND marks
        query = f"SELECT {self._sums(digest)} FROM {self.table}{where}"  # noqa: S608
        with conn.cursor() as cur:
            if digest:
                cur.execute(f"SET SESSION group_concat_max_len = {PACKED_MAX}")
            execute_bound(cur, query, args)
            count, total = cur.fetchone()
            return int(count), _total(total, digest, cur.warning_count)

    def rows(self, conn: Any, lower: RangeBound, upper: RangeBound) -> RangeRows:
        where, args = self._where(lower, upper)
        query = f"SELECT {', '.join(self.key_text)}, {self.row_hash} FROM {self.table}{where}"  # noqa: S608
        with conn.cursor() as cur:
            execute_bound(cur, query, args)
            return [(tuple(r[: self.nkey]), str(r[self.nkey])) for r in cur.fetchall()]

    def values(
        self, conn: Any, columns: Sequence[str], lower: RangeBound, upper: RangeBound, *, packed: bool = True
    ) -> RangeValues:
        """Each row's key (rendered) and the values of FLOAT, JSON and SET ``columns``, as Python
        values (base.RangeValues): a FLOAT widened to DOUBLE (its text form has six digits only)."""
        cols = [self.by_name[n] for n in columns]
        if packed and cols and all(c.type.kind is Kind.JSON for c in cols):
            _count, _total, found = self._packed(conn, cols, lower, upper)
            if found is not None:
                return found
        exprs = [snapshot_select_expr(c, quote_ident(self.names[c.name])) for c in cols]
        where, args = self._where(lower, upper)
        query = f"SELECT {', '.join([*self.key_text, *exprs])} FROM {self.table}{where}"  # noqa: S608
        with conn.cursor() as cur:
            execute_bound(cur, query, args)
            rows = cur.fetchall()
        return [
            (
                tuple(r[: self.nkey]),
                tuple(self._value(c, v) for c, v in zip(cols, r[self.nkey :], strict=True)),
            )
            for r in rows
        ]

    def checksum_values(
        self, conn: Any, columns: Sequence[str], lower: RangeBound, upper: RangeBound, *, digest: bool = False
    ) -> tuple[int, int | None, RangeValues]:
        """:meth:`checksum` and :meth:`values` of the range, in one scan where every one of
        ``columns`` is JSON (the documents packed beside the sums), else in two queries."""
        cols = [self.by_name[n] for n in columns]
        if cols and all(c.type.kind is Kind.JSON for c in cols):
            count, total, packed = self._packed(conn, cols, lower, upper, self._sums(digest), digest=digest)
            if packed is not None:
                return count, total, packed
            return count, total, self.values(conn, columns, lower, upper, packed=False)
        count, total = self.checksum(conn, lower, upper, digest=digest)
        return count, total, self.values(conn, columns, lower, upper)

    def _sums(self, digest: bool = False) -> str:
        """The range's row count and checksum: the sum of its rows' hashes' first 60 bits, or
        (``digest``, base.RangeChecksums) the MD5 of its rows' renderings in key order."""
        if digest:
            return f"COUNT(*), MD5(GROUP_CONCAT({self.row} ORDER BY {', '.join(self.order)} SEPARATOR ','))"
        return f"COUNT(*), COALESCE(SUM(CAST(CONV(LEFT({self.row_hash}, 15), 16, 10) AS UNSIGNED)), 0)"

    def _packed(
        self,
        conn: Any,
        cols: Sequence[Column],
        lower: RangeBound,
        upper: RangeBound,
        sums: str = "COUNT(*), 0",
        *,
        digest: bool = False,
    ) -> tuple[int, int | None, RangeValues | None]:
        """The range's row count, ``sums``' checksum (0 without it) and its JSON values packed into one
        GROUP_CONCAT string (rowhash.unpack_values); None for the values when they do not fit in it
        (then read row by row)."""
        sep = {end: f"CHAR({ord(end)} USING utf8mb4)" for end in (RECORD_END, FIELD_END)}
        values = [
            f"IFNULL(CONCAT('=', CONVERT({quote_ident(self.names[c.name])} USING utf8mb4)), '')" for c in cols
        ]
        record = (
            f"CONCAT(CONCAT_WS({sep[FIELD_END]}, {', '.join([*self.key_text, *values])}), {sep[RECORD_END]})"
        )
        where, args = self._where(lower, upper)
        with conn.cursor() as cur:
            cur.execute(f"SET SESSION group_concat_max_len = {PACKED_MAX}")
            execute_bound(
                cur,
                f"SELECT {sums}, GROUP_CONCAT({record} SEPARATOR '') FROM {self.table}{where}",  # noqa: S608
                args,
            )
            count, total, packed = cur.fetchone()
            count, total = int(count), _total(total, digest, cur.warning_count)
        if packed is not None and len(packed) * 4 >= PACKED_MAX and len(_bytes(packed)) >= PACKED_MAX - 3:
            return count, total, None  # cut at group_concat_max_len (perhaps at a row's end)
        return count, total, unpack_values(packed, count, self.nkey, len(cols))

    def _value(self, col: Column, value: Any) -> Any:
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if col.type.kind is Kind.TEXT_ARRAY and isinstance(value, str):
            return json.loads(value) if self.json_arrays else [m for m in value.split(",") if m]
        return value

    def bounds(
        self, conn: Any, lower: RangeBound, upper: RangeBound, every: int, limit: int | None = None
    ) -> list[tuple[Any, ...]]:
        """The key (in verify order) of every ``every``-th row after ``lower`` up to ``upper`` (the
        first ``limit`` of them)."""
        found: list[tuple[Any, ...]] = []
        last = lower
        with conn.cursor() as cur:
            while limit is None or len(found) < limit:
                where, args = self._where(last, upper)
                execute_bound(
                    cur,
                    f"SELECT {', '.join(self.order)} FROM {self.table}{where} "  # noqa: S608 - quoted
                    f"ORDER BY {', '.join(self.order)} LIMIT 1 OFFSET {int(every) - 1}",
                    args,
                )
                row = cur.fetchone()
                if row is None:
                    break
                last = tuple(row)
                found.append(last)
        return found


def _total(found: Any, digest: bool, warnings: int) -> int | None:
    """A range's checksum as the server computed it: the sum, or the first 60 bits of the digest
    (0 for no row); None for a digest the server may have cut (GROUP_CONCAT warns when it cuts)."""
    if not digest:
        return int(found)
    if warnings:
        return None
    return 0 if found is None else int(_bytes(found)[:HASH_PREFIX_HEX], 16)


class RangeChecksumMethods:
    """``range_checksum`` and ``range_rows`` (base.RangeChecksums) of a MySQL source or destination,
    over the :class:`RangeQueries` its ``_ranges`` builds, on its ``conn``."""

    verify_exact_doubles = True  # DOUBLE columns rendered in SQL (base.exact_double)
    verify_range_digest = True  # range_checksum(..., digest=True) (base.RangeChecksums)
    verify_bounds_limit = True  # verify_bounds(..., limit=N) (base.RangeBounds)

    @property
    def conn(self) -> Any:
        raise NotImplementedError

    def _ranges(self, plan: TablePlan, columns: Sequence[str] = ()) -> RangeQueries:
        raise NotImplementedError

    def range_checksum(
        self,
        plan: TablePlan,
        columns: Sequence[str],
        lower: RangeBound,
        upper: RangeBound,
        *,
        digest: bool = False,
    ) -> tuple[int, int | None]:
        return self._ranges(plan, columns).checksum(self.conn, lower, upper, digest=digest)

    def range_rows(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> RangeRows:
        return self._ranges(plan, columns).rows(self.conn, lower, upper)

    def range_values(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> RangeValues:
        return self._ranges(plan).values(self.conn, columns, lower, upper)

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
        return self._ranges(plan, columns).checksum_values(
            self.conn, value_columns, lower, upper, digest=digest
        )

    def verify_bounds(
        self, plan: TablePlan, lower: RangeBound, upper: RangeBound, every: int, limit: int | None = None
    ) -> list[tuple[Any, ...]]:
        return self._ranges(plan).bounds(self.conn, lower, upper, every, limit)
