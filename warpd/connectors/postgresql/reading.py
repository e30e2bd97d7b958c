"""Reading a destination table back as canonical values (verification, tests, the demo)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from warpd.connectors.base import DELETED_AT_COLUMN, Row, TablePlan
from warpd.types import Kind


def _infinite_aware(name: str, oid_type: Any) -> Any:
    def cast(value: str | None, cur: Any) -> Any:
        if value in ("infinity", "-infinity"):
            return value
        return oid_type(value, cur)

    return psycopg2.extensions.new_type(oid_type.values, name, cast)


def register_infinity(conn: Any) -> None:
    """Read PostgreSQL's ±infinity dates and timestamps as the strings cartridge-warp writes."""
    for name, caster in (
        ("WARP_DATE", psycopg2.extensions.DATE),
        ("WARP_TS", psycopg2.extensions.PYDATETIME),
        ("WARP_TSTZ", psycopg2.extensions.PYDATETIMETZ),
    ):
        psycopg2.extensions.register_type(_infinite_aware(name, caster), conn)


def _canonical(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind is Kind.BYTES:
        return bytes(value)
    if kind is Kind.JSON:
        return value  # parsed by psycopg2; compared parsed
    if kind is Kind.UUID:
        return str(value)
    return value


def live_rows(conn: Any, plan: TablePlan) -> Iterator[Row] | None:
    """Rows of ``plan``'s table (soft-deleted ones left out); None when the table does not exist.

    JSON values come back parsed (verification compares JSON parsed).
    """
    target = sql.Identifier(plan.dest_schema, plan.dest_table)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (target.as_string(conn),))
        exists = cur.fetchone()[0] is not None
    if not exists:
        conn.rollback()
        return None
    register_infinity(conn)
    cols = plan.source.columns
    names = [plan.columns[c.name] for c in cols]
    query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, names)), target)
    if plan.soft_delete:
        query = sql.SQL("{} WHERE {} IS NULL").format(query, sql.Identifier(DELETED_AT_COLUMN))
    with conn.cursor() as cur:
        cur.execute(query)
        rows = [{c.name: _canonical(c.type.kind, v) for c, v in zip(cols, rec, strict=True)} for rec in cur]
    conn.rollback()
    return iter(rows)
