"""The PostgreSQL destination's session settings: the URI's own options survive cartridge-warp's."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
import pytest
from conftest import PG_DSN, pg_superuser
from psycopg2 import sql

from warpd.connectors.postgresql.destination import PostgresDestination


def _show(dest: PostgresDestination, setting: str) -> str:
    with dest.conn.cursor() as cur:
        cur.execute(f"SHOW {setting}")
        return str(cur.fetchone()[0])


def test_options_in_the_uri_are_kept_next_to_utc():
    sep = "&" if "?" in PG_DSN else "?"
    dest = PostgresDestination(PG_DSN + sep + "options=" + quote("-c statement_timeout=4321"))
    try:
        assert _show(dest, "statement_timeout") == "4321ms"
        assert _show(dest, "TimeZone") == "UTC"  # widenings render timestamps as fresh values do
        assert _show(dest, "extra_float_digits") == "1"
    finally:
        dest.close()


def test_without_options_in_the_uri():
    dest = PostgresDestination(PG_DSN)
    try:
        assert _show(dest, "TimeZone") == "UTC"
    finally:
        dest.close()


# -- durability: a commit is flushed before the checkpoint that covers it is stored ----------------


@pytest.fixture
def role_uri() -> Iterator[Callable[[str], str]]:
    """A URI of a dedicated login role whose session default is ``synchronous_commit = <value>``."""
    params = psycopg2.extensions.parse_dsn(PG_DSN)
    admin = pg_superuser()
    created: list[str] = []

    def make(value: str) -> str:
        name = f"warp_t_{uuid.uuid4().hex[:10]}"
        password = uuid.uuid4().hex
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(name)), (password,))
            created.append(name)
            cur.execute(
                sql.SQL("ALTER ROLE {} SET synchronous_commit = {}").format(
                    sql.Identifier(name), sql.Literal(value)
                )
            )
        host, port, db = params.get("host", "127.0.0.1"), params.get("port", "5432"), params["dbname"]
        return f"postgresql://{name}:{password}@{host}:{port}/{db}"

    try:
        yield make
    finally:
        with admin.cursor() as cur:
            for name in created:
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        admin.close()


def test_synchronous_commit_off_for_the_role_is_turned_on(role_uri):
    uri = role_uri("off")
    plain = psycopg2.connect(uri)
    try:  # the role's default is in force for any other session
        with plain.cursor() as cur:
            cur.execute("SHOW synchronous_commit")
            assert cur.fetchone()[0] == "off"
    finally:
        plain.close()
    dest = PostgresDestination(uri, application_name="cartridge-warp test")
    try:
        assert _show(dest, "synchronous_commit") == "on"
        dest.reset()  # a reconnection (after an error) is durable too
        assert _show(dest, "synchronous_commit") == "on"
    finally:
        dest.close()


def test_synchronous_commit_off_in_the_uri_options_is_turned_on():
    sep = "&" if "?" in PG_DSN else "?"
    dest = PostgresDestination(PG_DSN + sep + "options=" + quote("-c synchronous_commit=off"))
    try:
        assert _show(dest, "synchronous_commit") == "on"
    finally:
        dest.close()


def test_a_stronger_synchronous_commit_is_kept(role_uri):
    dest = PostgresDestination(role_uri("remote_apply"))
    try:
        assert _show(dest, "synchronous_commit") == "remote_apply"
    finally:
        dest.close()
