"""The MySQL/MariaDB destination against the real local MariaDB (a database of its own per test)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pymysql
import pytest

from tests.conftest import MYSQL_HOST, MYSQL_PORT, mysql_root, wait_until
from warpd.config.model import SchemaConfig
from warpd.connectors.base import OP_COLUMN, SOURCE_TS_COLUMN, Fence, SchemaOpKind, SnapshotChunk
from warpd.connectors.mysql.destination import MySQLDestination
from warpd.errors import FatalError, SupersededError
from warpd.types import Column, ColumnType, Kind, TableSchema

URI = f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/"
UTC = dt.UTC


@pytest.fixture
def db() -> Iterator[str]:
    name = f"warp_d_{uuid.uuid4().hex[:10]}"
    yield name
    with mysql_root() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def dest() -> Iterator[MySQLDestination]:
    d = MySQLDestination(URI)
    d.connect()
    yield d
    d.close()


def T(kind: Kind, **kw: Any) -> ColumnType:  # noqa: N802 - reads like a type
    return ColumnType(kind, **kw)


# (name, type, values that must round-trip exactly)
CASES: list[tuple[str, ColumnType, list[Any]]] = [
    ("b", T(Kind.BOOLEAN), [True, False]),
    ("i16", T(Kind.INT, bits=16), [-32768, 32767]),
    ("i32", T(Kind.INT, bits=32), [-(2**31), 2**31 - 1]),
    ("i64", T(Kind.INT, bits=64), [-(2**63), 2**63 - 1]),
    ("u64", T(Kind.DECIMAL, precision=20, scale=0), [Decimal("18446744073709551615"), Decimal(0)]),
    (
        "d65",
        T(Kind.DECIMAL, precision=65, scale=30),
        [Decimal("-" + "9" * 35 + "." + "9" * 30), Decimal("0." + "0" * 29 + "1")],
    ),
    (
        "d128",
        T(Kind.DECIMAL),
        [Decimal("1234567890123456789012345678901234"), Decimal("-1.234567890123456789012345678901234E-20")],
    ),
    ("d40", T(Kind.DECIMAL, precision=80, scale=2), [Decimal("1234567890123456789012345678901234567890.12")]),
    ("f32", T(Kind.FLOAT, bits=32), [1.2345677614212036, 3.4028234663852886e38, -0.0]),
    ("f64", T(Kind.FLOAT, bits=64), [1.7976931348623157e308, 5e-324, 0.1]),
    (
        "txt",
        T(Kind.TEXT),
        ["emoji 😀 ü", "tab\there", "new\nline", "back\\slash", "\\N", "cr\rz\x1a", "nul\x00", "", "a "],
    ),
    ("vtxt", T(Kind.TEXT, length=10), ["short"]),
    ("byt", T(Kind.BYTES), [b"\x00\x01\xff\t\n\\", b""]),
    ("bits", T(Kind.BITS, length=10), ["0000000001", "1010101010"]),
    ("bits64", T(Kind.BITS, length=64), ["1" * 64]),
    ("dte", T(Kind.DATE), [dt.date(1, 1, 1), dt.date(9999, 12, 31)]),
    (
        "tme",
        T(Kind.TIME, precision=6),
        [dt.timedelta(hours=-838, minutes=-59, seconds=-59), dt.timedelta(hours=30, microseconds=5)],
    ),
    (
        "ts",
        T(Kind.TIMESTAMP, precision=6),
        [dt.datetime(2024, 2, 29, 23, 59, 59, 999999), dt.datetime(1, 1, 1)],
    ),
    ("tstz", T(Kind.TIMESTAMPTZ, precision=6), [dt.datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=UTC)]),
    ("js", T(Kind.JSON), ['{"a": [1, 2.5, "\\u0000 ü"], "b": null}', "[]", '"x"']),
    ("uid", T(Kind.UUID), ["123e4567-e89b-12d3-a456-426614174000"]),
    ("arr", T(Kind.TEXT_ARRAY), [["a", "b\tc", None], []]),
]


def _schema(name: str, cols: list[tuple[str, ColumnType]], key: tuple[str, ...] = ("id",)) -> TableSchema:
    columns = [Column(n, t, nullable=n not in key) for n, t in cols]
    return TableSchema(name, tuple(columns), key)


def _canonical_expected(ct: ColumnType, value: Any) -> Any:
    if ct.kind is Kind.JSON and value is not None:
        return json.loads(value)
    return value


def test_every_type_round_trips(dest: MySQLDestination, db: str) -> None:
    cols = [("id", T(Kind.INT, bits=64))] + [(n, t) for n, t, _v in CASES]
    schema = _schema("all_types", cols)
    plan = dest.plan(schema, db, soft_delete=False, metadata=True)
    dest.prepare(plan)
    width = max(len(v) for _n, _t, v in CASES)
    rows = []
    for i in range(width + 1):  # the last row is all NULL
        row: dict[str, Any] = {"id": i}
        for name, _t, values in CASES:
            row[name] = values[i] if i < len(values) else None
        rows.append(row)
    dest.write(plan, [dest.encode(plan, r, "insert", 1.5) for r in rows])
    got = {r["id"]: r for r in dest.read_rows(plan) or []}
    for row in rows:
        for name, ct, _v in CASES:
            want = _canonical_expected(ct, row[name])
            have = got[row["id"]][name]
            assert have == want and type(have) is type(want), (name, row["id"], have, want)
            if ct.kind is Kind.FLOAT and want:  # MySQL keeps no negative zero: -0.0 reads back as 0.0
                assert repr(have) == repr(want)


@pytest.mark.parametrize(
    ("ct", "value"),
    [
        (T(Kind.FLOAT), float("nan")),
        (T(Kind.FLOAT), float("inf")),
        (T(Kind.DATE), "infinity"),
        (T(Kind.TIMESTAMP), "-infinity"),
        (T(Kind.TIME), dt.timedelta(hours=839)),
    ],
)
def test_values_mysql_cannot_hold_are_refused_when_encoded(
    dest: MySQLDestination, ct: ColumnType, value: Any
) -> None:
    plan = dest.plan(_schema("t", [("id", T(Kind.INT)), ("c", ct)]), "x", soft_delete=False, metadata=False)
    with pytest.raises(ValueError, match="MySQL"):
        dest.encode(plan, {"id": 1, "c": value}, "insert", None)


def _count(db: str, table: str, where: str = "1") -> int:
    with mysql_root(db) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{table}` WHERE {where}")
        return int(cur.fetchone()[0])


def test_upsert_delete_soft_delete_and_metadata(dest: MySQLDestination, db: str) -> None:
    schema = _schema("t", [("id", T(Kind.INT)), ("v", T(Kind.TEXT))])
    for soft in (False, True):
        plan = dest.plan(
            schema if not soft else _schema("s", list(_cols(schema))), db, soft_delete=soft, metadata=True
        )
        dest.prepare(plan)
        enc = lambda r, op="insert", p=plan: dest.encode(p, r, op, 1700000000.25)  # noqa: E731
        dest.write(plan, [enc({"id": 1, "v": "a"}), enc({"id": 2, "v": "b"})], direct=True)
        dest.write(plan, [enc({"id": 1, "v": "A"}, "update")], [enc({"id": 2, "v": "b"}, "delete")])
        # keep_existing inserts only new keys
        dest.write(plan, [enc({"id": 1, "v": "old"}), enc({"id": 3, "v": "c"})], keep_existing=True)
        assert sorted((r["id"], r["v"]) for r in dest.read_rows(plan) or []) == [(1, "A"), (3, "c")]
        with mysql_root(db) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT `{OP_COLUMN}`, `{SOURCE_TS_COLUMN}` FROM `{plan.dest_table}` WHERE id = 1")
            assert cur.fetchone() == ("update", dt.datetime(2023, 11, 14, 22, 13, 20, 250000))
        assert _count(db, plan.dest_table) == (3 if soft else 2)
        if soft:
            assert _count(db, plan.dest_table, "_warp_deleted_at IS NOT NULL AND _warp_op = 'delete'") == 1
            dest.soft_delete_all(plan)
            assert list(dest.read_rows(plan) or []) == []


def _cols(schema: TableSchema) -> Iterator[tuple[str, ColumnType]]:
    return ((c.name, c.type) for c in schema.columns)


def test_direct_write_of_an_existing_key_is_a_duplicate(dest: MySQLDestination, db: str) -> None:
    plan = dest.plan(_schema("t", [("id", T(Kind.INT))]), db, soft_delete=False, metadata=False)
    dest.prepare(plan)
    dest.write(plan, [dest.encode(plan, {"id": 1}, "insert", None)], direct=True)
    with pytest.raises(pymysql.err.MySQLError) as info:
        dest.write(plan, [dest.encode(plan, {"id": 1}, "insert", None)], direct=True)
    assert dest.is_duplicate(info.value) and dest.rejects_rows(info.value)


def test_keyless_table_and_unbounded_text_key(dest: MySQLDestination, db: str) -> None:
    keyless = dest.plan(
        _schema("kl", [("a", T(Kind.TEXT)), ("b", T(Kind.INT))], key=()),
        db,
        soft_delete=False,
        metadata=False,
    )
    dest.prepare(keyless)
    rows = [{"a": "x", "b": 1}, {"a": "x", "b": 1}, {"a": "y", "b": 2}]
    dest.write(keyless, [dest.encode(keyless, r, "insert", None) for r in rows])
    dest.write(keyless, [], [dest.encode(keyless, rows[2], "delete", None)])
    assert list(dest.read_rows(keyless) or []) == [{"a": "x", "b": 1}]
    texts = dest.plan(_schema("tk", [("id", T(Kind.TEXT))]), db, soft_delete=False, metadata=False)
    dest.prepare(texts)
    # trailing spaces make another key (a NO PAD collation), and the key holds 768 characters
    keys = ["a", "a ", "é" * 768]
    dest.write(texts, [dest.encode(texts, {"id": k}, "insert", None) for k in keys])
    assert sorted(r["id"] for r in dest.read_rows(texts) or []) == sorted(keys)
    with pytest.raises(pymysql.err.MySQLError) as info:
        dest.write(texts, [dest.encode(texts, {"id": "x" * 769}, "insert", None)])
    assert dest.rejects_rows(info.value)


def test_long_names_get_a_deterministic_rename(dest: MySQLDestination, db: str) -> None:
    long_table, long_col = "t" * 70, "c" * 65
    schema = _schema(
        long_table, [("id", T(Kind.INT)), (long_col, T(Kind.INT)), ("ID2", T(Kind.INT)), ("id2", T(Kind.INT))]
    )
    plan = dest.plan(schema, db, soft_delete=False, metadata=False)
    assert len(plan.dest_table) == 64 and plan.dest_table.startswith("t" * 55 + "_")
    assert len(plan.columns[long_col]) == 64
    assert plan.columns["id2"] == "id2_2"  # MySQL column names ignore case
    assert dest.plan(schema, db, soft_delete=False, metadata=False).dest_table == plan.dest_table
    dest.prepare(plan)
    dest.write(plan, [dest.encode(plan, {"id": 1, long_col: 2, "ID2": 3, "id2": 4}, "insert", None)])
    assert list(dest.read_rows(plan) or []) == [{"id": 1, long_col: 2, "ID2": 3, "id2": 4}]


def test_refused_row_goes_to_the_dead_letters(dest: MySQLDestination, db: str, tmp_path: Any) -> None:
    from warpd.engine.applier import DestinationPool, TableApplier
    from warpd.state.store import StateStore

    # the source says 5 characters, the destination key holds 5: a 6-character key is refused by the server
    schema = _schema("t", [("id", T(Kind.TEXT, length=5)), ("n", T(Kind.INT, bits=16))])
    plan = dest.plan(schema, db, soft_delete=False, metadata=False)
    dest.prepare(plan)
    pool = DestinationPool(lambda: MySQLDestination(URI))
    store = StateStore(str(tmp_path))
    applier = TableApplier(
        "s", plan, SchemaConfig(name="s").table_settings("t"), pool,
        lambda *letter: store.add_dead_letter("s", *letter), lambda: False,
    )  # fmt: skip
    try:
        rows = [{"id": f"k{i}", "n": i} for i in range(6)] + [
            {"id": "toolong", "n": 1},
            {"id": "big", "n": 70000},
        ]
        applier.copy_snapshot(SnapshotChunk("t", rows, None))
    finally:
        applier.close()
        pool.close()
    assert sorted(r["id"] for r in dest.read_rows(plan) or []) == [f"k{i}" for i in range(6)]
    letters = store.dead_letters("s")
    assert sorted(d.row["id"] for d in letters) == ["big", "toolong"]
    assert all("MySQL" in d.reason for d in letters)


def _set_local_infile(value: int) -> None:
    with mysql_root() as conn, conn.cursor() as cur:
        cur.execute(f"SET GLOBAL local_infile = {int(value)}")


@pytest.mark.exclusive  # SET GLOBAL local_infile = 0 would change how other tests' MariaDB destinations load
def test_fallback_without_local_infile(db: str) -> None:
    with mysql_root() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.local_infile")
        old = int(cur.fetchone()[0])
    _set_local_infile(0)
    try:
        d = MySQLDestination(URI)
        d.connect()
    finally:
        _set_local_infile(old)
    try:
        assert d.local_infile is False
        assert any("multi-row INSERT" in n for n in d.capabilities.notes)
        cols = [("id", T(Kind.INT))] + [(n, t) for n, t, _v in CASES]
        plan = d.plan(_schema("fb", cols), db, soft_delete=False, metadata=False)
        d.prepare(plan)
        row = {"id": 1, **{n: v[0] for n, _t, v in CASES}}
        d.write(plan, [d.encode(plan, row, "insert", None)])
        got = next(iter(d.read_rows(plan) or []))
        assert got == {"id": 1, **{n: _canonical_expected(t, v[0]) for n, t, v in CASES}}
        with pytest.raises(pymysql.err.MySQLError) as info:
            d.write(plan, [d.encode(plan, {"id": 2, "i16": 40000}, "insert", None)])
        assert d.rejects_rows(info.value)
    finally:
        d.close()


def test_schema_changes_are_idempotent(dest: MySQLDestination, db: str) -> None:
    v1 = _schema("t", [("id", T(Kind.INT)), ("a", T(Kind.INT, bits=32))])
    p1 = dest.plan(v1, db, soft_delete=False, metadata=False)
    dest.prepare(p1)
    dest.write(p1, [dest.encode(p1, {"id": 1, "a": 5}, "insert", None)])
    v2 = _schema("t", [("id", T(Kind.INT)), ("a", T(Kind.INT, bits=32)), ("b", T(Kind.TEXT))])
    p2 = dest.plan(v2, db, soft_delete=False, metadata=False)
    assert dest.schema_change(SchemaOpKind.ADD_COLUMN, p1, p2) != []
    assert dest.schema_change(SchemaOpKind.ADD_COLUMN, p1, p2) == []
    v3 = _schema("t", [("id", T(Kind.INT)), ("a2", T(Kind.INT, bits=64)), ("b", T(Kind.TEXT))])
    p3 = dest.plan(v3, db, soft_delete=False, metadata=False)
    assert dest.schema_change(SchemaOpKind.MODIFY_COLUMN, p2, p3, "a", "a2") != []
    assert dest.schema_change(SchemaOpKind.MODIFY_COLUMN, p2, p3, "a", "a2") == []
    v4 = _schema("t", [("id", T(Kind.INT)), ("b", T(Kind.TEXT))])
    p4 = dest.plan(v4, db, soft_delete=False, metadata=False)
    assert dest.schema_change(SchemaOpKind.DROP_COLUMN, p3, p4, "a2") != []
    assert dest.schema_change(SchemaOpKind.DROP_COLUMN, p3, p4, "a2") == []
    p5 = dest.plan(
        _schema("t_renamed", [("id", T(Kind.INT)), ("b", T(Kind.TEXT))]),
        db,
        soft_delete=False,
        metadata=False,
    )
    assert dest.schema_change(SchemaOpKind.RENAME_TABLE, p4, p5) != []
    assert dest.schema_change(SchemaOpKind.RENAME_TABLE, p4, p5) == []
    assert list(dest.read_rows(p5) or []) == [{"id": 1, "b": None}]
    assert dest.misfit(p5) is None
    # widening keeps values (evolve)
    p6 = dest.plan(
        _schema("t_renamed", [("id", T(Kind.INT)), ("b", T(Kind.TEXT)), ("c", T(Kind.INT))]),
        db,
        soft_delete=False,
        metadata=False,
    )
    assert dest.evolve(p5, p6) != [] and dest.evolve(p5, p6) == []
    assert (
        dest.read_rows(
            dest.plan(_schema("gone", [("id", T(Kind.INT))]), db, soft_delete=False, metadata=False)
        )
        is None
    )


def test_bad_credentials_are_fatal_and_redacted() -> None:
    d = MySQLDestination(f"mysql://nobody:s3cretpw@{MYSQL_HOST}:{MYSQL_PORT}/")
    with pytest.raises(FatalError) as info:
        d.connect()
    assert "s3cretpw" not in str(info.value) and "password" in str(info.value)


def test_end_to_end_mariadb_to_mariadb(dbs: Any, warp: Any, tmp_path: Any) -> None:
    """Snapshot, then inserts/updates/deletes and an ALTER TABLE while streaming, into another database."""
    from tests.conftest import wait_matching, write_config
    from warpd.connectors.mysql.source import MySQLSource
    from warpd.verify import table_difference

    target = f"{dbs.name}_copy"
    dbs.sql(
        "CREATE TABLE items (id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(50), price DECIMAL(12,2), "
        "doc JSON, raw VARBINARY(16), at DATETIME(6), ts TIMESTAMP(3) NULL, f DOUBLE, bits BIT(5))"
    )
    dbs.sql("CREATE TABLE notes (body TEXT, n INT)")  # keyless
    dbs.many(
        "INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s, b'10101')",
        [
            (18446744073709551615, "max 😀", "12.50", '{"a": [1, "x"]}', b"\x00\t\\", "2024-01-02 03:04:05.123456",
             "2024-05-06 07:08:09.123", 0.1),
            (1, "tab\there\nnl", "-0.01", "null", b"", "1000-01-01 00:00:00", None, -1e300),
        ],
    )  # fmt: skip
    dbs.sql("INSERT INTO notes VALUES ('same', 1), ('same', 1), ('other', 2)")
    dbs.dest_uri = URI
    config = write_config(
        tmp_path,
        f"source: {{connection_string: '{dbs.source_uri}'}}\n"
        f"destination: {{type: mysql, connection_string: '{URI}'}}\n"
        f"schemas:\n  - name: {dbs.name}\n    destination_schema: {target}\n",
    )
    try:
        w = warp(config=config)

        def differences() -> list[str]:
            source = MySQLSource(dbs.source_uri, dbs.name, server_id=998)
            dest = MySQLDestination(URI)
            try:
                out = []
                for table in ("items", "notes"):
                    plan = dest.plan(source.describe(table), target, soft_delete=False, metadata=False)
                    out.append(table_difference(source, dest, plan))
                return [d for d in out if d]
            finally:
                source.close()
                dest.close()

        wait_matching(differences, w, 120)
        dbs.sql("UPDATE items SET name = 'renamed', price = price + 1 WHERE id = 1")
        dbs.sql("DELETE FROM items WHERE id = 18446744073709551615")
        dbs.sql("INSERT INTO items (id, name) VALUES (2, 'back\\\\slash \\\\N')")
        dbs.sql("DELETE FROM notes WHERE body = 'other'")
        dbs.sql("ALTER TABLE items ADD COLUMN extra VARCHAR(20) DEFAULT 'dflt'")
        dbs.sql("INSERT INTO items (id, name, extra) VALUES (3, 'after alter', 'x')")
        wait_matching(differences, w, 120)  # the ALTER with a default copies the table again
        dbs.sql("ALTER TABLE items ADD COLUMN qty INT NULL")  # no default: followed in place
        dbs.sql("UPDATE items SET qty = 7 WHERE id = 3")
        wait_matching(differences, w, 120)
        assert "LOAD DATA LOCAL INFILE" in w.output
        assert "ADD COLUMN `qty` int" in w.output
        assert w.stop() == 0
    finally:
        with mysql_root() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{target}`")


def test_evolve_into_json_converts_values_as_fresh_ones(dest: MySQLDestination, db: str) -> None:
    """Values widened into JSON equal the same values written fresh by MongoDB's mapping (to_jsonb's rule)."""
    from bson.decimal128 import Decimal128

    from warpd.connectors.mongodb.mapping import _JSONB_SCALAR

    cases: list[tuple[str, ColumnType, str, list[Any]]] = [
        ("s", T(Kind.TEXT), "string", ["plain", 'q"uote\\ \n 😀', ""]),
        ("b", T(Kind.BOOLEAN), "bool", [True, False]),
        ("i", T(Kind.INT, bits=64), "long", [-(2**63), 42]),
        ("f", T(Kind.FLOAT, bits=64), "double", [0.1, 1e300, -2.0, 5e-324, 1.5e-7]),
        ("d", T(Kind.DECIMAL), "decimal", [Decimal("1.50"), Decimal("-0.00"), Decimal("1E+20")]),
        (
            "t",
            T(Kind.TIMESTAMPTZ, precision=6),
            "date",
            [dt.datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)],
        ),
        ("u", T(Kind.UUID), "uuid", ["123e4567-e89b-12d3-a456-426614174000"]),
        ("y", T(Kind.BYTES), "bytes", [b"\x00\xff"]),
    ]
    width = max(len(v) for *_x, v in cases)
    old = dest.plan(_schema("w", [("id", T(Kind.INT))] + [(n, t) for n, t, _g, _v in cases]), db,
                    soft_delete=False, metadata=False)  # fmt: skip
    dest.prepare(old)
    rows = [{"id": i, **{n: (v[i] if i < len(v) else None) for n, _t, _g, v in cases}} for i in range(width)]
    dest.write(old, [dest.encode(old, r, "insert", None) for r in rows])
    new = dest.plan(_schema("w", [("id", T(Kind.INT))] + [(n, T(Kind.JSON)) for n, _t, _g, _v in cases]), db,
                    soft_delete=False, metadata=False)  # fmt: skip
    assert dest.evolve(old, new) != []
    assert dest.evolve(old, new) == []  # a replay is a no-op
    assert dest.misfit(new) is None
    got = {r["id"]: r for r in dest.read_rows(new) or []}

    def fresh(tag: str, value: Any) -> Any:
        if value is None:
            return None
        if tag == "decimal":
            value = Decimal128(value)
        return json.loads(_JSONB_SCALAR[tag](value))

    for row in rows:
        for name, _t, tag, _v in cases:
            assert got[row["id"]][name] == fresh(tag, row[name]), (name, row[name], got[row["id"]][name])
    # and the fresh values, written into the widened table, read back the same
    fresh_rows = [{"id": 100 + r["id"], **{n: _JSONB_SCALAR[g](r[n]) if r[n] is not None and g != "decimal"
                   else (None if r[n] is None else _JSONB_SCALAR[g](Decimal128(r[n]))) for n, _t, g, _v in cases}}
                  for r in rows]  # fmt: skip
    dest.write(new, [dest.encode(new, r, "insert", None) for r in fresh_rows])
    again = {r["id"]: r for r in dest.read_rows(new) or []}
    for row in rows:
        assert {k: v for k, v in again[100 + row["id"]].items() if k != "id"} == {
            k: v for k, v in got[row["id"]].items() if k != "id"
        }


def test_swap_in_misfit_truncate(dest: MySQLDestination, db: str) -> None:
    from warpd.connectors.base import beside_plan

    plan = dest.plan(
        _schema("t", [("id", T(Kind.INT)), ("v", T(Kind.INT, bits=32))]), db, soft_delete=False, metadata=True
    )
    dest.prepare(plan)
    dest.write(plan, [dest.encode(plan, {"id": 1, "v": 1}, "insert", None)])
    other = dest.plan(
        _schema("t", [("id", T(Kind.INT)), ("v", T(Kind.TEXT))]), db, soft_delete=False, metadata=True
    )
    assert "column v is int" in (dest.misfit(other) or "")
    beside = beside_plan(other)
    dest.prepare(beside)
    dest.write(beside, [dest.encode(beside, {"id": 2, "v": "two"}, "snapshot", None)], direct=True)
    assert dest.swap_in(beside, other) != []
    assert dest.swap_in(beside, other) == []  # a replay
    assert list(dest.read_rows(other) or []) == [{"id": 2, "v": "two"}]
    assert dest.misfit(other) is None and not dest.table_exists(beside)
    dest.truncate(other)
    assert list(dest.read_rows(other) or []) == []


def test_unreachable_server_is_transient() -> None:
    from warpd.errors import TransientError

    d = MySQLDestination("mysql://root:pw@127.0.0.1:1/")
    with pytest.raises(TransientError) as info:
        d.connect()
    assert "pw" not in str(info.value).replace("password", "")


def test_dead_letter_values_are_printable(dest: MySQLDestination) -> None:
    plan = dest.plan(
        _schema("t", [("id", T(Kind.INT)), ("v", T(Kind.TEXT))]), "x", soft_delete=False, metadata=True
    )
    record = dest.encode(plan, {"id": 1, "v": "a\tb\\N"}, "insert", None)
    assert dest.record_values(plan, record) == {
        "id": 1,  # integers as numbers, as in a dead letter of the canonical path
        "v": "a\tb\\N",
        OP_COLUMN: "insert",
        SOURCE_TS_COLUMN: None,
    }


def test_cli_accepts_a_mysql_destination(tmp_path: Any) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run(
        [sys.executable, "-m", "warpd", "--validate-config", "--source", f"mysql://root@{MYSQL_HOST}:3306/shop",
         "--destination", URI, "--schema", "shop", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "configuration is valid" in out.stdout


def test_load_data_local_never_reads_a_file(dest: MySQLDestination, db: str) -> None:
    """The handler serves only the in-memory batch; a request for any other file sends nothing."""
    plan = dest.plan(
        _schema("t", [("id", T(Kind.INT)), ("v", T(Kind.TEXT))]), db, soft_delete=False, metadata=False
    )
    dest.prepare(plan)
    with dest.conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError, match="did not send"):
        cur.execute(f"LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE `{db}`.`t` (v)")
    assert list(dest.read_rows(plan) or []) == []


def test_hostile_names_are_quoted(dest: MySQLDestination, db: str) -> None:
    name, col = "we`ird %s 'name\"", "c`ol %(x)s"
    plan = dest.plan(
        _schema(name, [("id", T(Kind.INT)), (col, T(Kind.TEXT))]), db + "`%s", soft_delete=True, metadata=True
    )
    try:
        dest.prepare(plan)
        dest.write(plan, [dest.encode(plan, {"id": 1, col: "x"}, "insert", None)])
        dest.write(
            plan,
            [dest.encode(plan, {"id": 2, col: "y"}, "insert", None)],
            [dest.encode(plan, {"id": 1}, "delete", None)],
        )
        assert list(dest.read_rows(plan) or []) == [{"id": 2, col: "y"}]
        assert dest.misfit(plan) is None
    finally:
        dest._execute([f"DROP DATABASE IF EXISTS `{(db + '`%s').replace('`', '``')}`"])


@pytest.mark.mongodb
def test_mongodb_to_mysql_widens_a_column_into_json(tmp_path: Any) -> None:
    """MongoDB (the wire test server) -> MySQL: a field that changes type widens in place, down to JSON."""
    import os

    from bson.int64 import Int64

    from tests.conftest import Warp, wait_matching, write_config
    from tests.mongo_support import Backend, MongoDatabases
    from tests.mongo_wire import MongoTestServer
    from warpd.config.model import TableSettings
    from warpd.connectors.mongodb.source import MongoSource
    from warpd.state.store import StateStore
    from warpd.verify import table_difference

    server = MongoTestServer().start()
    m = MongoDatabases(Backend("wire", server.uri, server))
    m.dest_uri = URI
    state_dir = str(tmp_path / "state")
    os.makedirs(state_dir)
    w = None
    try:
        coll = m.db["mixed"]
        coll.insert_one({"_id": 1, "v": 7, "t": "x"})
        path = write_config(
            tmp_path,
            "source: {connection_string: 'mongodb://placeholder/x'}\n"
            f"destination: {{type: mysql, connection_string: '{URI}'}}\n"
            "max_batch_latency_ms: 50\n",
        )
        w = Warp(m, state_dir, path, [], {}).start()  # type: ignore[arg-type]  # same attributes

        def differences() -> list[str]:
            store = StateStore(state_dir)
            source = MongoSource(m.source_uri, m.name, m.name, {})
            source.configure(lambda _t: TableSettings())
            dest = MySQLDestination(URI)
            try:
                shape = store.latest_schemas(m.name).get("mixed")
                if shape is None:
                    return ["no shape yet"]
                plan = dest.plan(shape, m.name, soft_delete=False, metadata=False)
                problem = table_difference(source, dest, plan)
                return [problem] if problem else []
            finally:
                source.close()
                dest.close()
                store.close()

        wait_matching(differences, w, 60, passing=(Exception,))
        coll.insert_one({"_id": 2, "v": Int64(2**40), "t": "y"})
        wait_matching(differences, w, 60, passing=(Exception,))
        coll.insert_one({"_id": 3, "v": 2.5})  # -> decimal
        wait_matching(differences, w, 60, passing=(Exception,))
        coll.insert_one({"_id": 4, "v": "text", "t": 5})  # -> JSON, converted in place
        coll.insert_one({"_id": 5, "v": {"nested": [1, 2]}})
        wait_matching(differences, w, 60, passing=(Exception,))
        with mysql_root(m.name) as conn, conn.cursor() as cur:
            cur.execute("SELECT v, t FROM mixed ORDER BY _id")
            got = [(json.loads(v), t if t is None else json.loads(t)) for v, t in cur.fetchall()]
        assert got == [(7, "x"), (2**40, "y"), (2.5, None), ("text", 5), ({"nested": [1, 2]}, None)]
        assert w.stop() == 0
    finally:
        if w is not None and w.alive():
            w.kill()
        with mysql_root() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{m.name}`")
        m.client.drop_database(m.name)
        m.client.close()
        m.pg.close()
        server.stop()


def test_settings_the_destination_cannot_honour_are_refused_before_anything_is_written(
    dbs: Any, tmp_path: Any
) -> None:
    """The engine reads the capabilities: emulated foreign-key actions need a destination that runs them."""
    import subprocess
    import sys

    from tests.conftest import ROOT, write_config

    dbs.sql("CREATE TABLE parent (id INT PRIMARY KEY)")
    dbs.sql(
        "CREATE TABLE child (id INT PRIMARY KEY, parent_id INT, "
        "FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE)"
    )
    target = f"{dbs.name}_copy"
    config = write_config(
        tmp_path,
        f"source: {{connection_string: '{dbs.source_uri}'}}\n"
        f"destination: {{type: mysql, connection_string: '{URI}'}}\n"
        f"schemas:\n  - name: {dbs.name}\n    destination_schema: {target}\n"
        "    foreign_key_cascades: emulate\n",
    )
    for extra in (["--dry-run"], []):
        out = subprocess.run(
            [sys.executable, "-m", "warpd", "--mode", "single", "--config", config, "--schema", dbs.name,
             "--state-dir", str(tmp_path / "state"), *extra],
            capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
        )  # fmt: skip
        assert out.returncode == 2, out.stdout + out.stderr
        said = out.stdout + out.stderr
        assert (
            "foreign_key_cascades: emulate" in said and "cannot run emulated foreign-key actions" in said
        ), said
    with mysql_root() as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (target,))
        assert cur.fetchone()[0] == 0, "the refused run created the destination database"


def test_a_takeover_waits_for_a_schema_change_that_passed_its_epoch_check(
    dest: MySQLDestination, db: str
) -> None:
    """MariaDB commits DDL implicitly, so a statement's epoch check cannot share its transaction; the
    schema's writer lock spans the check and the statement instead: a takeover arriving in between
    waits until the statement is done (it used to pass, and the older writer's DDL landed after it),
    and the older writer's next statement is then refused."""
    epoch = dest.take_over(db, "s")
    fence = Fence.guard(db, "s", epoch)
    newer = MySQLDestination(URI)
    newer.connect()
    session = newer.conn.thread_id()
    taken: list[int] = []
    thread = threading.Thread(target=lambda: taken.append(newer.take_over(db, "s")))
    try:
        with dest._epoch_checked(fence):  # the check passed; the statement would run here
            thread.start()
            wait_until(
                lambda: _waiting_for_user_lock(session), 30, "the takeover to wait for the writer lock"
            )
            assert not taken
            dest._execute([f"CREATE TABLE `{db}`.`late` (id INT PRIMARY KEY)"])
        thread.join(30)
        assert taken == [epoch + 1]
        with pytest.raises(SupersededError, match="another writer took over schema 's'"):
            dest._execute([f"DROP TABLE `{db}`.`late`"], fence)
        with mysql_root() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'late'",
                (db,),
            )
            assert cur.fetchone()[0] == 1
    finally:
        thread.join(30)
        newer.close()


def _waiting_for_user_lock(session: int) -> bool:
    """Whether the server session ``session`` waits for a named lock (GET_LOCK)."""
    with mysql_root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE id = %s AND state = 'User lock'",
            (session,),
        )
        return int(cur.fetchone()[0]) > 0
