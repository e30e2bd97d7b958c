"""The PostgreSQL destination's session settings: the URI's own options survive cartridge-warp's."""

from __future__ import annotations

from urllib.parse import quote

from conftest import PG_DSN

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
