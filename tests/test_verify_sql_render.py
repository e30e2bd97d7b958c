"""The canonical texts verify's SQL renders, value by value, in the real MariaDB and PostgreSQL.

warpd/connectors/mysql/rowhash.py and warpd/connectors/postgresql/rowhash.py build the SQL that
renders each value of a row (docs/verify.md, "How"); the expressions are written for speed (user
variables in MariaDB's double, the IEEE bits in PostgreSQL's, a decimal's scale taken from its type,
no conversion of ASCII renderings), so every edge of each type is held here to the text the
specification gives it: NULLs, integer limits, decimals of scale zero, above zero and text-held,
doubles at both ends of the range (subnormals) and PostgreSQL's NaN and infinities, zero and partial
dates in nullable and NOT NULL columns, years below 1000, every fractional precision, negative
times, text in latin1 and utf8mb4 columns.  The row hash of all the values of a row is checked too,
against Python's (warpd/connectors/rowhash.py): the renderings join into one string whatever their
character sets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import mysql_root, pg_superuser
from psycopg2 import sql
from test_verify_values import _edge_doubles

from warpd.connectors.mysql import rowhash as mysql_rowhash
from warpd.connectors.mysql.types import SNAPSHOT_SESSION_SQL, describe_columns
from warpd.connectors.postgresql import rowhash as pg_rowhash
from warpd.types import Column, ColumnType, Kind
from warpd.verify_ranges import _double_text

SCRATCH = f"warp_sqlrender_{os.getpid()}"


def exact_double(value: float) -> str:
    """base.exact_double's text of a double, from Python's own frexp (NaN, the infinities and zero
    as words, as verify writes them in Python too)."""
    if not math.isfinite(value) or value == 0:
        return _double_text(value)
    fraction, exponent = math.frexp(abs(value))  # fraction in [0.5, 1), subnormals normalised
    return f"{'-' if value < 0 else ''}{int(fraction * 2**53)}p{exponent - 1}"


def _text(text: str) -> str:
    return f"{len(text.encode())}:{text}"


def _micros(hours: int, minutes: int, seconds: int, micros: int = 0, sign: int = 1) -> str:
    return str(sign * (((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros))


_DOUBLES = [(v, exact_double(v)) for v in _edge_doubles()]

# (column type, [(value, its part of the row: N for NULL, text as <bytes>:<text>)]): values are bound
# as parameters, the server converting strings to the column's type
MYSQL_CASES: list[tuple[str, list[tuple[Any, str]]]] = [
    ("BIGINT", [(0, "0"), (-(2**63), str(-(2**63))), (2**63 - 1, str(2**63 - 1)), (None, "N")]),
    ("BIGINT UNSIGNED", [(2**64 - 1, str(2**64 - 1)), (0, "0")]),
    ("TINYINT(1)", [(1, "1"), (-128, "-128"), (None, "N")]),
    ("DECIMAL(20,0)", [("0", "0"), ("-12345678901234567890", "-12345678901234567890"), ("100", "100")]),
    (
        "DECIMAL(12,2)",
        [("0.00", "0"), ("100.00", "100"), ("-0.50", "-0.5"), ("10.10", "10.1"), ("-0.01", "-0.01")]
        + [("9999999999.99", "9999999999.99"), ("-100", "-100"), (None, "N")],
    ),
    ("DECIMAL(5,5)", [("0.12340", "0.1234"), ("-0.00001", "-0.00001"), ("0", "0")]),
    (
        "DECIMAL(65,30)",
        [("1.5", "1.5"), ("-10", "-10"), ("0", "0")]
        + [("12345678901234567890123456789012345.000000000000000000000000000001",) * 2],
    ),
    (
        "DATE",
        [("2020-02-29", "2020-02-29"), ("0999-01-01", "0999-01-01"), ("0001-01-01", "0001-01-01")]
        + [("0000-00-00", "N"), ("2020-00-15", "N"), ("0000-01-01", "N"), ("9999-12-31", "9999-12-31")],
    ),
    (
        "DATE NOT NULL",
        [("0000-00-00", "-infinity"), ("2020-00-00", "-infinity"), ("0100-01-01", "0100-01-01")],
    ),
    (
        "DATETIME",
        [
            ("2020-01-02 03:04:05", "2020-01-02 03:04:05.000000"),
            ("0999-12-31 23:59:59", "0999-12-31 23:59:59.000000"),
        ]
        + [("0000-00-00 00:00:00", "N"), ("9999-12-31 23:59:59", "9999-12-31 23:59:59.000000"), (None, "N")],
    ),
    ("DATETIME(3)", [("2020-01-02 03:04:05.123", "2020-01-02 03:04:05.123000"), ("0000-00-00", "N")]),
    (
        "DATETIME(6)",
        [("0001-01-01 00:00:00.000001", "0001-01-01 00:00:00.000001"), ("0000-00-00 00:00:00", "N")]
        + [("0999-06-15 12:00:00.5", "0999-06-15 12:00:00.500000"), ("2020-00-15 00:00:00", "N")]
        + [("9999-12-31 23:59:59.999999", "9999-12-31 23:59:59.999999"), (None, "N")],
    ),
    (
        "DATETIME(6) NOT NULL",
        [("0000-00-00 00:00:00", "-infinity"), ("2021-03-04 05:06:07", "2021-03-04 05:06:07.000000")],
    ),
    (
        "TIMESTAMP(6) NULL",  # the session's time_zone is UTC (SNAPSHOT_SESSION_SQL)
        [("1970-01-01 00:00:01.000001", "1970-01-01 00:00:01.000001"), ("0000-00-00 00:00:00", "N")]
        + [("2038-01-19 03:14:07.999999", "2038-01-19 03:14:07.999999"), (None, "N")],
    ),
    ("TIMESTAMP NULL", [("2001-02-03 04:05:06", "2001-02-03 04:05:06.000000"), (None, "N")]),
    (
        "TIME(6)",
        [("-838:59:59.000000", _micros(838, 59, 59, sign=-1)), ("-00:00:00.000001", "-1"), ("00:00:00", "0")]
        + [("838:59:59.999999", _micros(838, 59, 59, 999_999)), ("12:34:56.5", _micros(12, 34, 56, 500_000))],
    ),
    ("TIME", [("-01:00:00", _micros(1, 0, 0, sign=-1)), (None, "N")]),
    ("DOUBLE", [*_DOUBLES, (None, "N")]),
    (
        "VARCHAR(20) CHARACTER SET latin1",
        [("é,x", _text("é,x")), ("", _text("")), ("N", _text("N")), ("ÿ€", _text("ÿ€")), (None, "N")],
    ),
    ("VARCHAR(20) CHARACTER SET utf8mb4", [("☃😀,", _text("☃😀,")), ("", _text("")), (None, "N")]),
    ("TEXT CHARACTER SET utf8mb4", [("a\nb\x00", _text("a\nb\x00")), ("é" * 100, _text("é" * 100))]),
    ("TEXT CHARACTER SET utf8", [("é€", _text("é€")), (None, "N")]),
    ("ENUM('a', 'é') CHARACTER SET utf8mb4", [("é", _text("é")), ("a", _text("a")), (None, "N")]),
    ("ENUM('a', 'é') CHARACTER SET latin1", [("é", _text("é")), (None, "N")]),
    ("VARBINARY(10)", [(b"\x00\xff", "00FF"), (b"", ""), (None, "N")]),
    ("BIT(5)", [(5, "00101"), (0, "00000"), (31, "11111"), (None, "N")]),
    ("UUID", [("123e4567-e89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a456-426614174000")]),
]


@pytest.fixture(scope="module")
def mariadb() -> Iterator[Any]:
    conn = mysql_root()
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        cur.execute(f"CREATE DATABASE {SCRATCH} CHARACTER SET utf8mb4")
        cur.execute(f"USE {SCRATCH}")
        for statement in SNAPSHOT_SESSION_SQL:
            cur.execute(statement)
    try:
        yield conn
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        conn.close()


def _mysql_table(conn: Any, table: str, type_sql: str, values: list[Any]) -> Column:
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE `{table}` (id INT PRIMARY KEY, v {type_sql})")
        cur.executemany(f"INSERT INTO `{table}` VALUES (%s, %s)", list(enumerate(values)))  # noqa: S608
        ((col, info),) = [d for d in describe_columns(cur, SCRATCH, table) if d[0].name == "v"]
    return dataclasses.replace(col, charset=info.charset)


@pytest.mark.parametrize("case", range(len(MYSQL_CASES)), ids=[t for t, _ in MYSQL_CASES])
def test_mariadb_renders_each_value_as_specified(mariadb: Any, case: int) -> None:
    type_sql, cases = MYSQL_CASES[case]
    table = f"t{case}"
    col = _mysql_table(mariadb, table, type_sql, [v for v, _ in cases])
    part = mysql_rowhash._part(col, "`v`")
    with mariadb.cursor() as cur:
        cur.execute(f"SELECT id, {part} FROM `{table}` ORDER BY id")  # noqa: S608
        got = [(cases[i][0], r.decode() if isinstance(r, bytes) else r) for i, r in cur.fetchall()]
    wrong = [
        (value, text, expected)
        for (value, text), (_, expected) in zip(got, cases, strict=True)
        if text != expected
    ]
    assert not wrong


@pytest.mark.parametrize("ctype", [ColumnType(Kind.DECIMAL), ColumnType(Kind.DECIMAL, precision=70, scale=2)])
def test_a_decimal_mariadb_holds_as_text_is_trimmed_only_after_a_point(
    mariadb: Any, ctype: ColumnType
) -> None:
    """A decimal with no precision or wider than DECIMAL(65,30) is held as its text in a MariaDB
    destination (dest_types.text_decimal): whatever the scale its source declares, the text is trimmed
    only where it has a point."""
    cases = [("1.50", "1.5"), ("100", "100"), ("-100.000", "-100"), ("0.0", "0"), ("-0.000001", "-0.000001")]
    with mariadb.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS decimal_text (id INT PRIMARY KEY, v LONGTEXT)")
        cur.execute("DELETE FROM decimal_text")
        cur.executemany("INSERT INTO decimal_text VALUES (%s, %s)", list(enumerate(v for v, _ in cases)))
        part = mysql_rowhash._part(Column("v", ctype), "`v`")
        cur.execute(f"SELECT {part} FROM decimal_text ORDER BY id")  # noqa: S608
        assert [r for (r,) in cur.fetchall()] == [e for _, e in cases]


def test_mariadb_row_hash_joins_texts_of_every_charset(mariadb: Any) -> None:
    """One row of a latin1, a utf8mb4 and a utf8 text, a double, a decimal, a date-time and an
    integer hashes as Python hashes its texts joined, with and without the double among them."""
    columns = [
        ("a", "VARCHAR(20) CHARACTER SET latin1", "é,ÿ", _text("é,ÿ")),
        ("b", "VARCHAR(20) CHARACTER SET utf8mb4", "☃😀", _text("☃😀")),
        ("c", "DOUBLE", 5e-324, exact_double(5e-324)),
        ("d", "DECIMAL(12,2)", "-1.50", "-1.5"),
        ("e", "DATETIME(6) NOT NULL", "0000-00-00 00:00:00", "-infinity"),
        ("f", "TEXT CHARACTER SET utf8", "€", _text("€")),
        ("g", "DOUBLE", -0.1, exact_double(-0.1)),
        ("h", "BIGINT", -1, "-1"),
    ]
    with mariadb.cursor() as cur:
        cur.execute(
            f"CREATE TABLE mixed (id INT PRIMARY KEY, {', '.join(f'{n} {t}' for n, t, _, _ in columns)})"
        )
        cur.execute(
            "INSERT INTO mixed VALUES (1, %s, %s, %s, %s, %s, %s, %s, %s)", [v for _, _, v, _ in columns]
        )
        described = {
            c.name: dataclasses.replace(c, charset=i.charset)
            for c, i in describe_columns(cur, SCRATCH, "mixed")
        }
        for chosen in (columns, [c for c in columns if c[1] != "DOUBLE"]):
            parts = [mysql_rowhash._part(described[n], f"`{n}`") for n, _, _, _ in chosen]
            cur.execute(f"SELECT MD5(CONCAT_WS(',', {', '.join(parts)})) FROM mixed")  # noqa: S608
            expected = hashlib.md5(",".join(t for _, _, _, t in chosen).encode()).hexdigest()  # noqa: S324
            assert cur.fetchone()[0] == expected


def _pg(kind: Kind, **kw: Any) -> ColumnType:
    return ColumnType(kind, **kw)


# (destination column type, the source type it holds, [(value, its part)]); values bound as text
PG_CASES: list[tuple[str, ColumnType, list[tuple[Any, str]]]] = [
    ("bigint", _pg(Kind.INT, bits=64), [(str(-(2**63)), str(-(2**63))), ("0", "0"), (None, "N")]),
    (
        "numeric(20,0)",
        _pg(Kind.DECIMAL, precision=20, scale=0),
        [("-12345678901234567890",) * 2, ("100", "100"), ("NaN", "NaN")],
    ),
    (
        "numeric(12,2)",
        _pg(Kind.DECIMAL, precision=12, scale=2),
        [
            ("0", "0"),
            ("100", "100"),
            ("-0.5", "-0.5"),
            ("10.10", "10.1"),
            ("-0.01", "-0.01"),
            ("NaN", "NaN"),
            (None, "N"),
        ],
    ),
    (
        "numeric(5,-2)",
        _pg(Kind.DECIMAL, precision=5, scale=-2),
        [("12345", "12300"), ("-100", "-100"), ("0", "0")],
    ),
    (
        "numeric",
        _pg(Kind.DECIMAL),
        [
            ("1.500", "1.5"),
            ("100", "100"),
            ("-0.0", "0"),
            ("0.000", "0"),
            ("NaN", "NaN"),
            ("Infinity", "Infinity"),
        ]
        + [("-Infinity", "-Infinity"), ("1e-40", "0." + "0" * 39 + "1"), ("1e40", "1" + "0" * 40)],
    ),
    (
        "numeric",  # a source's DECIMAL(1100,2), wider than PostgreSQL declares: held unconstrained
        _pg(Kind.DECIMAL, precision=1100, scale=2),
        [("1.50", "1.5"), ("100", "100"), (None, "N")],
    ),
    (
        "timestamp(6)",
        _pg(Kind.TIMESTAMP, precision=6),
        [
            ("0999-12-31 23:59:59", "0999-12-31 23:59:59.000000"),
            ("2020-01-02 03:04:05.5", "2020-01-02 03:04:05.500000"),
        ]
        + [
            ("-infinity", "-infinity"),
            ("infinity", "infinity"),
            ("10000-01-01", "10000-01-01 00:00:00.000000"),
            (None, "N"),
        ],
    ),
    (
        "timestamp(0)",
        _pg(Kind.TIMESTAMP, precision=0),
        [("2020-01-02 03:04:05", "2020-01-02 03:04:05.000000")],
    ),
    (
        "timestamptz",
        _pg(Kind.TIMESTAMPTZ, precision=6),
        [("2020-01-01 00:00:00.000001+02", "2019-12-31 22:00:00.000001")],
    ),
    ("date", _pg(Kind.DATE), [("0999-01-01", "0999-01-01"), ("-infinity", "-infinity"), (None, "N")]),
    (
        "interval",
        _pg(Kind.TIME, precision=6),
        [
            ("-838:59:59", _micros(838, 59, 59, sign=-1)),
            ("-00:00:00.000001", "-1"),
            ("838:59:59.999999", _micros(838, 59, 59, 999_999)),
        ],
    ),
    (
        "double precision",
        _pg(Kind.FLOAT, bits=64),
        [(repr(v), t) for v, t in _DOUBLES]
        + [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), (None, "N")],
    ),
    (
        "text",
        _pg(Kind.TEXT),
        [("é,x", _text("é,x")), ("", _text("")), ("N", _text("N")), ("☃😀", _text("☃😀")), (None, "N")],
    ),
    ("bytea", _pg(Kind.BYTES), [("\\x00ff", "00FF"), ("\\x", ""), (None, "N")]),
    ("boolean", _pg(Kind.BOOLEAN), [("true", "1"), ("false", "0"), (None, "N")]),
    ("bit varying(5)", _pg(Kind.BITS, length=5), [("00101", "00101"), (None, "N")]),
]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Any]:
    conn = pg_superuser()
    with conn.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'")  # as the destination's sessions (SESSION_OPTIONS)
        cur.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}").format(sql.Identifier(SCRATCH))
        )
        cur.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(SCRATCH)))
    try:
        yield conn
    finally:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCRATCH)))
        conn.close()


@pytest.mark.parametrize("case", range(len(PG_CASES)), ids=[f"{t} {c.describe()}" for t, c, _ in PG_CASES])
def test_postgresql_renders_each_value_as_specified(postgres: Any, case: int) -> None:
    type_sql, ctype, cases = PG_CASES[case]
    table = f"t{case}"
    part = pg_rowhash._part(Column("v", ctype), sql.Identifier("v"))
    with postgres.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v {type_sql})")
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", list(enumerate(v for v, _ in cases)))  # noqa: S608
        cur.execute(sql.SQL("SELECT id, {} FROM {} ORDER BY id").format(part, sql.Identifier(table)))
        got = [(cases[i][0], text) for i, text in cur.fetchall()]
    wrong = [
        (value, text, expected)
        for (value, text), (_, expected) in zip(got, cases, strict=True)
        if text != expected
    ]
    assert not wrong
