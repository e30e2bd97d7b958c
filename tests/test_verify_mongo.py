"""``cartridge-warp verify`` with a MongoDB source: documents hashed through the recorded shape.

Each test replicates a collection of the wire-protocol test server
(tests/mongo_wire) into each destination kind (PostgreSQL, MariaDB, and BigQuery's emulator;
tests/destinations.py) with the real process, stops it, edits the destination
directly and runs ``cartridge-warp verify`` as a user would, asserting its
exit code and what it reports.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import test_mongo_replication as replication
from bson import Binary, Decimal128, Int64, ObjectId
from conftest import Warp, write_config
from test_mongo_replication import wait_mongo
from test_verify import verify

from tests.mongo_support import Backend, MongoDatabases, backend, column

pytestmark = pytest.mark.mongodb


@pytest.fixture(scope="module")
def mongo_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from backend("wire", request)


# the fixtures of the MongoDB replication tests (one test database and destination, the process)
mdb, state_dir, mwarp = replication.mdb, replication.state_dir, replication.mwarp


def verified(m: MongoDatabases, conf: str, state: str, target: str, expect: int) -> dict[str, Any]:
    run = verify(m, conf, target, "--state-dir", state, "--json", "--max-keys", "50")
    assert run.returncode == expect, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    return dict(json.loads(run.stdout))


def differences(report: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((k["difference"], k["key"]["_id"]) for t in report["tables"] for k in t["keys"])


def mongo_config(tmp_path: Any, m: MongoDatabases, body: str = "") -> str:
    text = (
        "source: {connection_string: 'mongodb://placeholder/x'}\n"
        "destination: {connection_string: 'postgresql://placeholder/x'}\n"
        "max_batch_latency_ms: 50\n"
        f"schemas:\n  - name: {m.name}\n    destination_schema: {m.dest_schema}\n" + body
    )
    return write_config(tmp_path, text)


def replicate(m: MongoDatabases, mwarp: Callable[..., Warp], conf: str, state: str, **kwargs: Any) -> None:
    w = mwarp(conf)
    wait_mongo(m, w, state, **kwargs)
    assert w.stop() == 0


OIDS = [ObjectId(f"{i:024x}") for i in range(1, 2001)]


def documents() -> list[dict[str, Any]]:
    when = dt.datetime(2024, 2, 29, 23, 59, 58, 123000, tzinfo=dt.UTC)
    docs: list[dict[str, Any]] = []
    for i, oid in enumerate(OIDS):
        doc: dict[str, Any] = {
            "_id": oid,
            "name": f"item {i}, café ☃ ,:N",
            "qty": i % 7,
            "big": Int64(2**40 + i),
            "price": Decimal128(f"{i}.990"),
            "when": when + dt.timedelta(days=i),
            "flag": i % 2 == 0,
            "u": Binary.from_uuid(uuid.UUID(int=i)),
            "raw": Binary(bytes([i % 256, 0, 255])),
            "nested": {"b": i, "c": f"x{i}"},  # flattened: nested__b, nested__c
            "tags": [i, "t", {"w": 0.5}],  # an array: a JSON column, compared in its order
            "score": 1e300 if i == 13 else i / 4,  # a double: a FLOAT column
        }
        if i % 3 == 0:
            doc["opt"] = "" if i % 2 else "N"  # absent in the other documents: NULL
        docs.append(doc)
    return docs


@pytest.mark.destinations
def test_documents_verify_equal_and_each_destination_edit_is_reported_with_its_id(
    mdb: MongoDatabases,
    mwarp: Callable[..., Warp],
    state_dir: str,
    tmp_path: Any,
) -> None:
    mdb.db["docs"].insert_many(documents())
    conf = mongo_config(tmp_path, mdb, "    flatten_depth: 1\n")
    replicate(mdb, mwarp, conf, state_dir, flatten_depth=1)

    report = verified(mdb, conf, state_dir, f"{mdb.name}.docs", 0)
    (table,) = report["tables"]
    assert (table["source_rows"], table["destination_rows"], table["differing_keys"]) == (2000, 2000, 0)
    compared = set(table["compared_columns"])
    assert {
        "_id",
        "name",
        "qty",
        "big",
        "price",
        "when",
        "flag",
        "u",
        "raw",
        "nested__b",
        "nested__c",
        "opt",
        "tags",
        "score",
    } <= compared
    assert table["not_compared"] == {}

    docs = mdb.dest.ident("docs")
    q = {c: column(mdb, c) for c in ("_id", "qty", "nested__c", "when", "opt", "price")}
    mdb.dest.query(f"UPDATE {docs} SET {q['qty']} = 99 WHERE {q['_id']} = %s", args=(str(OIDS[5]),))  # noqa: S608
    mdb.dest.query(f"UPDATE {docs} SET {q['nested__c']} = 'y' WHERE {q['_id']} = %s", args=(str(OIDS[700]),))  # noqa: S608
    mdb.dest.query(f"UPDATE {docs} SET {q['opt']} = NULL WHERE {q['_id']} = %s", args=(str(OIDS[3]),))  # noqa: S608 - '' -> NULL
    mdb.dest.query(f"UPDATE {docs} SET {q['price']} = 1999.99 WHERE {q['_id']} = %s", args=(str(OIDS[1999]),))  # noqa: S608 - 1999.990 -> 1999.99: equal
    flag = column(mdb, "flag")
    mdb.dest.query(f"UPDATE {docs} SET {flag} = NULL WHERE {q['_id']} = %s", args=(str(OIDS[11]),))  # noqa: S608 - false -> NULL
    mdb.dest.query(f"DELETE FROM {docs} WHERE {q['_id']} = %s", args=(str(OIDS[1500]),))  # noqa: S608
    mdb.dest.query(
        f"INSERT INTO {docs} ({q['_id']}, {q['qty']}) VALUES (%s, 1)",
        args=("ffffffffffffffffffffffff",),  # noqa: S608
    )
    tags, score = column(mdb, "tags"), column(mdb, "score")
    as_json = "%s::jsonb" if mdb.dest.kind == "postgresql" else "%s"
    # an array reordered (different), the same array spelled otherwise (equal), a double changed
    for at, value in ((20, '["t", 20, {"w": 0.5}]'), (21, '[21, "t", {"w": 0.50}]')):
        set_tags = f"UPDATE {docs} SET {tags} = {as_json} WHERE {q['_id']} = %s"  # noqa: S608
        mdb.dest.query(set_tags, args=(value, str(OIDS[at])))
    add = f"UPDATE {docs} SET {score} = {score} + 0.001 WHERE {q['_id']} = %s"  # noqa: S608
    mdb.dest.query(add, args=(str(OIDS[30]),))
    if mdb.dest.kind == "postgresql":
        mdb.dest.query(
            f"UPDATE {docs} SET {q['when']} = {q['when']} + interval '1 millisecond' WHERE {q['_id']} = %s",
            args=(str(OIDS[42]),),
        )  # noqa: S608
    else:
        mdb.dest.query(
            f"UPDATE {docs} SET {q['when']} = {q['when']} + INTERVAL 1000 MICROSECOND WHERE {q['_id']} = %s",
            args=(str(OIDS[42]),),
        )  # noqa: S608

    report = verified(mdb, conf, state_dir, f"{mdb.name}.docs", 1)
    assert differences(report) == sorted(
        [
            ("different", str(OIDS[3])),
            ("different", str(OIDS[5])),
            ("different", str(OIDS[11])),
            ("different", str(OIDS[20])),
            ("different", str(OIDS[30])),
            ("different", str(OIDS[42])),
            ("different", str(OIDS[700])),
            ("missing", str(OIDS[1500])),
            ("extra", "ffffffffffffffffffffffff"),
        ]
    )
    (table,) = report["tables"]
    assert (table["source_rows"], table["destination_rows"]) == (2000, 2000)

    # a change at the source only (the process is stopped): reported too
    mdb.db["docs"].update_one({"_id": OIDS[9]}, {"$set": {"nested.b": -1}})
    mdb.db["docs"].update_one({"_id": OIDS[10]}, {"$set": {"tags": [{"w": 0.5}, "t", 10]}})
    mdb.db["docs"].update_one({"_id": OIDS[12]}, {"$set": {"score": math.nextafter(3.0, 4.0)}})  # was 12 / 4
    report = verified(mdb, conf, state_dir, f"{mdb.name}.docs", 1)
    assert {("different", str(OIDS[i])) for i in (9, 10, 12)} <= set(differences(report))

    text = verify(mdb, conf, f"{mdb.name}.docs", "--state-dir", state_dir)
    assert text.returncode == 1, text.stderr
    assert f"_id={OIDS[1500]}: missing at the destination" in text.stdout
    assert "not compared" not in text.stdout


@pytest.mark.destinations
def test_integer_ids_without_flattening_verify_and_a_document_that_no_longer_fits_differs(
    mdb: MongoDatabases,
    mwarp: Callable[..., Warp],
    state_dir: str,
    tmp_path: Any,
) -> None:
    coll = mdb.db["carts"]
    coll.insert_many([{"_id": i, "n": i, "sub": {"k": i}} for i in range(300)])
    # renderings with more than one spelling: decimals in exponent form, negative zero, trailing zeros;
    # date-times before 1970 and with milliseconds; integers at the int64 edges; strings ordered by bytes
    edges = ["1E+3", "-0", "0E-10", "-1.50", "12345678901234567890.5", "1E-20"]
    mdb.db["edges"].insert_many(
        [
            {
                "_id": f"k{i}-é" if i % 2 else f"K{i}",
                "d": Decimal128(text),
                "at": dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)
                - dt.timedelta(days=400 * i),
                "big": Int64(-(2**63) if i % 2 else 2**63 - 1),
            }
            for i, text in enumerate(edges)
        ]
    )
    conf = mongo_config(tmp_path, mdb)
    replicate(mdb, mwarp, conf, state_dir)
    edges_report = verified(mdb, conf, state_dir, f"{mdb.name}.edges", 0)
    assert edges_report["tables"][0]["compared_columns"] == ["_id", "d", "at", "big"]
    report = verified(mdb, conf, state_dir, f"{mdb.name}.carts", 0)
    (table,) = report["tables"]
    assert table["compared_columns"] == ["_id", "n", "sub"] and table["not_compared"] == {}
    # the recorded shape holds n as an integer: a string there cannot be a row of the destination's table
    coll.update_one({"_id": 7}, {"$set": {"n": "seven"}})
    coll.delete_one({"_id": 250})
    report = verified(mdb, conf, state_dir, f"{mdb.name}.carts", 1)
    assert differences(report) == [("different", "7"), ("extra", "250")]


@pytest.mark.destinations
def test_what_verify_cannot_compare_stops_with_exit_2_naming_the_table(
    mdb: MongoDatabases,
    mwarp: Callable[..., Warp],
    state_dir: str,
    tmp_path: Any,
) -> None:
    mdb.db["mixed_ids"].insert_many([{"_id": ObjectId(), "v": 1}, {"_id": "a-string", "v": 2}])
    conf = mongo_config(tmp_path, mdb)
    replicate(mdb, mwarp, conf, state_dir)
    run = verify(mdb, conf, f"{mdb.name}.mixed_ids", "--state-dir", state_dir)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "'mixed_ids'" in run.stderr and "objectId|string" in run.stderr

    # a table dropped at the destination: named, not an internal error
    mdb.db["gone"].insert_one({"_id": 1})
    replicate(mdb, mwarp, conf, state_dir)
    mdb.dest.query("DROP TABLE {}", "gone")
    run = verify(mdb, conf, f"{mdb.name}.gone", "--state-dir", state_dir)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "'gone'" in run.stderr and "no copy at the destination" in run.stderr

    # a collection created after the last run: no recorded shape
    mdb.db["later"].insert_one({"_id": 1})
    run = verify(mdb, conf, f"{mdb.name}.later", "--state-dir", state_dir)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "'later'" in run.stderr and "no shape recorded" in run.stderr

    # no state directory to read the shapes from
    empty = str(tmp_path / "nowhere")
    os.makedirs(empty)
    run = verify(mdb, conf, f"{mdb.name}.mixed_ids", "--state-dir", empty)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--state-dir" in run.stderr


@pytest.mark.parametrize("destination_kind", ["bigquery"], indirect=True)
def test_documents_into_bigquery_verify_equal_and_a_bigquery_edit_is_reported(
    mdb: MongoDatabases, mwarp: Callable[..., Warp], state_dir: str, tmp_path: Any
) -> None:
    mdb.db["docs"].insert_many(documents()[:300])
    conf = mongo_config(tmp_path, mdb, "    flatten_depth: 1\n    deletes: soft\n")
    replicate(mdb, mwarp, conf, state_dir, flatten_depth=1, soft_delete=True)
    report = verified(mdb, conf, state_dir, f"{mdb.name}.docs", 0)
    (table,) = report["tables"]
    assert (table["source_rows"], table["destination_rows"]) == (300, 300)
    assert {"_id", "price", "when", "u", "raw", "nested__b", "opt", "tags", "score"} <= set(
        table["compared_columns"]
    )
    assert table["not_compared"] == {}

    docs = mdb.dest.ident("docs")
    mdb.dest.query(f"UPDATE {docs} SET nested__c = 'y' WHERE _id = '{OIDS[7]}'")  # noqa: S608 - test SQL
    mdb.dest.query(f"UPDATE {docs} SET _warp_deleted_at = CURRENT_TIMESTAMP() WHERE _id = '{OIDS[8]}'")  # noqa: S608
    # an array reordered, the same array spelled otherwise (equal), a double changed
    for at, value in ((20, '["t", 20, {"w": 0.5}]'), (21, '[21, "t", {"w": 5e-1}]')):
        mdb.dest.query(f"UPDATE {docs} SET tags = PARSE_JSON(%s) WHERE _id = %s", args=(value, str(OIDS[at])))  # noqa: S608
    mdb.dest.query(f"UPDATE {docs} SET score = score + 0.001 WHERE _id = '{OIDS[30]}'")  # noqa: S608
    report = verified(mdb, conf, state_dir, f"{mdb.name}.docs", 1)
    assert differences(report) == sorted(
        [
            ("different", str(OIDS[7])),
            ("different", str(OIDS[20])),
            ("different", str(OIDS[30])),
            ("missing", str(OIDS[8])),
        ]
    )


@pytest.mark.destinations
def test_the_overflow_column_is_compared_with_the_fields_it_holds(
    mdb: MongoDatabases, mwarp: Callable[..., Warp], state_dir: str, tmp_path: Any
) -> None:
    # max_columns counts _id: a and b get columns, c and d go to _warp_extra (a JSON object)
    mdb.db["wide"].insert_many(
        [{"_id": i, "a": i, "b": f"b{i}", "c": [i, 0.5], "d": {"e": i}} for i in range(50)]
    )
    conf = mongo_config(tmp_path, mdb, "    max_columns: 3\n")
    replicate(mdb, mwarp, conf, state_dir, max_columns=3)
    report = verified(mdb, conf, state_dir, f"{mdb.name}.wide", 0)
    (table,) = report["tables"]
    assert table["compared_columns"] == ["_id", "a", "b", "_warp_extra"] and table["not_compared"] == {}

    extra = column(mdb, "_warp_extra")
    as_json = "%s::jsonb" if mdb.dest.kind == "postgresql" else "%s"
    for at, value in ((7, {"c": [0.5, 7], "d": {"e": 7}}), (8, {"d": {"e": 8.0}, "c": [8, 5e-1]})):
        mdb.dest.query(
            f"UPDATE {{}} SET {extra} = {as_json} WHERE {column(mdb, '_id')} = %s",  # noqa: S608
            "wide",
            args=(json.dumps(value), at),
        )
    mdb.db["wide"].update_one({"_id": 9}, {"$set": {"d.e": -9}})  # a field of the overflow, at the source
    report = verified(mdb, conf, state_dir, f"{mdb.name}.wide", 1)
    assert differences(report) == [("different", "7"), ("different", "9")]


FINITE_DOUBLES = [
    0.1 + 0.2,
    1e300,
    -1e300,
    1e-300,
    5e-324,
    1.7976931348623157e308,
    2.2250738585072014e-308,
    1e20,
    -0.0,
    2.0,
    123456789012345678.0,
    1e16,
    1e-7,
    -1.5e-300,
    0.1,
]


@pytest.mark.parametrize("destination_kind", ["postgresql", "mysql", "bigquery"], indirect=True)
def test_doubles_with_many_spellings_verify_equal_in_columns_and_inside_json(
    mdb: MongoDatabases, mwarp: Callable[..., Warp], state_dir: str, tmp_path: Any
) -> None:
    # inside a document each double is JSON: 1e300 as 1 and 300 zeros (PostgreSQL's jsonb, MariaDB), as
    # 1e+300 for BigQuery (docs/bigquery.md, "Type mapping"); every one compares equal
    doubles = FINITE_DOUBLES + ([math.nan, math.inf, -math.inf] if mdb.dest.kind == "postgresql" else [])
    mdb.db["floats"].insert_many([{"_id": i, "x": v, "arr": [v, {"k": v}]} for i, v in enumerate(doubles)])
    conf = mongo_config(tmp_path, mdb)
    replicate(mdb, mwarp, conf, state_dir)
    report = verified(mdb, conf, state_dir, f"{mdb.name}.floats", 0)
    (table,) = report["tables"]
    assert table["compared_columns"] == ["_id", "x", "arr"] and table["not_compared"] == {}
    assert (table["source_rows"], table["destination_rows"]) == (len(doubles), len(doubles))  # none dead

    # the nested 1e300 of document 1 made the next double up: reported, so the comparison is by value
    as_json = {"postgresql": "%s::jsonb", "mysql": "%s", "bigquery": "PARSE_JSON(%s)"}[mdb.dest.kind]
    changed = json.dumps([1e300, {"k": math.nextafter(1e300, math.inf)}])
    mdb.dest.query(
        f"UPDATE {{}} SET {column(mdb, 'arr')} = {as_json} WHERE {column(mdb, '_id')} = %s",  # noqa: S608
        "floats",
        args=(changed, FINITE_DOUBLES.index(1e300)),
    )
    report = verified(mdb, conf, state_dir, f"{mdb.name}.floats", 1)
    assert differences(report) == [("different", str(FINITE_DOUBLES.index(1e300)))]
