"""The MySQL/MariaDB -> shared type set -> PostgreSQL mapping, against the real local servers.

One table per type case in a throwaway MariaDB database.  Each case's rows are
inserted by a writer session whose time zone is +05:30, then read three ways:
by a snapshot query (pymysql + snapshot_converter), from the binlog
(pymysqlreplication + binlog_converter), and, after COPY into PostgreSQL, as
``col::text``.  The first two must equal the canonical values written here;
the last must equal the PostgreSQL text written here.

End to end, at every destination kind (``pytest.mark.destinations``): the real
cartridge-warp snapshots a copy of each case's table and streams another, and
each value read back must be exactly the one written here for that kind
(PostgreSQL: ``c::text``; MySQL/MariaDB: the value pymysql reads, which is the
canonical value unless ``Case.mysql`` says otherwise), or its row must be in the
dead letters where docs/type-mapping.md says the destination refuses it.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg2
import pymysql
import pytest
from conftest import Databases, Warp, wait_until
from psycopg2 import sql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent
from test_replication import STREAMING, binlog_position, position_order

from warpd.config import SchemaConfig
from warpd.connectors.mysql import types as my
from warpd.connectors.postgresql.types import TextNulError, copy_encoder, pg_type_sql
from warpd.state.store import StateStore
from warpd.types import Column, ColumnType, Kind

MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
DB = f"warp_t_types_{os.getpid()}"
SERVER_ID = 3_000_000 + os.getpid() % 1_000_000
WRITER_SESSION = ("SET SESSION time_zone = '+05:30'", "SET SESSION sql_mode = ''")
UTC = dt.UTC
NUL_REJECTED = object()  # PostgreSQL expectation: the encoder raises TextNulError
REFUSED = "<refused: dead letter>"  # a destination expectation: the row goes to the dead letters


@dataclass(frozen=True)
class P:
    """A row value bound as a query parameter rather than written as SQL."""

    value: Any


@dataclass(frozen=True)
class Case:
    id: str
    ddl: str  # the column definition after its name
    type: ColumnType  # expected shared type
    rows: tuple[tuple[Any, Any, Any], ...]  # (SQL literal or P, canonical value, PostgreSQL ::text)
    # what pymysql reads back from a MySQL/MariaDB destination, row by row, where it is not the
    # canonical value (REFUSED: the row goes to the dead letters)
    mysql: tuple[Any, ...] | None = None

    def expected(self, kind: str) -> list[Any]:
        """Each row as read back from a destination of ``kind`` (PostgreSQL: ``c::text``)."""
        if kind == "bigquery":
            return [bigquery_value(self.type, canonical) for _, canonical, _ in self.rows]
        if kind == "postgresql":
            return [REFUSED if pg is NUL_REJECTED else pg for _, _, pg in self.rows]
        if self.mysql is not None:
            assert len(self.mysql) == len(self.rows), self.id
            return list(self.mysql)
        return [canonical for _, canonical, _ in self.rows]


def bigquery_value(ct: ColumnType, canonical: Any) -> Any:
    """A canonical value as read back from BigQuery (docs/bigquery.md, "Type mapping"): the same value,
    JSON parsed; what BigQuery's types cannot hold (a zero date, as '-infinity') goes to the dead letters."""
    if canonical is None:
        return None
    if (
        isinstance(canonical, str)
        and canonical.endswith("infinity")
        and ct.kind
        in (
            Kind.DATE,
            Kind.TIMESTAMP,
            Kind.TIMESTAMPTZ,
        )
    ):
        return REFUSED
    if isinstance(canonical, Decimal):  # NUMERIC keeps the value, not the declared scale: 1.50 -> 1.5
        return canonical.normalize()
    if ct.kind is Kind.JSON:
        import json

        if not _json_numbers_exact(json.loads(canonical, parse_float=Decimal)):
            return REFUSED  # PARSE_JSON refuses a number it would round (docs/bigquery.md)
        return json.loads(canonical)
    return canonical


def _normal(value: Any) -> Any:
    return value.normalize() if isinstance(value, Decimal) else value


def _json_numbers_exact(value: Any) -> bool:
    """Whether every number of a parsed JSON value is one BigQuery's JSON holds exactly (a 64-bit
    integer, or a decimal a double holds exactly)."""
    if isinstance(value, dict):
        return all(_json_numbers_exact(v) for v in value.values())
    if isinstance(value, list):
        return all(_json_numbers_exact(v) for v in value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return True
    return Decimal(repr(float(value))) == value  # a double reads back as the same decimal


# the BigQuery type of each shared kind, as tables.get spells it (docs/bigquery.md, "Type mapping")
BIGQUERY_TYPES = {
    Kind.BOOLEAN: "boolean",
    Kind.INT: "integer",
    Kind.FLOAT: "float",
    Kind.TEXT: "string",
    Kind.UUID: "string",
    Kind.BITS: "string",
    Kind.BYTES: "bytes",
    Kind.DATE: "date",
    Kind.TIME: "interval",
    Kind.TIMESTAMP: "datetime",
    Kind.TIMESTAMPTZ: "timestamp",
    Kind.JSON: "json",
    Kind.TEXT_ARRAY: "json",
}


def bigquery_column_type(ct: ColumnType) -> str:
    if ct.kind is not Kind.DECIMAL:
        return BIGQUERY_TYPES[ct.kind]
    whole, scale = (ct.precision or 0) - (ct.scale or 0), ct.scale or 0
    if ct.precision is not None and whole <= 29 and scale <= 9:
        return "numeric"
    return "bignumeric" if ct.precision is None or (whole <= 38 and scale <= 38) else "string"


def emulator_gap(case: Case) -> str | None:
    """Why the BigQuery emulator cannot hold this case's values as BigQuery does (None: it can)."""
    from tests import bigquery_support

    if not bigquery_support.emulated():
        return None
    for _, canonical, _ in case.rows:
        if isinstance(canonical, dt.timedelta) and canonical < dt.timedelta(0):
            return "the emulator cannot store negative INTERVAL values (BigQuery can)"
        if isinstance(canonical, dt.timedelta) and canonical.microseconds % 1000:
            return "the emulator stores INTERVAL values to the millisecond (BigQuery: to the microsecond)"
        if bigquery_column_type(case.type) == "bignumeric" and isinstance(canonical, Decimal):
            sign, digits, exponent = canonical.as_tuple()
            frac = max(0, -int(exponent))
            if len(digits) - frac > 20 or frac > 18:
                return "the emulator's BIGNUMERIC holds 20 integer and 18 fractional digits (BigQuery: 38 and 38)"
    return None


def i(n: int) -> tuple[str, int, str]:
    return (str(n), n, str(n))


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def td(text: str) -> dt.timedelta:
    hours, minutes, seconds = text.lstrip("-").split(":")
    micros = (int(hours) * 3600 + int(minutes) * 60) * 1_000_000 + int(Decimal(seconds) * 1_000_000)
    return dt.timedelta(microseconds=-micros if text.startswith("-") else micros)


def t(text: str) -> tuple[str, dt.timedelta, str]:
    return (f"'{text}'", td(text), text)


INT16, INT32, INT64 = (ColumnType(Kind.INT, bits=b) for b in (16, 32, 64))
ALL_BYTES = bytes(range(256))
POINT_WKB = bytes.fromhex("0101000000000000000000f03f0000000000000040")

CASES = [
    Case("tinyint", "TINYINT", INT16, (i(-128), i(127), ("NULL", None, None))),
    Case("tinyint_unsigned", "TINYINT UNSIGNED", INT16, (i(255), i(0))),
    Case("tinyint1_not_boolean", "TINYINT(1)", INT16, (i(2), i(1), i(0), i(-1))),
    Case("bool_alias", "BOOL", INT16, (i(2), i(1))),
    Case("smallint", "SMALLINT", INT16, (i(-32768), i(32767))),
    Case("smallint_unsigned", "SMALLINT UNSIGNED", INT32, (i(65535),)),
    Case("mediumint", "MEDIUMINT", INT32, (i(-8388608), i(8388607))),
    Case("mediumint_unsigned", "MEDIUMINT UNSIGNED", INT32, (i(16777215),)),
    Case("int", "INT", INT32, (i(-2147483648), i(2147483647))),
    Case("int_unsigned_zerofill", "INT(10) UNSIGNED ZEROFILL", INT64, (i(4294967295), i(7))),
    Case("bigint", "BIGINT", INT64, (i(-9223372036854775808), i(9223372036854775807))),
    Case(
        "bigint_unsigned",
        "BIGINT UNSIGNED",
        ColumnType(Kind.DECIMAL, precision=20, scale=0),
        (
            ("18446744073709551615", Decimal("18446744073709551615"), "18446744073709551615"),
            ("9223372036854775808", Decimal("9223372036854775808"), "9223372036854775808"),
            ("0", Decimal(0), "0"),
        ),
    ),
    Case(
        "decimal_65_30",
        "DECIMAL(65,30)",
        ColumnType(Kind.DECIMAL, precision=65, scale=30),
        (
            (
                "-12345678901234567890123456789012345.123456789012345678901234567891",
                Decimal("-12345678901234567890123456789012345.123456789012345678901234567891"),
                "-12345678901234567890123456789012345.123456789012345678901234567891",
            ),
            ("0", Decimal("0E-30"), "0.000000000000000000000000000000"),
        ),
    ),
    Case(
        "decimal_10_2",
        "DECIMAL(10,2)",
        ColumnType(Kind.DECIMAL, precision=10, scale=2),
        (("-0.5", Decimal("-0.50"), "-0.50"), ("99999999.99", Decimal("99999999.99"), "99999999.99")),
    ),
    # MariaDB stores -0 as 0, so no path ever sees a negative zero.
    Case(
        "float",
        "FLOAT",
        ColumnType(Kind.FLOAT, bits=32),
        (
            ("1.2345678", 1.2345678, "1.2345678"),
            ("-3.4e38", -3.4e38, "-3.4e+38"),
            ("0.1", 0.1, "0.1"),
            ("16777217", 16777216.0, "1.6777216e+07"),
            ("1.17549435e-38", 1.1754944e-38, "1.1754944e-38"),
            ("-0e0", 0.0, "0"),
        ),
    ),
    Case("float_m_d", "FLOAT(7,3)", ColumnType(Kind.FLOAT, bits=32), (("1234.5678", 1234.568, "1234.568"),)),
    Case(
        "double",
        "DOUBLE",
        ColumnType(Kind.FLOAT, bits=64),
        (
            ("0.30000000000000004", 0.30000000000000004, "0.30000000000000004"),
            ("0.1", 0.1, "0.1"),
            ("1.7976931348623157e308", 1.7976931348623157e308, "1.7976931348623157e+308"),
            ("-2.2250738585072014e-308", -2.2250738585072014e-308, "-2.2250738585072014e-308"),
            ("-0e0", 0.0, "0"),
        ),
    ),
    Case(
        "varchar_utf8mb4",
        "VARCHAR(50)",
        ColumnType(Kind.TEXT, length=50),
        (
            (P("emoji 😀 ü 𝄞"), "emoji 😀 ü 𝄞", "emoji 😀 ü 𝄞"),
            (
                P("tab\there\nnew\rline \\ back"),
                "tab\there\nnew\rline \\ back",
                "tab\there\nnew\rline \\ back",
            ),
            (P("trailing  "), "trailing  ", "trailing  "),
            (P(""), "", ""),
            (P("\\N"), "\\N", "\\N"),
            (P("^Z\x1a bs\x08 \\0 \\Z"), "^Z\x1a bs\x08 \\0 \\Z", "^Z\x1a bs\x08 \\0 \\Z"),
        ),
    ),
    Case(
        "char", "CHAR(10)", ColumnType(Kind.TEXT, length=10), ((P("ab  "), "ab", "ab"), (P(" x"), " x", " x"))
    ),
    Case("tinytext", "TINYTEXT", ColumnType(Kind.TEXT), ((P("t"), "t", "t"),)),
    Case("text", "TEXT", ColumnType(Kind.TEXT), ((P("x" * 1000), "x" * 1000, "x" * 1000),)),
    Case("mediumtext", "MEDIUMTEXT", ColumnType(Kind.TEXT), ((P("m😀"), "m😀", "m😀"),)),
    Case("longtext", "LONGTEXT", ColumnType(Kind.TEXT), ((P("l"), "l", "l"),)),
    Case(
        "text_with_nul",
        "VARCHAR(10)",
        ColumnType(Kind.TEXT, length=10),
        ((P("a\x00b"), "a\x00b", NUL_REJECTED),),
    ),
    Case(
        "varchar_latin1",
        "VARCHAR(20) CHARACTER SET latin1",
        ColumnType(Kind.TEXT, length=20),
        ((P("café € Ÿœ"), "café € Ÿœ", "café € Ÿœ"), (P("ÿ"), "ÿ", "ÿ")),
    ),
    Case(
        "varchar_ucs2",
        "VARCHAR(10) CHARACTER SET ucs2",
        ColumnType(Kind.TEXT, length=10),
        ((P("é€"), "é€", "é€"),),
    ),
    Case(
        "varchar_utf16",
        "VARCHAR(10) CHARACTER SET utf16",
        ColumnType(Kind.TEXT, length=10),
        ((P("é😀"), "é😀", "é😀"),),
    ),
    Case(
        "enum",
        "ENUM('a','b','é')",
        ColumnType(Kind.TEXT),
        (("'é'", "é", "é"), ("'b'", "b", "b"), ("'not-a-label'", "", ""), ("NULL", None, None)),
    ),
    Case(
        "enum_latin1_ascii", "ENUM('x','y') CHARACTER SET latin1", ColumnType(Kind.TEXT), (("'y'", "y", "y"),)
    ),
    Case(
        "set",
        "SET('x','y','z')",
        ColumnType(Kind.TEXT_ARRAY),
        (("'z,x'", ["x", "z"], "{x,z}"), ("''", [], "{}"), ("NULL", None, None)),
        mysql=('["x", "z"]', "[]", None),  # a JSON array, as text
    ),
    Case(
        "set_not_null",
        "SET('a','b') NOT NULL",
        ColumnType(Kind.TEXT_ARRAY),
        (("''", [], "{}"), ("'b,a'", ["a", "b"], "{a,b}")),
        mysql=("[]", '["a", "b"]'),
    ),
    Case(
        "set_quoting",
        "SET('x y','q\"r','NULL')",
        ColumnType(Kind.TEXT_ARRAY),
        ((P('q"r,x y,NULL'), ["x y", 'q"r', "NULL"], '{"x y","q\\"r","NULL"}'),),
        mysql=('["x y", "q\\"r", "NULL"]',),
    ),
    Case(
        "blob",
        "BLOB",
        ColumnType(Kind.BYTES),
        (("X'" + ALL_BYTES.hex() + "'", ALL_BYTES, "\\x" + ALL_BYTES.hex()), ("''", b"", "\\x")),
    ),
    Case("tinyblob", "TINYBLOB", ColumnType(Kind.BYTES), (("X'00'", b"\0", "\\x00"),)),
    Case("mediumblob", "MEDIUMBLOB", ColumnType(Kind.BYTES), (("X'ff00'", b"\xff\0", "\\xff00"),)),
    Case("longblob", "LONGBLOB", ColumnType(Kind.BYTES), (("X'0a09'", b"\n\t", "\\x0a09"),)),
    Case(
        "binary",
        "BINARY(4)",
        ColumnType(Kind.BYTES, length=4),
        (
            ("'ab'", b"ab\0\0", "\\x61620000"),
            ("X'00'", b"\0\0\0\0", "\\x00000000"),
            ("X'01000000'", b"\x01\0\0\0", "\\x01000000"),
            ("''", b"\0\0\0\0", "\\x00000000"),
        ),
    ),
    Case(
        "varbinary",
        "VARBINARY(16)",
        ColumnType(Kind.BYTES, length=16),
        (("X'0100'", b"\x01\0", "\\x0100"), ("''", b"", "\\x")),
    ),
    Case(
        "bit1",
        "BIT(1)",
        ColumnType(Kind.BITS, length=1),
        (("b'1'", "1", "1"), ("b'0'", "0", "0")),
        mysql=(b"\x01", b"\x00"),  # BIT(n) reads back as big-endian bytes
    ),
    Case(
        "bit10",
        "BIT(10)",
        ColumnType(Kind.BITS, length=10),
        (("b'1000000001'", "1000000001", "1000000001"), ("b'11'", "0000000011", "0000000011")),
        mysql=(b"\x02\x01", b"\x00\x03"),
    ),
    Case(
        "bit64",
        "BIT(64)",
        ColumnType(Kind.BITS, length=64),
        (("b'" + "1" * 64 + "'", "1" * 64, "1" * 64), ("1", "0" * 63 + "1", "0" * 63 + "1")),
        mysql=(b"\xff" * 8, bytes(7) + b"\x01"),
    ),
    Case("year", "YEAR", INT16, (i(2155), i(1901), ("0", 0, "0"), ("'0'", 2000, "2000"))),
    Case(
        "date",
        "DATE",
        ColumnType(Kind.DATE),
        (
            ("'2020-02-29'", dt.date(2020, 2, 29), "2020-02-29"),
            ("'1000-01-01'", dt.date(1000, 1, 1), "1000-01-01"),
            ("'9999-12-31'", dt.date(9999, 12, 31), "9999-12-31"),
            ("'0000-00-00'", None, None),
            ("'2020-00-15'", None, None),
            ("NULL", None, None),
        ),
    ),
    Case(
        "date_not_null",
        "DATE NOT NULL",
        ColumnType(Kind.DATE),
        (
            ("'0000-00-00'", "-infinity", "-infinity"),
            ("'2020-00-15'", "-infinity", "-infinity"),
            ("'2021-01-01'", dt.date(2021, 1, 1), "2021-01-01"),
        ),
        # MySQL's DATE cannot hold -infinity, the canonical form of a zero or partial date
        mysql=(REFUSED, REFUSED, dt.date(2021, 1, 1)),
    ),
    Case(
        "datetime6",
        "DATETIME(6)",
        ColumnType(Kind.TIMESTAMP, precision=6),
        (
            (
                "'2020-01-02 03:04:05.000006'",
                dt.datetime(2020, 1, 2, 3, 4, 5, 6),
                "2020-01-02 03:04:05.000006",
            ),
            (
                "'9999-12-31 23:59:59.999999'",
                dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
                "9999-12-31 23:59:59.999999",
            ),
            ("'0000-00-00 00:00:00'", None, None),
            ("'2020-01-00 10:00:00'", None, None),
        ),
    ),
    Case(
        "datetime_not_null",
        "DATETIME NOT NULL",
        ColumnType(Kind.TIMESTAMP, precision=0),
        (
            ("'0000-00-00 00:00:00'", "-infinity", "-infinity"),
            ("'2020-01-00 10:00:00'", "-infinity", "-infinity"),
            ("'2021-03-28 02:30:00'", dt.datetime(2021, 3, 28, 2, 30), "2021-03-28 02:30:00"),
        ),
        mysql=(REFUSED, REFUSED, dt.datetime(2021, 3, 28, 2, 30)),
    ),
    Case(
        "timestamp3",
        "TIMESTAMP(3) NULL",
        ColumnType(Kind.TIMESTAMPTZ, precision=3),
        (
            ("'2021-03-28 07:30:00.123'", utc(2021, 3, 28, 2, 0, 0, 123000), "2021-03-28 02:00:00.123+00"),
            ("'0000-00-00 00:00:00'", None, None),
            ("NULL", None, None),
        ),
        mysql=(dt.datetime(2021, 3, 28, 2, 0, 0, 123000), None, None),  # DATETIME holding UTC
    ),
    # Instants either side of Europe's 2021 DST changes, written from a +05:30 session;
    # 00:00 and 01:00 UTC on 2021-10-31 are both 02:00 on a Berlin wall clock.
    Case(
        "timestamp_dst",
        "TIMESTAMP(6) NULL",
        ColumnType(Kind.TIMESTAMPTZ, precision=6),
        (
            ("FROM_UNIXTIME(1635638400)", utc(2021, 10, 31, 0, 0), "2021-10-31 00:00:00+00"),
            ("FROM_UNIXTIME(1635642000.5)", utc(2021, 10, 31, 1, 0, 0, 500000), "2021-10-31 01:00:00.5+00"),
            (
                "'2021-03-28 06:29:59.999999'",
                utc(2021, 3, 28, 0, 59, 59, 999999),
                "2021-03-28 00:59:59.999999+00",
            ),
            ("'2021-03-28 06:30:00'", utc(2021, 3, 28, 1, 0), "2021-03-28 01:00:00+00"),
            ("'1970-01-01 05:30:00.5'", utc(1970, 1, 1, 0, 0, 0, 500000), "1970-01-01 00:00:00.5+00"),
            (
                "'2038-01-19 08:44:07.999999'",
                utc(2038, 1, 19, 3, 14, 7, 999999),
                "2038-01-19 03:14:07.999999+00",
            ),
        ),
        mysql=(
            dt.datetime(2021, 10, 31, 0, 0),
            dt.datetime(2021, 10, 31, 1, 0, 0, 500000),
            dt.datetime(2021, 3, 28, 0, 59, 59, 999999),
            dt.datetime(2021, 3, 28, 1, 0),
            dt.datetime(1970, 1, 1, 0, 0, 0, 500000),
            dt.datetime(2038, 1, 19, 3, 14, 7, 999999),
        ),
    ),
    Case(
        "timestamp_not_null",
        "TIMESTAMP NOT NULL DEFAULT '2000-01-01 00:00:00'",
        ColumnType(Kind.TIMESTAMPTZ, precision=0),
        (
            ("'0000-00-00 00:00:00'", "-infinity", "-infinity"),
            ("'2000-01-01 05:30:00'", utc(2000, 1, 1), "2000-01-01 00:00:00+00"),
        ),
        mysql=(REFUSED, dt.datetime(2000, 1, 1)),
    ),
    Case(
        "time",
        "TIME",
        ColumnType(Kind.TIME, precision=0),
        (t("-838:59:59"), t("838:59:59"), t("-00:00:01"), t("100:00:00")),
    ),
    Case("time1", "TIME(1)", ColumnType(Kind.TIME, precision=1), (t("-00:00:00.1"), t("-00:00:01.5"))),
    Case("time2", "TIME(2)", ColumnType(Kind.TIME, precision=2), (t("-838:59:58.9"), t("-00:00:00.01"))),
    Case("time3", "TIME(3)", ColumnType(Kind.TIME, precision=3), (t("-00:00:00.001"), t("-12:00:00.999"))),
    Case("time4", "TIME(4)", ColumnType(Kind.TIME, precision=4), (t("-12:00:00.0001"),)),
    Case("time5", "TIME(5)", ColumnType(Kind.TIME, precision=5), (t("-00:00:00.00001"), t("00:00:00.00001"))),
    Case(
        "time6",
        "TIME(6)",
        ColumnType(Kind.TIME, precision=6),
        (t("-838:59:59.999999"), t("-00:00:00.000001"), t("-00:00:01.25"), t("12:00:00.5"), t("00:00:00")),
    ),
    # non-negative only: what the BigQuery emulator can store as INTERVAL (emulator_gap)
    Case(
        "time6_positive",
        "TIME(6)",
        ColumnType(Kind.TIME, precision=6),
        (t("838:59:59"), t("00:00:00.001"), t("12:34:56.5"), t("24:00:00")),
    ),
    # MariaDB's JSON is text: kept verbatim on both paths; jsonb then normalises it
    Case(
        "json",
        "JSON",
        ColumnType(Kind.JSON),
        (
            (
                P('{"b": [1, 2.50, "ü😀"], "a": {"x": null}, "n": 3.141592653589793238462, "e": 1E2}'),
                '{"b": [1, 2.50, "ü😀"], "a": {"x": null}, "n": 3.141592653589793238462, "e": 1E2}',
                '{"a": {"x": null}, "b": [1, 2.50, "ü😀"], "e": 100, "n": 3.141592653589793238462}',
            ),
            (P("[]"), "[]", "[]"),
            (
                P('{"k": "line\\nnext \\u00e9 \\"q\\" \\\\"}'),
                '{"k": "line\\nnext \\u00e9 \\"q\\" \\\\"}',
                '{"k": "line\\nnext é \\"q\\" \\\\"}',
            ),
            (P('{"a":1, "a":2}'), '{"a":1, "a":2}', '{"a": 2}'),
            (
                P("123456789012345678901234567890"),
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
        ),
    ),
    Case(
        "longtext_json_check",
        "LONGTEXT CHECK (json_valid(c))",
        ColumnType(Kind.JSON),
        ((P('{ "z" : true }'), '{ "z" : true }', '{"z": true}'),),
    ),
    Case(
        "uuid",
        "UUID",
        ColumnType(Kind.UUID),
        tuple(
            (f"'{u}'", u, u)
            for u in (
                "123e4567-e89b-12d3-a456-426655440000",
                "6ccd780c-baba-1026-9564-5b8c656024db",
                "2c1d43b8-e6d7-4f85-a3a6-7d8c5d1d0a47",
                "018f1d0e-8b4b-7a3b-9c3d-0123456789ab",
                "00000000-0000-0000-0000-000000000000",
                "12345678-1234-5678-1234-567812340000",
            )
        ),
    ),
    Case(
        "inet6",
        "INET6",
        ColumnType(Kind.TEXT),
        tuple(
            (f"'{a}'", b, b)
            for a, b in (
                ("::", "::"),
                ("::1", "::1"),
                ("::1.2.3.4", "::1.2.3.4"),
                ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
                ("2001:db8::1", "2001:db8::1"),
                ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
                ("fe80:0:0:0:1:0:0:0", "fe80::1:0:0:0"),
                ("1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7::"),
                ("1:0:2:3:4:5:6:7", "1::2:3:4:5:6:7"),
                ("1:0:2:0:0:3:0:0", "1:0:2::3:0:0"),
                ("::0.0.0.2", "::2"),
                ("0:0:0:0:0:0:1:0", "::0.1.0.0"),
                ("::ffff:0:0", "::ffff:0.0.0.0"),
                ("::fffe:1.2.3.4", "::fffe:102:304"),
            )
        ),
    ),
    Case(
        "geometry",
        "GEOMETRY",
        ColumnType(Kind.BYTES),
        (
            ("ST_GeomFromText('POINT(1 2)')", bytes(4) + POINT_WKB, "\\x00000000" + POINT_WKB.hex()),
            (
                "ST_GeomFromText('POINT(1 2)', 4326)",
                bytes.fromhex("e6100000") + POINT_WKB,
                "\\xe6100000" + POINT_WKB.hex(),
            ),
        ),
    ),
    Case(
        "point",
        "POINT",
        ColumnType(Kind.BYTES),
        (("POINT(1, 2)", bytes(4) + POINT_WKB, "\\x00000000" + POINT_WKB.hex()),),
    ),
    Case("generated_virtual", "INT AS (id * 2) VIRTUAL", INT32, (("DEFAULT", 2, "2"), ("DEFAULT", 4, "4"))),
    Case(
        "generated_stored",
        "VARCHAR(20) AS (CONCAT('row-', id)) STORED",
        ColumnType(Kind.TEXT, length=20),
        (("DEFAULT", "row-1", "row-1"),),
    ),
]
CASE_IDS = [c.id for c in CASES]
BY_ID = {c.id: c for c in CASES}


def _mysql(**kwargs: Any) -> pymysql.connections.Connection:
    return pymysql.connect(charset="utf8mb4", autocommit=True, **MYSQL, **kwargs)


def _insert(cur: Any, table: str, rows: tuple[tuple[Any, Any, Any], ...]) -> None:
    for row_id, (literal, _, _) in enumerate(rows, start=1):
        if isinstance(literal, P):
            cur.execute(f"INSERT INTO `{table}` (id, c) VALUES (%s, %s)", (row_id, literal.value))
        else:
            cur.execute(f"INSERT INTO `{table}` (id, c) VALUES ({row_id}, {literal})")


def _read_binlog(
    position: tuple[str, int], tables: list[str], converters: dict[str, dict[str, my.Converter]]
) -> dict[str, list[dict[str, Any]]]:
    stream = BinLogStreamReader(
        connection_settings={
            "host": MYSQL["host"],
            "port": MYSQL["port"],
            "user": MYSQL["user"],
            "passwd": MYSQL["password"],
        },
        server_id=SERVER_ID,
        only_events=[WriteRowsEvent],
        resume_stream=True,
        log_file=position[0],
        log_pos=position[1],
        blocking=False,
        only_schemas=[DB],
        only_tables=tables,
    )
    images: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
    try:
        for event in stream:
            for row in event.rows:
                images[event.table].append(
                    my.binlog_image(row["values"], row["none_sources"], converters[event.table])
                )
    finally:
        stream.close()
    return images


@dataclass
class Source:
    columns: dict[str, Column]  # case id -> the `c` column as described
    infos: dict[str, my.MySQLColumnInfo]
    snapshot: dict[str, list[Any]]
    binlog: dict[str, list[Any]]


@pytest.fixture(scope="module")
def source() -> Any:
    admin = _mysql()
    cur = admin.cursor()
    cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")
    cur.execute(f"CREATE DATABASE `{DB}` CHARACTER SET utf8mb4")
    try:
        cur.execute(f"USE `{DB}`")
        for case in CASES:
            cur.execute(f"CREATE TABLE `t_{case.id}` (id INT PRIMARY KEY, c {case.ddl})")
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
        writer = _mysql(database=DB)
        with writer.cursor() as wcur:
            for statement in WRITER_SESSION:
                wcur.execute(statement)
            for case in CASES:
                _insert(wcur, f"t_{case.id}", case.rows)
        writer.close()

        columns, infos, converters, snapshot = {}, {}, {}, {}
        reader = _mysql(database=DB)
        with reader.cursor() as rcur:
            for statement in my.SNAPSHOT_SESSION_SQL:
                rcur.execute(statement)
            for case in CASES:
                table = f"t_{case.id}"
                described = dict((c.name, (c, info)) for c, info in my.describe_columns(rcur, DB, table))
                col, info = described["c"]
                columns[case.id], infos[case.id] = col, info
                converters[table] = {
                    name: my.binlog_converter(c, inf) for name, (c, inf) in described.items()
                }
                convert = my.snapshot_converter(col)
                rcur.execute(f"SELECT {my.snapshot_select_expr(col, '`c`')} FROM `{table}` ORDER BY id")
                snapshot[case.id] = [convert(v) for (v,) in rcur.fetchall()]
        reader.close()

        images = _read_binlog((file, pos), [f"t_{c.id}" for c in CASES], converters)
        binlog = {
            c.id: [img["c"] for img in sorted(images[f"t_{c.id}"], key=lambda r: r["id"])] for c in CASES
        }
        yield Source(columns, infos, snapshot, binlog)
    finally:
        cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")
        admin.close()


@pytest.fixture(scope="module")
def pg() -> Any:
    admin = psycopg2.connect(dbname="postgres", **PG)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DB)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    conn = psycopg2.connect(dbname=DB, **PG)
    with conn.cursor() as cur:
        cur.execute(
            "SET TimeZone = 'UTC'; SET extra_float_digits = 1; SET IntervalStyle = 'postgres';"
            " SET DateStyle = 'ISO, MDY'; SET bytea_output = 'hex'"
        )
    conn.commit()
    try:
        yield conn
    finally:
        conn.close()
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DB)))
        admin.close()


def _typed(values: list[Any]) -> list[tuple[str, str]]:
    """Values with their types, so 2 == 2.0 == Decimal(2) and aware == naive mismatches show."""
    return [(type(v).__name__, repr(v)) for v in values]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_information_schema_maps_to_shared_type(source: Source, case_id: str) -> None:
    case = BY_ID[case_id]
    col = source.columns[case_id]
    assert col.type == case.type
    assert col.generated == case_id.startswith("generated_")
    assert col.nullable == ("NOT NULL" not in case.ddl)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_snapshot_and_binlog_give_the_canonical_values(source: Source, case_id: str) -> None:
    expected = _typed([canonical for _, canonical, _ in BY_ID[case_id].rows])
    assert _typed(source.snapshot[case_id]) == expected, "snapshot"
    assert _typed(source.binlog[case_id]) == expected, "binlog"


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_copy_into_postgresql_is_exact(source: Source, pg: Any, case_id: str) -> None:
    case = BY_ID[case_id]
    ct = source.columns[case_id].type
    encode = copy_encoder(ct)
    table = sql.Identifier(f"t_{case_id}")
    if any(pg_text is NUL_REJECTED for _, _, pg_text in case.rows):
        with pytest.raises(TextNulError):
            for _, canonical, _ in case.rows:
                encode(canonical)
        return
    data = "".join(f"{n}\t{encode(v)}\n" for n, v in enumerate(source.snapshot[case_id], start=1))
    with pg.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, c {})").format(table, sql.SQL(pg_type_sql(ct)))
        )
        cur.copy_expert(sql.SQL("COPY {} (id, c) FROM STDIN").format(table).as_string(pg), io.StringIO(data))
        cur.execute(sql.SQL("SELECT c::text FROM {} ORDER BY id").format(table))
        got = [v for (v,) in cur.fetchall()]
    pg.commit()
    assert got == [pg_text for _, _, pg_text in case.rows]


# --- end to end at every destination: each case snapshotted and streamed by cartridge-warp ---------

SNAPSHOT, STREAM = "s_", "b_"  # a table per case copied by the snapshot, another filled while streaming
PG_READING = (  # the session the PostgreSQL expectations (``c::text``) are written for
    "SET TimeZone = 'UTC'",
    "SET extra_float_digits = 1",
    "SET IntervalStyle = 'postgres'",
    "SET DateStyle = 'ISO, MDY'",
    "SET bytea_output = 'hex'",
)


@dataclass
class Landed:
    """What one cartridge-warp run left at its destination."""

    rows: dict[str, dict[int, Any]]  # table -> id -> the value read back (PostgreSQL: as text)
    dead: dict[str, list[int]]  # table -> ids of the rows in the dead letters
    types: dict[str, str]  # table -> the type of its column c, as the destination's catalogue spells it


def _land(dbs: Databases, state_dir: str) -> Landed:
    """Snapshot every case's rows, then stream them again, with the real cartridge-warp; read it all back."""
    cases = [
        c
        for c in CASES
        if dbs.dest.kind != "bigquery" or (c.id in BIGQUERY_CASE_IDS and emulator_gap(c) is None)
    ]
    for case in cases:
        for prefix in (SNAPSHOT, STREAM):
            dbs.sql(f"CREATE TABLE `{prefix}{case.id}` (id INT PRIMARY KEY, c {case.ddl})")
    writer = _mysql(database=dbs.name)
    w = Warp(dbs, state_dir, None, [], {})
    store = StateStore(state_dir)
    try:
        with writer.cursor() as wcur:
            for statement in WRITER_SESSION:
                wcur.execute(statement)
            for case in cases:
                _insert(wcur, SNAPSHOT + case.id, case.rows)
            w.start()
            wait_until(lambda: STREAMING in w.output or not w.alive(), 300, "the snapshot to finish")
            assert w.alive(), f"cartridge-warp exited with {w.proc.poll() if w.proc else None}:\n{w.output}"
            for case in cases:
                _insert(wcur, STREAM + case.id, case.rows)
        end = binlog_position(dbs)

        def applied() -> bool:
            assert w.alive(), f"cartridge-warp exited:\n{w.output[-6000:]}"
            checkpoint = store.checkpoint(dbs.name)
            return checkpoint is not None and position_order(checkpoint) >= end

        wait_until(applied, 300, f"the checkpoint to reach {end}", interval=0.3)
        assert w.stop(timeout=60) == 0, w.output[-4000:]
        assert "Traceback" not in w.output, w.output
        read = "SELECT id, c::text FROM {} ORDER BY id" if dbs.dest.kind == "postgresql" else None
        if read:
            for statement in PG_READING:
                dbs.dest.query(statement)
        rows = {
            prefix + case.id: dict(
                dbs.dest.query(read or "SELECT id, c FROM {} ORDER BY id", prefix + case.id)
            )
            for case in cases
            for prefix in (SNAPSHOT, STREAM)
        }
        if dbs.dest.kind == "bigquery":
            from warpd.connectors.bigquery.types import canonical as read_back

            by_table = {prefix + c.id: c for c in cases for prefix in (SNAPSHOT, STREAM)}
            rows = {
                t: {n: _normal(read_back(by_table[t].type, v)) for n, v in r.items()} for t, r in rows.items()
            }
            types = {t: dict(dbs.dest.column_types(t))["c"] for t in by_table}
        elif dbs.dest.kind == "postgresql":
            spelled = "SELECT c.relname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            spelled += "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            spelled += "WHERE n.nspname = %s AND a.attname = 'c' AND c.relkind = 'r'"
        else:
            spelled = "SELECT table_name, column_type FROM information_schema.columns "
            spelled += "WHERE table_schema = %s AND column_name = 'c'"
        if dbs.dest.kind != "bigquery":
            types = {
                str(t): str(spelling) for t, spelling in dbs.dest.query(spelled, args=(dbs.dest.schema,))
            }
        dead: dict[str, list[int]] = {}
        for letter in store.dead_letters(dbs.name):
            dead.setdefault(letter.table, []).append(int(letter.row["id"]))
        return Landed(rows, {table: sorted(ids) for table, ids in dead.items()}, types)
    finally:
        store.close()
        writer.close()
        if w.alive():
            w.kill()


@pytest.fixture(scope="module")
def land(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Landed]]:
    """``land(kind)``: the one cartridge-warp run of this module to a destination of ``kind``."""
    runs: dict[str, Landed | BaseException] = {}
    made: list[Databases] = []

    def run(kind: str) -> Landed:
        if kind not in runs:
            dbs = Databases(f"warp_t_{uuid.uuid4().hex[:10]}", kind)
            made.append(dbs)
            try:
                runs[kind] = _land(dbs, str(tmp_path_factory.mktemp(f"land-{kind}")))
            except BaseException as exc:  # noqa: BLE001 - every case of this kind reports it
                runs[kind] = exc
        landed = runs[kind]
        if isinstance(landed, BaseException):
            raise landed
        return landed

    try:
        yield run
    finally:
        for dbs in made:
            dbs.drop()


def mysql_column_type(ct: ColumnType) -> str:
    """The MySQL/MariaDB column type of docs/type-mapping.md ("MySQL/MariaDB destination"), as MariaDB
    spells it in information_schema (its JSON is LONGTEXT with a JSON_VALID check)."""
    p = ct.precision
    spelled = {
        Kind.INT: {16: "smallint(6)", 32: "int(11)", 64: "bigint(20)"}.get(ct.bits or 64, ""),
        Kind.DECIMAL: f"decimal({ct.precision},{ct.scale})",
        Kind.FLOAT: "double",
        Kind.TEXT: "longtext",
        Kind.BYTES: "longblob",
        Kind.BITS: f"bit({ct.length})",
        Kind.DATE: "date",
        Kind.TIME: f"time({p})" if p else "time",
        Kind.TIMESTAMP: f"datetime({p})" if p else "datetime",
        Kind.TIMESTAMPTZ: f"datetime({p})" if p else "datetime",
        Kind.JSON: "longtext",
        Kind.TEXT_ARRAY: "longtext",
        Kind.UUID: "char(36)",
    }
    return spelled[ct.kind]


@pytest.mark.destinations
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_each_case_gets_the_documented_column_type(
    land: Callable[[str], Landed], destination_kind: str, case_id: str
) -> None:
    case = BY_ID[case_id]
    expected = pg_type_sql(case.type) if destination_kind == "postgresql" else mysql_column_type(case.type)
    landed = land(destination_kind)
    assert [landed.types[prefix + case_id] for prefix in (SNAPSHOT, STREAM)] == [expected, expected]


@pytest.mark.destinations
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_each_value_lands_exactly_at_the_destination(
    land: Callable[[str], Landed], destination_kind: str, case_id: str
) -> None:
    """Snapshot and stream both write each value exactly, or put its row in the dead letters (docs)."""
    check_landed(land, destination_kind, case_id)


# BigQuery: a case per shared kind and BigQuery type, and every edge a kind has (extremes, NUL, zero
# dates, NaN, all 256 byte values, 64-bit bit strings...): each table costs the emulator a few
# seconds of jobs, so not all 60-odd cases run against it
BIGQUERY_CASE_IDS = [
    "tinyint",
    "bigint",
    "bigint_unsigned",
    "decimal_10_2",
    "decimal_65_30",
    "float",
    "double",
    "varchar_utf8mb4",
    "text_with_nul",
    "enum",
    "set",
    "blob",
    "binary",
    "bit10",
    "bit64",
    "year",
    "date",
    "date_not_null",
    "datetime6",
    "datetime_not_null",
    "timestamp3",
    "timestamp_dst",
    "time6",
    "time6_positive",
    "json",
    "uuid",
    "point",
    "generated_stored",
]


@pytest.mark.parametrize("case_id", BIGQUERY_CASE_IDS)
def test_bigquery_column_type_is_the_documented_one(land: Callable[[str], Landed], case_id: str) -> None:
    case = BY_ID[case_id]
    if gap := emulator_gap(case):
        pytest.skip(gap)
    landed = land("bigquery")
    expected = bigquery_column_type(case.type)
    assert [landed.types[prefix + case_id] for prefix in (SNAPSHOT, STREAM)] == [expected, expected]


@pytest.mark.parametrize("case_id", BIGQUERY_CASE_IDS)
def test_bigquery_values_land_exactly(land: Callable[[str], Landed], case_id: str) -> None:
    """As test_each_value_lands_exactly_at_the_destination, into BigQuery (docs/bigquery.md)."""
    if gap := emulator_gap(BY_ID[case_id]):
        pytest.skip(gap)
    check_landed(land, "bigquery", case_id)


def check_landed(land: Callable[[str], Landed], destination_kind: str, case_id: str) -> None:
    expected = BY_ID[case_id].expected(destination_kind)
    landed = land(destination_kind)
    want = {n: value for n, value in enumerate(expected, start=1) if value is not REFUSED}
    refused = [n for n, value in enumerate(expected, start=1) if value is REFUSED]
    for prefix, path in ((SNAPSHOT, "snapshot"), (STREAM, "stream")):
        table = prefix + case_id
        got = landed.rows[table]
        assert _typed(list(got.values())) == _typed(list(want.values())), path
        assert list(got) == list(want), f"{path}: row ids"
        assert landed.dead.get(table, []) == refused, f"{path}: dead letters"


# --- behaviour of pymysqlreplication we cannot fix, pinned so a library change is noticed ------------


def _binlog_of_one_table(ddl: str, value: Any) -> tuple[Column, my.MySQLColumnInfo, Any]:
    conn = _mysql()
    cur = conn.cursor()
    db = DB + "_lim"
    cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
    cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
    try:
        cur.execute(f"CREATE TABLE `{db}`.t (id INT PRIMARY KEY, c {ddl})")
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
        cur.execute(f"INSERT INTO `{db}`.t VALUES (1, %s)", (value,))
        ((col, info),) = [ci for ci in my.describe_columns(cur, db, "t") if ci[0].name == "c"]
        stream = BinLogStreamReader(
            connection_settings={
                "host": MYSQL["host"],
                "port": MYSQL["port"],
                "user": MYSQL["user"],
                "passwd": MYSQL["password"],
            },
            server_id=SERVER_ID + 1,
            only_events=[WriteRowsEvent],
            resume_stream=True,
            log_file=file,
            log_pos=pos,
            blocking=False,
            only_schemas=[db],
        )
        try:
            rows = [row for event in stream for row in event.rows]
        finally:
            stream.close()
        return col, info, rows[0]
    finally:
        cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        conn.close()


def test_latin1_bytes_undefined_in_cp1252_decode_as_mysql_does() -> None:
    """pymysqlreplication decodes latin1 as strict cp1252; MySQL's latin1 also has 0x81, 0x8D, ...

    libfixes decodes them as the server's CONVERT(... USING utf8mb4) does (U+0081, ...).
    """
    from warpd.connectors.mysql import libfixes

    libfixes.apply()
    odd = "\x81\x8d\x8f\x90\x9d\u20ac"
    col, info, row = _binlog_of_one_table("VARCHAR(8) CHARACTER SET latin1", odd)
    assert my.binlog_converter(col, info)(row["values"]["c"]) == odd


def test_latin1_enum_with_non_ascii_label_is_refused_not_guessed() -> None:
    col, info, row = _binlog_of_one_table("ENUM('x','é') CHARACTER SET latin1", "é")
    assert row["values"]["c"] == ""  # the library cannot decode the label
    with pytest.raises(ValueError, match="ENUM label"):
        my.binlog_converter(col, info)(row["values"]["c"])


# --- unit tests: spellings, encoder, JSON -----------------------------------------------------------

D = ColumnType(Kind.DECIMAL, precision=20, scale=0)


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("bigint(20) unsigned", D),
        ("BIGINT UNSIGNED", D),
        ("serial", D),
        ("int(10) unsigned zerofill", INT64),
        ("INT", INT32),
        ("int(11)", INT32),
        ("INTEGER", INT32),
        ("mediumint unsigned", INT32),
        ("smallint(5) unsigned", INT32),
        ("tinyint(1)", INT16),
        ("BOOLEAN", INT16),
        ("decimal(65,30)", ColumnType(Kind.DECIMAL, precision=65, scale=30)),
        ("DECIMAL", ColumnType(Kind.DECIMAL, precision=10, scale=0)),
        ("NUMERIC(7)", ColumnType(Kind.DECIMAL, precision=7, scale=0)),
        ("float", ColumnType(Kind.FLOAT, bits=32)),
        ("float(7,3)", ColumnType(Kind.FLOAT, bits=32)),
        ("FLOAT(25)", ColumnType(Kind.FLOAT, bits=64)),
        ("double", ColumnType(Kind.FLOAT, bits=64)),
        ("DOUBLE PRECISION", ColumnType(Kind.FLOAT, bits=64)),
        ("REAL", ColumnType(Kind.FLOAT, bits=64)),
        ("enum('a','b')", ColumnType(Kind.TEXT)),
        ("enum('it''s','x)y')", ColumnType(Kind.TEXT)),
        ("set('x','y')", ColumnType(Kind.TEXT_ARRAY)),
        ("bit(5)", ColumnType(Kind.BITS, length=5)),
        ("BIT", ColumnType(Kind.BITS, length=1)),
        ("year(4)", INT16),
        ("date", ColumnType(Kind.DATE)),
        ("datetime(6)", ColumnType(Kind.TIMESTAMP, precision=6)),
        ("DATETIME", ColumnType(Kind.TIMESTAMP, precision=0)),
        ("timestamp(3)", ColumnType(Kind.TIMESTAMPTZ, precision=3)),
        ("time(6)", ColumnType(Kind.TIME, precision=6)),
        ("char(10)", ColumnType(Kind.TEXT, length=10)),
        ("VARCHAR(20)", ColumnType(Kind.TEXT, length=20)),
        ("NATIONAL CHARACTER VARYING(5)", ColumnType(Kind.TEXT, length=5)),
        ("NCHAR(2)", ColumnType(Kind.TEXT, length=2)),
        ("VARCHAR(8) CHARACTER SET binary", ColumnType(Kind.BYTES, length=8)),
        ("VARCHAR(8) BINARY", ColumnType(Kind.TEXT, length=8)),
        ("longtext", ColumnType(Kind.TEXT)),
        ("LONG VARCHAR", ColumnType(Kind.TEXT)),
        ("varbinary(16)", ColumnType(Kind.BYTES, length=16)),
        ("binary(16)", ColumnType(Kind.BYTES, length=16)),
        ("LONG VARBINARY", ColumnType(Kind.BYTES)),
        ("blob", ColumnType(Kind.BYTES)),
        ("json", ColumnType(Kind.JSON)),
        ("geometry", ColumnType(Kind.BYTES)),
        ("multipolygon", ColumnType(Kind.BYTES)),
        ("uuid", ColumnType(Kind.UUID)),
        ("inet6", ColumnType(Kind.TEXT)),
        ("inet4", ColumnType(Kind.TEXT)),
    ],
)
def test_column_type_spellings(spelling: str, expected: ColumnType) -> None:
    assert my.column_type(spelling) == expected


def test_column_type_json_flag_and_unknown_types(caplog: pytest.LogCaptureFixture) -> None:
    assert my.column_type("longtext", is_json=True) == ColumnType(Kind.JSON)
    assert my.column_type("frobnicator(3)") == ColumnType(Kind.TEXT)
    assert "frobnicator" in caplog.text
    assert my.column_type("mystery", data_type="int") == INT32


def test_copy_encoder_escapes_text() -> None:
    enc = copy_encoder(ColumnType(Kind.TEXT))
    assert enc("a\tb\nc\rd\\e") == "a\\tb\\nc\\rd\\\\e"
    assert enc("\\N") == "\\\\N"
    assert enc(None) == "\\N"
    assert enc("😀") == "😀"
    with pytest.raises(TextNulError):
        enc("a\x00b")


def test_copy_encoder_rejects_nul_in_json_and_arrays() -> None:
    enc = copy_encoder(ColumnType(Kind.JSON))
    with pytest.raises(TextNulError):
        enc('{"a":"x\\u0000"}')
    assert enc('{"a":"x\\\\u0000"}') == '{"a":"x\\\\\\\\u0000"}'  # an escaped backslash, then text
    with pytest.raises(TextNulError):
        copy_encoder(ColumnType(Kind.TEXT_ARRAY))(["ok", "a\x00"])


def test_copy_encoder_other_kinds() -> None:
    assert copy_encoder(ColumnType(Kind.BYTES))(b"\x00\xff") == "\\\\x00ff"
    f = copy_encoder(ColumnType(Kind.FLOAT, bits=64))
    assert [f(v) for v in (0.1, 1e300, float("nan"), float("inf"), float("-inf"), -0.0)] == [
        "0.1",
        "1e+300",
        "NaN",
        "Infinity",
        "-Infinity",
        "-0.0",
    ]
    assert copy_encoder(ColumnType(Kind.DECIMAL))(Decimal("0E-30")) == "0." + "0" * 30
    assert copy_encoder(ColumnType(Kind.DECIMAL))(Decimal("1E+3")) == "1000"
    interval = copy_encoder(ColumnType(Kind.TIME))
    assert interval(-dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=1)) == "-838:59:59.000001"
    assert interval(dt.timedelta(microseconds=-1)) == "-0:00:00.000001"
    assert interval(dt.timedelta(days=2, seconds=1)) == "48:00:01.000000"
    tz = copy_encoder(ColumnType(Kind.TIMESTAMPTZ))
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert tz(dt.datetime(2021, 1, 1, 5, 30, tzinfo=ist)) == "2021-01-01 00:00:00+00:00"
    assert tz("-infinity") == "-infinity"
    assert copy_encoder(ColumnType(Kind.DATE))("-infinity") == "-infinity"
    assert (
        copy_encoder(ColumnType(Kind.TEXT_ARRAY))(['a"b', "c\\d", None, "", "x\ty"])
        == '{"a\\\\"b","c\\\\\\\\d",NULL,"","x\\ty"}'
    )
    assert copy_encoder(ColumnType(Kind.BOOLEAN))(True) == "t"


def test_pg_type_sql() -> None:
    assert [
        pg_type_sql(ct)
        for ct in (
            INT16,
            INT32,
            INT64,
            D,
            ColumnType(Kind.DECIMAL),
            ColumnType(Kind.FLOAT, bits=32),
            ColumnType(Kind.BITS, length=10),
            ColumnType(Kind.TIME, precision=6),
            ColumnType(Kind.TIMESTAMP, precision=6),
            ColumnType(Kind.TIMESTAMPTZ, precision=0),
            ColumnType(Kind.JSON),
            ColumnType(Kind.UUID),
            ColumnType(Kind.TEXT_ARRAY),
            ColumnType(Kind.BOOLEAN),
            ColumnType(Kind.BYTES),
        )
    ] == [
        "smallint",
        "integer",
        "bigint",
        "numeric(20,0)",
        "numeric",
        "real",
        "bit(10)",
        "interval",
        "timestamp(6) without time zone",
        "timestamp(0) with time zone",
        "jsonb",
        "uuid",
        "text[]",
        "boolean",
        "bytea",
    ]


def test_mysql_binary_json_structure_normalises_like_its_text() -> None:
    parsed = {b"b": [1, 2.5, b"\xc3\xbc"], b"a": {b"x": None}, b"big": 18446744073709551615, b"d": 1e300}
    text = '{"b": [1, 2.50, "ü"], "a": {"x": null}, "big": 18446744073709551615, "d": 1e300}'
    assert (
        my.normalise_json(parsed)
        == my.normalise_json(text)
        == '{"b":[1,2.5,"ü"],"a":{"x":null},"big":18446744073709551615,"d":1e+300}'
    )


def test_float32_canonical_form() -> None:
    col = Column("f", ColumnType(Kind.FLOAT, bits=32), source_type="float")
    snap, binlog = my.snapshot_converter(col), my.binlog_converter(col)
    assert snap(1.2345677614212036) == binlog(1.2345677614212036) == 1.2345678
    assert repr(snap(-0.0)) == repr(binlog(-0.0)) == "-0.0"
    assert binlog(3.4028234663852886e38) == 3.4028235e38


# --- the snapshot's server-encoded path (warpd/connectors/mysql/copytext.py) must land the same values ---


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_server_encoded_snapshot_lands_the_same_values(
    source: Source, pg: Any, case_id: str, tmp_path: Any
) -> None:
    from warpd.connectors.mysql.copytext import copy_text_expr
    from warpd.connectors.mysql.source import MySQLSource
    from warpd.connectors.postgresql.destination import PostgresDestination, make_plan
    from warpd.engine.applier import DestinationPool, TableApplier
    from warpd.state.store import StateStore

    case = BY_ID[case_id]
    table = f"t_{case_id}"
    mysql_source = MySQLSource(
        f"mysql://root@{MYSQL['host']}:{MYSQL['port']}/{DB}", DB, server_id=SERVER_ID + 7
    )
    pg_uri = f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{DB}"
    schema = mysql_source.describe(table)
    plan = make_plan(schema, "encoded", soft_delete=False, metadata=False)
    pool = DestinationPool(lambda: PostgresDestination(pg_uri))
    store = StateStore(str(tmp_path))
    applier = TableApplier(
        "encoded",
        plan,
        SchemaConfig(name="encoded").table_settings(table),
        pool,
        lambda *letter: store.add_dead_letter("encoded", *letter),
        lambda: False,
    )
    try:
        pool.get().prepare(plan)
        chunks = list(mysql_source.snapshot(schema, None, 1000, copy_text=True))
        server_side = copy_text_expr(schema.column("c"), "`c`") is not None
        assert ("c" in chunks[0].encoded_columns) is server_side, "the path this case means to test"
        for chunk in chunks:
            applier.copy_snapshot(chunk)
        with pg.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT id, c::text FROM {} ORDER BY id").format(sql.Identifier("encoded", table))
            )
            got = dict(cur.fetchall())
        pg.commit()
    finally:
        applier.close()
        pool.close()
        mysql_source.close()
    expected = {n: text for n, (_, _, text) in enumerate(case.rows, start=1) if text is not NUL_REJECTED}
    assert got == expected
    rejected = [n for n, (_, _, text) in enumerate(case.rows, start=1) if text is NUL_REJECTED]
    assert sorted(int(d.row["id"]) for d in store.dead_letters("encoded")) == rejected


# --- keys: values a bulk load could confuse, as keys of snapshotted, updated and deleted rows ----------

KEY_CASES = {  # table -> (key column DDL, key values)
    "k_text": (
        "VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin",
        ["\\N", "N", "", "a", "a ", "A", "tab\tkey", "new\nline", "back\\slash", "😀", "ü"],
    ),
    # PostgreSQL's text cannot hold NUL: those rows go to its dead letters (docs/type-mapping.md)
    "k_nul": (
        "VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin",
        ["nul", "nul\x00", "\x00nul\x00"],
    ),
    "k_bytes": (
        "VARBINARY(16)",
        [b"", b"\x00", b"\x00\x00", b"\\N", b"\t\n\\", b"\xff", b"\r\x1a", b"a", b"A", b"a "],
    ),
    "k_unsigned": ("BIGINT UNSIGNED", [0, 1, 9223372036854775807, 9223372036854775808, 18446744073709551615]),
    "k_decimal": (
        "DECIMAL(65,30)",
        [
            Decimal("-12345678901234567890123456789012345.123456789012345678901234567891"),
            Decimal("0.000000000000000000000000000001"),
            Decimal(0),
            Decimal("1.5"),
        ],
    ),
    "k_float": ("FLOAT", [0.1, 1.2345678, -3.4e38, 16777216.0, 0.0]),  # float32 values, as the source holds
    "k_double": ("DOUBLE", [0.30000000000000004, 0.1, 1.7976931348623157e308, -2.2250738585072014e-308]),
    "k_bit": ("BIT(10)", [0, 1, 512, 1023]),
    "k_time": (
        "TIME(6)",
        [
            -dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999),
            -dt.timedelta(microseconds=1),
            dt.timedelta(0),
            dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999),
        ],
    ),
    "k_timestamp": (
        "TIMESTAMP(6)",
        [dt.datetime(1970, 1, 1, 0, 0, 1), dt.datetime(2038, 1, 19, 3, 14, 7, 999999)],
    ),
    "k_uuid": ("UUID", ["00000000-0000-0000-0000-000000000000", "123e4567-e89b-12d3-a456-426655440000"]),
    "k_enum": ("ENUM('a','b','é')", ["a", "b", "é"]),
    "k_datetime": (
        "DATETIME(6)",
        [
            dt.datetime(2020, 1, 1, 0, 0, 0, 1),
            dt.datetime(2020, 1, 1),
            dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        ],
    ),
}


@pytest.mark.destinations
def test_key_values_a_bulk_load_could_confuse_are_kept_apart(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    """Each key value above is one row, snapshotted or streamed, then updated and deleted by that key."""
    from test_replication import assert_converged, start_streaming, stop_cleanly

    dbs.sql("SET SESSION time_zone = '+00:00'")
    for table, (ddl, _keys) in KEY_CASES.items():
        dbs.sql(f"CREATE TABLE {table} (k {ddl} PRIMARY KEY, v INT NOT NULL)")
    half = {table: len(keys) // 2 for table, (_ddl, keys) in KEY_CASES.items()}
    for table, (_ddl, keys) in KEY_CASES.items():  # the first half by the snapshot
        dbs.many(f"INSERT INTO {table} VALUES (%s, %s)", [(k, n) for n, k in enumerate(keys[: half[table]])])
    w = start_streaming(warp)
    for table, (_ddl, keys) in KEY_CASES.items():  # the rest streamed; then every row updated by its key
        dbs.many(
            f"INSERT INTO {table} VALUES (%s, %s)",
            [(k, n) for n, k in enumerate(keys) if n >= half[table]],
        )
        dbs.sql(f"UPDATE {table} SET v = v + 100")  # each row's image carries its key
    refused = {"nul\x00", "\x00nul\x00"} if dbs.dest.kind == "postgresql" else set()
    exact = [table for table in KEY_CASES if not (refused and table == "k_nul")]
    assert_converged(dbs, w, tables=exact)
    for table, (_ddl, keys) in KEY_CASES.items():
        got = dbs.dest.query("SELECT k, v FROM {}", table)
        assert sorted(v for _k, v in got) == [n + 100 for n, k in enumerate(keys) if k not in refused], table
    for table in KEY_CASES:  # every other row deleted by its key
        dbs.sql(f"DELETE FROM {table} WHERE v % 2 = 0")  # the rows of keys[::2], deleted by their key
    assert_converged(dbs, w, tables=exact)
    for table, (_ddl, keys) in KEY_CASES.items():
        got = dbs.dest.query("SELECT v FROM {}", table)
        kept = [n + 100 for n in range(1, len(keys), 2) if keys[n] not in refused]
        assert sorted(v for (v,) in got) == kept, table
    # the refused rows' changes, and nothing else (how many letters each depends on how changes batch)
    letters = {(d.table, d.row["k"]) for d in state_dead_letters(w, dbs)}
    assert letters == {("k_nul", key) for key in refused}, letters
    stop_cleanly(w)


def state_dead_letters(w: Warp, dbs: Databases) -> list[Any]:
    store = StateStore(w.cmd[w.cmd.index("--state-dir") + 1])
    try:
        return store.dead_letters(dbs.name)
    finally:
        store.close()


# --- the MySQL destination's other load path: multi-row INSERTs when the server has local_infile OFF ---


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_mysql_destination_insert_fallback_lands_the_same_values(source: Source, case_id: str) -> None:
    """Without ``LOAD DATA LOCAL`` (MySQL 8's default) the same values land, or the same rows are refused.

    The server's ``local_infile`` is global and shared with every other test, so this destination
    is told it is OFF rather than the server being changed.
    """
    from warpd.connectors.mysql.destination import MySQLDestination
    from warpd.connectors.mysql.source import MySQLSource
    from warpd.engine.applier import DestinationPool, TableApplier
    from warpd.engine.batch import FinalState

    class WithoutLocalInfile(MySQLDestination):
        def _open(self) -> Any:
            conn = super()._open()
            self.local_infile = False
            return conn

    case = BY_ID[case_id]
    table = f"t_{case_id}"
    uri = f"mysql://root@{MYSQL['host']}:{MYSQL['port']}/"
    mysql_source = MySQLSource(uri + DB, DB, server_id=SERVER_ID + 9)
    pool = DestinationPool(lambda: WithoutLocalInfile(uri))
    schema = mysql_source.describe(table)
    letters: dict[str, list[int]] = {}
    got: dict[str, dict[int, Any]] = {}
    try:
        for path, dest_schema in (("snapshot", DB + "_is"), ("stream", DB + "_ib")):
            plan = pool.get().plan(schema, dest_schema, soft_delete=False, metadata=False)
            pool.get().prepare(plan)
            applier = TableApplier(
                "fallback",
                plan,
                SchemaConfig(name="fallback").table_settings(table),
                pool,
                lambda _t, _op, row, _reason, _pos, path=path: letters.setdefault(path, []).append(
                    int(row["id"])
                ),
                lambda: False,
            )
            try:
                if path == "snapshot":
                    for chunk in mysql_source.snapshot(schema, None, 1000, copy_text=False):
                        applier.copy_snapshot(chunk)
                else:
                    applier.apply(
                        FinalState({"id": n, "c": value}, False, "insert", None, None)
                        for n, value in enumerate(source.binlog[case_id], start=1)
                    )
            finally:
                applier.close()
            with pool.get().conn.cursor() as cur:
                cur.execute(f"SELECT id, c FROM `{dest_schema}`.`{table}` ORDER BY id")
                got[path] = dict(cur.fetchall())
        assert pool.get().local_infile is False, "the path this test means to take"
    finally:
        pool.close()
        mysql_source.close()
        admin = _mysql()
        with admin.cursor() as cur:
            for suffix in ("_is", "_ib"):
                cur.execute(f"DROP DATABASE IF EXISTS `{DB}{suffix}`")
        admin.close()
    expected = case.expected("mysql")
    want = {n: value for n, value in enumerate(expected, start=1) if value is not REFUSED}
    refused = [n for n, value in enumerate(expected, start=1) if value is REFUSED]
    for path in ("snapshot", "stream"):
        assert _typed(list(got[path].values())) == _typed(list(want.values())), path
        assert list(got[path]) == list(want), f"{path}: row ids"
        assert sorted(letters.get(path, [])) == refused, f"{path}: dead letters"


# --- widenings at their point in the stream: values before and after stay exact -----------------------

WIDENINGS = (  # column, type before, type after, a value only the type after holds
    ("a", "INT", "BIGINT UNSIGNED", "18446744073709551615"),
    (
        "d",
        "DECIMAL(10,2)",
        "DECIMAL(65,30)",
        "-12345678901234567890123456789012345.123456789012345678901234567891",
    ),
    ("f", "FLOAT", "DOUBLE", "0.30000000000000004"),
    ("dt", "DATETIME", "DATETIME(6)", "'9999-12-31 23:59:59.999999'"),
    ("ts", "TIMESTAMP NULL", "TIMESTAMP(6) NULL", "'2038-01-19 03:14:07.999999'"),
    ("tm", "TIME", "TIME(6)", "'838:59:59.999999'"),
    ("v", "VARCHAR(5)", "TEXT", "CONCAT(REPEAT('x', 1000), '\\\\N\\t')"),
    ("b", "VARBINARY(4)", "BLOB", "X'" + ALL_BYTES.hex() + "'"),
    ("bt", "BIT(4)", "BIT(40)", "b'" + "1" * 40 + "'"),
    ("s", "SET('x','y')", "SET('x','y','z')", "'z,x'"),
)


@pytest.mark.destinations
def test_widened_columns_keep_every_value_exact(dbs: Databases, warp: Callable[..., Warp]) -> None:
    """Each column widened mid-stream: the rows before (snapshotted and streamed) keep the value the
    source converted them to, and a value only the wider type holds lands exactly."""
    from test_replication import assert_converged, start_streaming, stop_cleanly

    dbs.sql("SET SESSION time_zone = '+00:00'")
    dbs.sql(
        f"CREATE TABLE w (id INT PRIMARY KEY, {', '.join(f'{c} {old}' for c, old, _new, _v in WIDENINGS)})"
    )
    before = "2147483647, 12345678.99, 0.1, '2020-01-01 00:00:01', '2020-01-01 00:00:01', '-838:59:59', "
    before += "'héllo', X'00090a5c', b'1010', 'y'"
    dbs.sql(f"INSERT INTO w VALUES (1, {before})")
    w = start_streaming(warp)
    dbs.sql(f"INSERT INTO w VALUES (2, {before})")
    assert_converged(dbs, w)
    for column, _old, new, _value in WIDENINGS:
        dbs.sql(f"ALTER TABLE w MODIFY {column} {new}")
    dbs.sql(f"INSERT INTO w VALUES (3, {', '.join(value for _c, _o, _n, value in WIDENINGS)})")
    assert_converged(dbs, w)
    got = dbs.dest.query("SELECT id, a, d, f, dt, ts, tm, v, b, bt, s FROM {} ORDER BY id", "w")
    old_values = (
        Decimal("2147483647"),
        Decimal("12345678.990000000000000000000000000000"),
        0.10000000149011612,  # FLOAT 0.1, made a DOUBLE by the source
        dt.datetime(2020, 1, 1, 0, 0, 1),
        dt.datetime(2020, 1, 1, 0, 0, 1),  # TIMESTAMP: UTC
        -dt.timedelta(hours=838, minutes=59, seconds=59),
        "héllo",
        b"\x00\t\n\\",
    )
    new_values = (
        Decimal("18446744073709551615"),
        Decimal("-12345678901234567890123456789012345.123456789012345678901234567891"),
        0.30000000000000004,
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        dt.datetime(2038, 1, 19, 3, 14, 7, 999999),
        dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999),
        "x" * 1000 + "\\N\t",
        ALL_BYTES,
    )
    if dbs.dest.kind == "postgresql":  # bit(n) as '0'/'1' text, text[], timestamptz aware
        tail = [("0" * 36 + "1010", ["y"]), ("0" * 36 + "1010", ["y"]), ("1" * 40, ["x", "z"])]
    else:  # bit(n) as big-endian bytes, the set as a JSON array
        tail = [(bytes(4) + b"\x0a", '["y"]'), (bytes(4) + b"\x0a", '["y"]'), (b"\xff" * 5, '["x", "z"]')]

    def plain(value: Any) -> Any:
        if isinstance(value, memoryview):
            return bytes(value)
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    rows = [tuple(plain(v) for v in row) for row in got]
    expected = [
        (n, *values, *tail[n - 1]) for n, values in ((1, old_values), (2, old_values), (3, new_values))
    ]
    assert _typed([list(r) for r in rows]) == _typed([list(r) for r in expected])
    assert state_dead_letters(w, dbs) == []
    stop_cleanly(w)


# --- tables without a key: a row snapshotted is found again by the change that streams for it ---------


@pytest.mark.destinations
def test_keyless_rows_of_every_type_are_found_again_by_their_changes(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    """Rows are identified by a hash of the whole row: the snapshot's and the binlog's values must hash
    the same (docs/type-mapping.md, "Tables without a primary key"), '\\N' and NULL apart."""
    from test_replication import assert_converged, start_streaming, stop_cleanly

    dbs.sql("SET SESSION time_zone = '+05:30', sql_mode = ''")
    dbs.sql(
        "CREATE TABLE nokey (n INT NOT NULL, f FLOAT, s SET('x','y','z'), d DATE, "
        "dtm DATETIME(6), ts TIMESTAMP(3) NULL, bt BIT(10), b VARBINARY(8), t VARCHAR(10), "
        "u BIGINT UNSIGNED, m DECIMAL(65,30), tm TIME(6))"
    )
    # JSON in a table of its own: its keyless rows are compared by canonical JSON (warpd.verify)
    dbs.sql("CREATE TABLE nokey_json (n INT NOT NULL, j JSON)")
    rows = [
        "1.2345678, 'z,x', '0000-00-00', '2020-01-02 03:04:05.000006', "
        "'2021-03-28 07:30:00.123', b'1000000001', X'00090a5c', '\\\\N', 18446744073709551615, "
        "'0.000000000000000000000000000001', '-838:59:59.999999'",
        "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
        "0.1, '', '2020-00-15', '9999-12-31 23:59:59.999999', '1970-01-01 05:30:00.5', b'0', X'', "
        "'', 0, 0, '00:00:00'",
        "-3.4e38, 'y', '2020-02-29', NULL, '2038-01-19 08:44:07.999', b'11', X'ff', 'tab\tx\\\\', "
        "9223372036854775808, 99.5, '-00:00:00.000001'",
    ]
    documents = ['\'{"b": 1, "a": [2.50]}\'', "NULL", "'[]'", "'1E2'", "'\"\\\\\\\\N\"'"]
    for n, values in enumerate(rows, start=1):
        dbs.sql(f"INSERT INTO nokey VALUES ({n}, {values})")
    for n, document in enumerate(documents, start=1):
        dbs.sql(f"INSERT INTO nokey_json VALUES ({n}, {document})")
    w = start_streaming(warp)
    for n, values in enumerate(rows, start=1):  # streamed twins of the snapshotted rows
        dbs.sql(f"INSERT INTO nokey VALUES ({n + 10}, {values})")
    for table in ("nokey", "nokey_json"):
        dbs.sql(f"UPDATE {table} SET n = n + 100 WHERE n IN (1, 3)")  # rows the snapshot copied
        dbs.sql(f"DELETE FROM {table} WHERE n IN (2, 4, 5, 14)")  # found by their whole row
    assert_converged(dbs, w, tables=["nokey", "nokey_json"])
    for table in ("nokey", "nokey_json"):
        got = sorted(n for (n,) in dbs.dest.query("SELECT n FROM {}", table))
        assert got == sorted(n for (n,) in dbs.sql(f"SELECT n FROM {table}")), table
    assert sorted(n for (n,) in dbs.dest.query("SELECT n FROM {}", "nokey")) == [11, 12, 13, 101, 103]
    assert state_dead_letters(w, dbs) == []
    stop_cleanly(w)


@pytest.mark.destinations
def test_a_key_longer_than_the_destination_can_index_is_refused_never_cut(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    """MySQL indexes 768 utf8mb4 characters of a text key: a longer key value (a latin1 source key
    holds 3072) goes to the dead letters (docs/type-mapping.md, "Keys"); PostgreSQL holds it."""
    from test_replication import assert_converged, start_streaming, stop_cleanly

    dbs.sql("CREATE TABLE long_text (k VARCHAR(1000) CHARACTER SET latin1 PRIMARY KEY, v INT)")
    keys = ["é" * 768, "x" * 769, "é" * 1000]
    dbs.many("INSERT INTO long_text VALUES (%s, %s)", [(k, n) for n, k in enumerate(keys[:2])])
    w = start_streaming(warp)
    dbs.many("INSERT INTO long_text VALUES (%s, %s)", [(keys[2], 2)])
    if dbs.dest.kind == "postgresql":
        assert_converged(dbs, w)
        assert state_dead_letters(w, dbs) == []
    else:
        wait_until(lambda: len(state_dead_letters(w, dbs)) >= 2, 120, "the refused rows")
        assert dbs.dest.query("SELECT k, v FROM {}", "long_text") == [(keys[0], 0)]
        letters = sorted((d.table, d.row["v"], len(d.row["k"])) for d in state_dead_letters(w, dbs))
        assert letters == [("long_text", 1, 769), ("long_text", 2, 1000)], letters
    stop_cleanly(w)
