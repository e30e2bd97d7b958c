"""BigQuery as a source (mode: batch only) against the BigQuery emulator (or real BigQuery:
``WARP_TEST_BIGQUERY_PROJECT``), into real PostgreSQL and MariaDB destinations (docs/bigquery.md,
"Reading from BigQuery")."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from conftest import ROOT, Warp, wait_matching, wait_until, write_config
from google.cloud import bigquery

from tests import bigquery_support as bqs
from tests.destinations import DestinationUnderTest, destination_under_test
from warpd.connectors.bigquery.source import BigQuerySource
from warpd.connectors.bigquery.source_types import interval_text, range_json, read_column, storage_value
from warpd.connectors.keycodec import decode_value, encode_value
from warpd.errors import FatalError
from warpd.state.store import StateStore
from warpd.verify import table_difference


@dataclass
class BigQueryRun:
    """A test's source dataset in BigQuery and its destination: what conftest's Warp needs of ``dbs``."""

    name: str  # the dataset, the schema's name and the destination schema
    source_uri: str
    dest: DestinationUnderTest
    bq: bigquery.Client

    @property
    def dest_uri(self) -> str:
        return self.dest.uri

    @property
    def dest_schema(self) -> str:
        return self.dest.schema

    def sql(self, statement: str, **params: Any) -> list[Any]:
        """One statement at the source (``{ds}`` stands for the dataset), values as query parameters."""
        config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter(k, None, v) for k, v in params.items()]
        )
        return list(self.bq.query(statement.format(ds=f"`{self.bq.project}.{self.name}`"), job_config=config))

    def source(self, **options: str) -> BigQuerySource:
        extra = "".join(f"&{k}={v}" for k, v in options.items())
        return BigQuerySource(self.source_uri + extra, self.name, self.name, {})

    def differences(self, tables: list[str]) -> list[str]:
        source, dest = self.source(), self.dest.connector()
        try:
            problems = []
            for table in tables:
                plan = dest.plan(source.describe(table), self.dest_schema, soft_delete=False, metadata=False)
                problem = table_difference(source, dest, plan)
                if problem:
                    problems.append(problem)
            return problems
        finally:
            source.close()
            dest.close()


def source_uri(read_api: str = "auto") -> str:
    """The source's URI; ``read_api`` "storage" or "rest" forces that read path (against the emulator,
    "storage" also names its gRPC endpoint, without which ``auto`` reads through REST)."""
    project = bqs.real_project()
    uri = (
        f"bigquery://{project}?job_timeout=120"
        if project
        else f"bigquery://{bqs.PROJECT}?api_endpoint={bqs.endpoint()}&job_timeout=120"
    )
    if read_api != "auto":
        uri += f"&read_api={read_api}"
    if read_api == "storage" and not project:
        uri += f"&read_api_endpoint={bqs.read_endpoint()}"
    return uri


# parametrize("read_api", BOTH_READ_APIS, indirect=True): a test run through each way of reading rows
BOTH_READ_APIS = ["rest", "storage"]


@pytest.fixture
def read_api(request: Any) -> str:
    """The bqrun source's read_api: "auto" (what a configuration without the key gets) unless the test is
    parametrised with BOTH_READ_APIS."""
    return getattr(request, "param", "auto")


@pytest.fixture
def bqrun(destination_kind: str, read_api: str) -> Iterator[BigQueryRun]:
    client = bqs.client()  # skips or fails, as the other BigQuery tests do, without an emulator
    with bqs.temporary_dataset(client, "warp_bqs") as dataset:
        dest = destination_under_test(destination_kind, dataset)
        try:
            yield BigQueryRun(dataset, source_uri(read_api), dest, client)
        finally:
            try:
                dest.drop()
            finally:
                dest.close()


@pytest.fixture
def run_warp(bqrun: BigQueryRun, tmp_path: Any) -> Iterator[Any]:
    started: list[Warp] = []
    state_dir = str(tmp_path / "state")
    os.makedirs(state_dir, exist_ok=True)

    def make(config: str) -> Warp:
        w = Warp(bqrun, state_dir, config, [], {})  # type: ignore[arg-type]  # duck-typed like Databases
        started.append(w)
        return w.start()

    yield make
    for w in started:
        if w.alive():
            w.kill()


def batch_config(tmp_path: Any, name: str, tables: str) -> str:
    return write_config(
        tmp_path,
        f"schemas:\n  - name: {name}\n    mode: batch\n    schedule: {{every: 1s}}\n    tables:\n{tables}",
    )


def wait_equal(bqrun: BigQueryRun, w: Warp, tables: list[str], timeout: float = 90) -> None:
    wait_matching(lambda: bqrun.differences(tables), w, timeout)


def batch_state(state_dir: str, schema: str) -> tuple[dict[str, Any], Any]:
    """The schema's batch tables and schedule as the state file holds them ({}, None before it exists)."""
    if not os.path.exists(os.path.join(state_dir, "state.db")):
        return {}, None
    try:
        store = StateStore(state_dir, read_only=True)
    except FatalError:  # the process is still creating it (its migrations not all applied)
        return {}, None
    try:
        return store.batch_tables(schema), store.batch_schedule(schema)
    finally:
        store.close()


# -- validation: no emulator needed ---------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warpd", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=60,
        check=False,
    )


def test_a_streaming_schema_with_a_bigquery_source_is_refused_by_validate_config(tmp_path):
    config = write_config(
        tmp_path,
        "source:\n  connection_string: 'bigquery://warp?api_endpoint=http://127.0.0.1:9050'\n"
        "destination:\n  connection_string: 'postgresql://warp@127.0.0.1/warp_test'\n"
        f"state_dir: {tmp_path}/state\n"
        "schemas:\n  - name: shop\n  - name: sales\n    mode: batch\n    schedule: {every: 1h}\n",
    )
    result = run_cli("--config", config, "--validate-config")
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        "schemas[0].mode: the bigquery source cannot run mode: stream (it reads no change log); use mode: batch"
        in result.stderr
    )
    assert "schemas[1]" not in result.stderr  # the batch schema is fine


def test_source_only_and_destination_only_uri_parameters_are_refused_where_they_mean_nothing(tmp_path):
    config = write_config(
        tmp_path,
        "source:\n  connection_string: 'bigquery://warp?min_flush_interval=3'\n"
        "destination:\n  connection_string: 'bigquery://warp?max_bytes_billed=1000'\n"
        f"state_dir: {tmp_path}/state\n"
        "schemas:\n  - name: shop\n    mode: batch\n    schedule: {every: 1h}\n    destination_schema: copy\n",
    )
    result = run_cli("--config", config, "--validate-config")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "source.connection_string: unknown parameter 'min_flush_interval'" in result.stderr
    assert "destination.connection_string: unknown parameter 'max_bytes_billed'" in result.stderr


def test_a_key_no_bigquery_section_reads_is_refused_not_ignored(tmp_path):
    config = write_config(
        tmp_path,
        "source:\n  connection_string: 'bigquery://warp'\n  dataset: sales\n"
        "destination:\n  connection_string: 'bigquery://warp'\n  datset: copy\n"
        f"state_dir: {tmp_path}/state\n"
        "schemas:\n  - name: shop\n    mode: batch\n    schedule: {every: 1h}\n    destination_schema: copy\n",
    )
    result = run_cli("--config", config, "--validate-config")
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        "source.dataset: unknown key for a BigQuery source; the dataset a BigQuery source reads is each "
        "schema's source_database" in result.stderr
    )
    assert "destination.datset: unknown key for a BigQuery destination; known keys:" in result.stderr


def refused_by_validate_config(tmp_path: Any, source: str, destination: str) -> str:
    """``--validate-config``'s complaints (it must refuse) about a batch schema ``shop`` between two
    endpoints given as their YAML sections' lines."""
    config = write_config(
        tmp_path,
        f"source:\n{source}destination:\n{destination}state_dir: {tmp_path}/state\n"
        "schemas:\n  - name: shop\n    mode: batch\n    schedule: {every: 1h}\n    destination_schema: copy\n",
    )
    result = run_cli("--config", config, "--validate-config")
    assert result.returncode == 2, result.stdout + result.stderr
    return result.stderr


def test_read_api_and_its_endpoint_are_validated_and_source_only(tmp_path):
    stderr = refused_by_validate_config(
        tmp_path,
        "  connection_string: 'bigquery://warp'\n  read_api: fast\n",
        "  connection_string: 'bigquery://warp?read_api=rest'\n",
    )
    assert "source.connection_string: read_api='fast' must be one of auto, storage, rest" in stderr
    assert "destination.connection_string: unknown parameter 'read_api'" in stderr
    stderr = refused_by_validate_config(
        tmp_path,
        "  connection_string: 'bigquery://warp?read_api_endpoint=http://127.0.0.1:9060'\n",
        "  connection_string: 'postgresql://warp@127.0.0.1/warp_test'\n",
    )
    assert (
        "source.connection_string: read_api_endpoint='http://127.0.0.1:9060' must be the Storage Read API's "
        "gRPC host:port" in stderr
    )


# -- type mapping without the emulator ---------------------------------------------


def test_interval_range_and_unmappable_types():
    from dateutil.relativedelta import relativedelta

    assert (
        interval_text(relativedelta(years=1, months=2, days=3, hours=4, minutes=5, seconds=6))
        == "P1Y2M3DT4H5M6S"
    )
    assert interval_text(relativedelta(months=-1)) == "P-1M"
    assert interval_text(relativedelta(seconds=-1, microseconds=500000)) == "PT-0.5S"
    assert interval_text(relativedelta()) == "PT0S"
    assert range_json({"start": dt.date(2024, 1, 1), "end": None}) == '{"start":"2024-01-01","end":null}'
    start = dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)
    assert range_json({"start": start, "end": None}) == '{"start":"2024-01-01T12:00:00+00:00","end":null}'
    with pytest.raises(FatalError, match=r"table 't', column 'x' is of type WIDGET"):
        read_column("t", bigquery.SchemaField("x", "WIDGET"))
    big = read_column("t", bigquery.SchemaField("b", "BIGNUMERIC"))
    assert (big.column.type.precision, big.column.type.scale) == (77, 38)
    numeric = read_column("t", bigquery.SchemaField("n", "NUMERIC", precision=10, scale=2))
    assert (numeric.column.type.precision, numeric.column.type.scale) == (10, 2)


def test_storage_read_arrow_values_convert_as_the_rest_values_do():
    """BigQuery's own Arrow shapes (which the emulator partly replaces by text), value by value: through
    storage_value and the column's converter they give what the REST path gives."""
    import pyarrow as pa
    from dateutil.relativedelta import relativedelta

    def field(kind: str, **kw: Any) -> Any:
        return read_column("t", bigquery.SchemaField("c", kind, **kw))

    def via_arrow(read: Any, array: Any) -> list[Any]:
        return [None if v is None else read.convert(storage_value("t", read, v)) for v in array.to_pylist()]

    def via_rest(read: Any, values: list[Any]) -> list[Any]:
        return [None if v is None else read.convert(v) for v in values]

    interval = field("INTERVAL")
    arrow = pa.array(
        [pa.MonthDayNano([14, 3, 90_000_000_000_000]), pa.MonthDayNano([-1, 0, -1_500_000_000]), None],
        pa.month_day_nano_interval(),
    )
    rest = [
        relativedelta(years=1, months=2, days=3, hours=25),
        relativedelta(months=-1, seconds=-1, microseconds=-500000),
        None,
    ]
    assert via_arrow(interval, arrow) == via_rest(interval, rest) == ["P1Y2M4DT1H", "P-1MT-1.5S", None]
    assert via_arrow(interval, pa.array(["1-2 3 4:5:6.5", "-0-1 0 -0:0:1.5"])) == [
        "P1Y2M3DT4H5M6.5S",
        "P-1MT-1.5S",
    ]

    numeric = field("NUMERIC")
    assert [
        encode_value(v)
        for v in via_arrow(numeric, pa.array([Decimal("5"), Decimal("1.1")], pa.decimal128(38, 9)))
    ] == [
        {"$dec": "5"},
        {"$dec": "1.1"},
    ]
    big = pa.array([Decimal("-0.5"), Decimal("1" * 38)], pa.decimal256(76, 38))
    assert [encode_value(v) for v in via_arrow(field("BIGNUMERIC"), big)] == [
        {"$dec": "-0.5"},
        {"$dec": "1" * 38},
    ]

    stamp = field("TIMESTAMP")
    at = dt.datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=dt.UTC)
    assert via_arrow(stamp, pa.array([at], pa.timestamp("us", tz="UTC"))) == [at]
    assert via_arrow(field("DATETIME"), pa.array([at.replace(tzinfo=None)], pa.timestamp("us"))) == [
        at.replace(tzinfo=None)
    ]
    assert via_arrow(field("TIME"), pa.array([dt.time(23, 59, 59, 999999)], pa.time64("us"))) == [
        dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)
    ]
    floats = via_arrow(field("FLOAT64"), pa.array([float("nan"), float("inf"), -0.0]))
    assert floats[0] != floats[0] and floats[1:] == [float("inf"), -0.0]

    ranges = field("RANGE", range_element_type="TIMESTAMP")
    bounds = pa.struct([("start", pa.timestamp("us", tz="UTC")), ("end", pa.timestamp("us", tz="UTC"))])
    assert via_arrow(ranges, pa.array([{"start": at, "end": None}], bounds)) == [
        range_json({"start": at, "end": None})
    ]

    with pytest.raises(
        FatalError, match=r"table 't', column 'c' \(INT64\): the Storage Read API returned str"
    ):
        storage_value("t", field("INT64"), "12")
    with pytest.raises(FatalError, match=r"column 'c' \(TIMESTAMP\): the Storage Read API returned datetime"):
        storage_value("t", stamp, at.replace(tzinfo=None))  # no time zone: which instant is unknown
    with pytest.raises(FatalError, match="set read_api: rest"):
        storage_value("t", interval, pa.MonthDayNano([0, 0, 1]))  # a nanosecond: not a BigQuery INTERVAL


def test_max_bytes_billed_is_set_on_every_query_job():
    source = BigQuerySource("bigquery://warp?max_bytes_billed=5000000", "d", "s", {})
    assert source._job_config([]).maximum_bytes_billed == 5_000_000
    assert BigQuerySource("bigquery://warp", "d", "s", {})._job_config([]).maximum_bytes_billed is None


# -- against the emulator, into PostgreSQL and MariaDB --------------------------------


@pytest.mark.destinations
@pytest.mark.parametrize("read_api", BOTH_READ_APIS, indirect=True)
def test_incremental_and_full_refresh_tables_converge_and_follow_dml(bqrun, run_warp, tmp_path, read_api):
    bqrun.sql(
        "CREATE TABLE {ds}.items (id INT64 NOT NULL, v STRING, updated_at TIMESTAMP NOT NULL, "
        "PRIMARY KEY (id) NOT ENFORCED)"
    )
    bqrun.sql(
        "INSERT INTO {ds}.items (id, v, updated_at) SELECT id, CONCAT('v', CAST(id AS STRING)), "
        "TIMESTAMP_ADD(TIMESTAMP '2026-01-01 00:00:00+00', INTERVAL id SECOND) FROM UNNEST(GENERATE_ARRAY(1, 40)) AS id"
    )
    bqrun.sql("CREATE TABLE {ds}.ref (code STRING NOT NULL, label STRING, PRIMARY KEY (code) NOT ENFORCED)")
    bqrun.sql("INSERT INTO {ds}.ref (code, label) VALUES ('a', 'A'), ('b', 'B'), ('c', 'C')")
    bqrun.sql("CREATE TABLE {ds}.nokey (n INT64, label STRING)")  # keyless: full refresh works on it
    bqrun.sql("INSERT INTO {ds}.nokey (n, label) VALUES (1, 'one'), (1, 'one'), (2, 'two')")
    config = batch_config(
        tmp_path,
        bqrun.name,
        "      - name: items\n        cursor_column: updated_at\n        safety_lag: 1s\n"
        "        snapshot_chunk_size: 7\n"
        "      - name: ref\n        sync: full_refresh\n        snapshot_chunk_size: 2\n",
    )
    w = run_warp(config)
    wait_equal(bqrun, w, ["items", "ref", "nokey"])

    bqrun.sql(
        "UPDATE {ds}.items SET v = 'changed', updated_at = TIMESTAMP '2026-02-01 00:00:00+00' WHERE id <= 3"
    )
    bqrun.sql(
        "INSERT INTO {ds}.items (id, v, updated_at) VALUES (100, 'new', TIMESTAMP '2026-02-01 00:00:01+00')"
    )
    bqrun.sql("DELETE FROM {ds}.items WHERE id = 40")  # an incremental table does not see deletes
    bqrun.sql("DELETE FROM {ds}.ref WHERE code = 'a'")
    bqrun.sql("UPDATE {ds}.ref SET label = 'relabelled' WHERE code = 'b'")
    bqrun.sql("DELETE FROM {ds}.nokey WHERE n = 2")
    wait_equal(bqrun, w, ["ref", "nokey"])
    wait_until(lambda: bqrun.dest.count("items") == 41, 90, "the new item")
    rows = dict(bqrun.dest.query("SELECT id, v FROM {} WHERE id <= 3 OR id >= 40", "items"))
    assert rows == {1: "changed", 2: "changed", 3: "changed", 40: "v40", 100: "new"}
    assert sorted(bqrun.dest.query("SELECT code, label FROM {}", "ref")) == [("b", "relabelled"), ("c", "C")]
    assert w.stop() == 0
    api = "the Storage Read API" if read_api == "storage" else "the REST API (jobs.getQueryResults pages)"
    assert f"BigQuery source: dataset {bqrun.name} is read through {api} (read_api: {read_api}" in w.output
    assert not [t for t in bqrun.dest.tables() if t.startswith("_warp_")], "no table beside is left behind"


@pytest.mark.destinations
@pytest.mark.parametrize("read_api", BOTH_READ_APIS, indirect=True)
def test_every_type_the_emulator_holds_arrives_exactly(bqrun, run_warp, tmp_path):
    bqrun.sql(
        "CREATE TABLE {ds}.types (id INT64 NOT NULL, i INT64, n NUMERIC, n2 NUMERIC(10, 2), bn BIGNUMERIC, "
        "f FLOAT64, b BOOL, s STRING, s20 STRING(20), by BYTES, d DATE, dtm DATETIME, ts TIMESTAMP, tm TIME, "
        "j JSON, g GEOGRAPHY, st STRUCT<a INT64, b STRING>, ar ARRAY<STRING>, iv INTERVAL, rg RANGE<DATE>, "
        "PRIMARY KEY (id) NOT ENFORCED)"
    )
    bqrun.sql(
        "INSERT INTO {ds}.types VALUES (1, -9223372036854775808, NUMERIC '-99999999999999999999999999999.999999999', "
        "NUMERIC '12345678.91', BIGNUMERIC '12345678901234567890.123456789012345678', 0.1, TRUE, "
        "'naïve ☃', 'short', b'\\x00\\xff', DATE '0001-01-01', DATETIME '9999-12-31 23:59:59.999999', "
        "TIMESTAMP '2024-02-29 12:34:56.789012+00', TIME '23:59:59.999999', JSON '{{\"k\": [1, 2.5, null]}}', "
        "ST_GEOGPOINT(1.5, 2), STRUCT(7 AS a, 'x' AS b), ['p', 'q'], INTERVAL 3 DAY, "
        "RANGE(DATE '2024-01-01', NULL))"
    )
    bqrun.sql(
        "INSERT INTO {ds}.types (id, ar) VALUES (2, [])"  # every other column NULL
    )
    w = run_warp(batch_config(tmp_path, bqrun.name, "      - name: types\n        sync: full_refresh\n"))
    wait_equal(bqrun, w, ["types"])
    assert w.stop() == 0
    source = bqrun.source()
    try:
        shape = source.describe("types")
        (row,) = [r for chunk in source.snapshot(shape, None, 10) for r in chunk.rows if r["id"] == 1]
    finally:
        source.close()
    assert row["n"] == Decimal("-99999999999999999999999999999.999999999")
    assert row["bn"] == Decimal("12345678901234567890.123456789012345678")
    assert row["dtm"] == dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
    assert row["ts"] == dt.datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=dt.UTC)
    assert row["tm"] == dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)
    assert row["g"] == "POINT(1.5 2)"
    assert row["iv"] == "P3D"
    assert row["rg"] == '{"start":"2024-01-01","end":null}'
    (held,) = bqrun.dest.query("SELECT n, bn, s, j, st, ar FROM {} WHERE id = 1", "types")
    assert Decimal(str(held[0])) == row["n"]
    assert Decimal(str(held[1])) == row["bn"]
    assert held[2] == "naïve ☃"
    assert bqrun.dest.json(held[3]) == {"k": [1, 2.5, None]}
    assert bqrun.dest.json(held[4]) == {"a": 7, "b": "x"}
    assert bqrun.dest.json(held[5]) == ["p", "q"]


def test_bignumeric_holds_76_digits(bqrun):
    if bqs.emulated():
        pytest.skip(
            "emulator gap: the BigQuery emulator holds BIGNUMERIC as DECIMAL(38, 18) (it refuses "
            "BIGNUMERIC '...' with 38 integer and 38 fractional digits); real BigQuery: WARP_TEST_BIGQUERY_PROJECT"
        )
    value = "57896044618658097711785492504343953926.63499233282028201972879200395656481996"
    bqrun.sql("CREATE TABLE {ds}.big (id INT64 NOT NULL, v BIGNUMERIC, PRIMARY KEY (id) NOT ENFORCED)")
    bqrun.sql(f"INSERT INTO {{ds}}.big VALUES (1, BIGNUMERIC '{value}')")
    source = bqrun.source()
    try:
        rows = [r for chunk in source.snapshot(source.describe("big"), None, 10) for r in chunk.rows]
    finally:
        source.close()
    assert rows == [{"id": 1, "v": Decimal(value)}]


@pytest.mark.parametrize("read_api", BOTH_READ_APIS, indirect=True)
def test_a_full_refresh_reads_one_point_in_time(bqrun):
    """Rows written after the read started are not in it, even in a later chunk (FOR SYSTEM_TIME AS OF)."""
    bqrun.sql("CREATE TABLE {ds}.t (id INT64 NOT NULL, PRIMARY KEY (id) NOT ENFORCED)")
    bqrun.sql("INSERT INTO {ds}.t (id) SELECT id FROM UNNEST(GENERATE_ARRAY(1, 6)) AS id")
    source = bqrun.source()
    try:
        chunks = source.snapshot(source.describe("t"), None, 2)
        first = next(chunks)
        bqrun.sql("INSERT INTO {ds}.t (id) VALUES (7), (8)")
        bqrun.sql("DELETE FROM {ds}.t WHERE id = 6")
        rest = [r["id"] for chunk in chunks for r in chunk.rows]
    finally:
        source.close()
    assert [r["id"] for r in first.rows] + rest == [1, 2, 3, 4, 5, 6]
    assert first.resume_after == {"key": [2]}


def test_max_bytes_billed_stops_a_query_over_it(bqrun):
    if bqs.emulated():
        pytest.skip("emulator gap: the BigQuery emulator bills nothing and ignores maximum_bytes_billed")
    bqrun.sql("CREATE TABLE {ds}.t (id INT64 NOT NULL, s STRING)")
    bqrun.sql(
        "INSERT INTO {ds}.t (id, s) SELECT id, REPEAT('x', 1000) FROM UNNEST(GENERATE_ARRAY(1, 20000)) AS id"
    )
    source = bqrun.source(max_bytes_billed="1")
    try:
        with pytest.raises(Exception, match="(?i)bytes billed"):
            list(source.snapshot(source.describe("t"), None, 100))
    finally:
        source.close()


@pytest.mark.parametrize("read_api", BOTH_READ_APIS, indirect=True)
def test_incremental_resume_points_carry_the_cursor_and_the_key(bqrun):
    bqrun.sql(
        "CREATE TABLE {ds}.t (id INT64 NOT NULL, version NUMERIC NOT NULL, PRIMARY KEY (id) NOT ENFORCED)"
    )
    bqrun.sql("INSERT INTO {ds}.t VALUES (1, 5), (2, 5), (3, 7), (4, 9)")
    source = bqrun.source()
    try:
        shape = source.describe("t")
        chunks = list(source.read_since(shape, "version", None, None, 2))
        assert [[r["id"] for r in c.rows] for c in chunks] == [[1, 2], [3, 4], []]
        assert chunks[0].resume_after == {"cursor": {"$dec": "5"}, "key": [2]}
        # from the mark 7 minus a lag of 2: rows at 5 and up, read again
        again = list(source.read_since(shape, "version", {"cursor": {"$dec": "7"}}, Decimal(2), 10))
        assert [r["id"] for c in again for r in c.rows] == [1, 2, 3, 4]
        later = list(source.read_since(shape, "version", {"cursor": {"$dec": "9"}}, Decimal(0), 10))
        assert [r["id"] for c in later for r in c.rows] == [4]
        with pytest.raises(FatalError, match="has no column 'nope'"):
            list(source.read_since(shape, "nope", None, None, 10))
    finally:
        source.close()


def test_both_read_apis_give_the_same_values_in_the_same_order(bqrun):
    """Every type, edge values and NULLs, in key order, and each chunk's resume point: the Storage Read API
    path gives exactly what the REST path gives."""
    bqrun.sql(
        "CREATE TABLE {ds}.t (k STRING NOT NULL, id INT64 NOT NULL, n NUMERIC, bn BIGNUMERIC, f FLOAT64, b BOOL, "
        "by BYTES, d DATE, dtm DATETIME, ts TIMESTAMP, tm TIME, j JSON, g GEOGRAPHY, "
        "st STRUCT<a INT64, b ARRAY<STRING>>, ar ARRAY<INT64>, iv INTERVAL, rd RANGE<DATE>, "
        "rdt RANGE<DATETIME>, rts RANGE<TIMESTAMP>, PRIMARY KEY (k, id) NOT ENFORCED)"
    )
    bqrun.sql(
        "INSERT INTO {ds}.t VALUES ('b', 2, NUMERIC '5', BIGNUMERIC '-0.5', CAST('nan' AS FLOAT64), FALSE, b'', "
        "DATE '9999-12-31', DATETIME '0001-01-01 00:00:00', TIMESTAMP '1970-01-01 00:00:00+00', TIME '00:00:00', "
        "JSON 'null', ST_GEOGFROMTEXT('LINESTRING(0 0, 1 1)'), STRUCT(1 AS a, ['x'] AS b), [3, 1, 2], "
        "INTERVAL '1-2 3 4:5:6.5' YEAR TO SECOND, RANGE(DATE '2024-01-01', DATE '2024-02-01'), "
        "RANGE(DATETIME '2024-01-01 10:00:00', NULL), RANGE(NULL, TIMESTAMP '2024-01-01 10:00:00.5+00')), "
        "('a', 9, NUMERIC '0.000000001', BIGNUMERIC '12345678901234567890.123456789012345678', "
        "CAST('-inf' AS FLOAT64), TRUE, b'\\x00', DATE '2024-02-29', DATETIME '2024-02-29 23:59:59.999999', "
        "TIMESTAMP '2024-02-29 12:34:56.789012+00', TIME '12:00:00.000001', JSON '{{\"a\": [1, \"é\"]}}', "
        "ST_GEOGPOINT(-1.25, 2.5), NULL, [], INTERVAL 25 HOUR, NULL, NULL, NULL), "
        "('a', 1, NULL, NULL, CAST('inf' AS FLOAT64), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
        "NULL, INTERVAL 0 DAY, NULL, NULL, NULL)"
    )
    bqrun.sql("INSERT INTO {ds}.t (k, id, f) SELECT 'c', id, id / 7 FROM UNNEST(GENERATE_ARRAY(1, 30)) AS id")

    def read(read_api: str, chunk_size: int) -> list[Any]:
        source = BigQuerySource(source_uri(read_api), bqrun.name, bqrun.name, {})
        try:
            shape = source.describe("t")
            return [
                ([{k: encode_value(v) for k, v in r.items()} for r in chunk.rows], chunk.resume_after)
                for chunk in source.snapshot(shape, None, chunk_size)
            ]
        finally:
            source.close()

    for chunk_size in (2, 100):
        rest, storage = read("rest", chunk_size), read("storage", chunk_size)
        assert repr(storage) == repr(rest)  # repr: NaN is not equal to itself
    rows = [row for chunk, _ in rest for row in chunk]
    assert [(r["k"], r["id"]) for r in rows[:4]] == [("a", 1), ("a", 9), ("b", 2), ("c", 1)]
    assert rows[1]["n"] == {"$dec": "1E-9"} and rows[2]["n"] == {"$dec": "5"}
    assert rows[2]["iv"] == "P1Y2M3DT4H5M6.5S" and rows[1]["iv"] == "P1DT1H" and rows[0]["iv"] == "PT0S"
    assert rows[2]["rd"] == '{"start":"2024-01-01","end":"2024-02-01"}'
    assert rows[2]["rts"] == '{"start":null,"end":"2024-01-01T10:00:00.500000+00:00"}'
    assert len(rows) == 33


def test_read_api_storage_stops_where_there_is_no_storage_read_api_and_auto_reads_through_rest(bqrun, caplog):
    if not bqs.emulated():
        pytest.skip("points read_api_endpoint at the emulator's REST port, which speaks no gRPC")
    bqrun.sql("CREATE TABLE {ds}.t (id INT64 NOT NULL, PRIMARY KEY (id) NOT ENFORCED)")
    bqrun.sql("INSERT INTO {ds}.t (id) VALUES (1), (2), (3)")
    rest_port = bqs.endpoint().rsplit("//", 1)[1]  # an endpoint that answers, but not the Storage Read API
    source = bqrun.source(read_api="storage", read_api_endpoint=rest_port)
    try:
        with pytest.raises(FatalError) as stopped:
            list(source.snapshot(source.describe("t"), None, 2))
    finally:
        source.close()
    assert str(stopped.value).startswith(
        "BigQuery source: read_api: storage, but the Storage Read API cannot be used: ServiceUnavailable: "
    )
    assert str(stopped.value).endswith(
        "; check read_api_endpoint (its gRPC host:port), grant this identity roles/bigquery.readSessionUser, "
        "or set read_api: rest (docs/bigquery.md)"
    )
    source = bqrun.source(read_api="auto", read_api_endpoint=rest_port)
    try:
        with caplog.at_level("INFO", logger="warpd.connectors.bigquery.source"):
            shape = source.describe("t")
            first = [r["id"] for chunk in source.snapshot(shape, None, 2) for r in chunk.rows]
            again = [r["id"] for chunk in source.snapshot(shape, None, 2) for r in chunk.rows]
    finally:
        source.close()
    assert first == again == [1, 2, 3]
    settled = [r.getMessage() for r in caplog.records if "is read through" in r.getMessage()]
    assert len(settled) == 1, settled  # one line, at the first read
    assert settled[0].startswith(
        f"BigQuery source: dataset {bqrun.name} is read through the REST API (jobs.getQueryResults pages) "
        "(read_api: auto, and the Storage Read API cannot be used: ServiceUnavailable: "
    )


def test_a_table_without_a_primary_key_is_keyless_and_key_columns_supply_one(bqrun):
    bqrun.sql("CREATE TABLE {ds}.t (a INT64, b STRING)")
    source = bqrun.source()
    try:
        assert source.describe("t").key == ()
        assert source.describe("t", ("b", "a")).key == ("b", "a")
        with pytest.raises(FatalError, match=r"key_columns \['c'\] are not columns"):
            source.describe("t", ("c",))
        assert source.list_tables() == ["t"]
    finally:
        source.close()


def test_a_missing_dataset_is_named(bqrun):
    source = BigQuerySource(bqrun.source_uri, f"nope_{uuid.uuid4().hex[:8]}", "s", {})
    try:
        with pytest.raises(FatalError, match="there is no dataset 'nope_"):
            source.list_tables()
    finally:
        source.close()


def test_a_partition_filter_bounds_every_read_of_the_table(bqrun, run_warp, tmp_path):
    bqrun.sql("CREATE TABLE {ds}.events (id INT64 NOT NULL, d DATE NOT NULL, PRIMARY KEY (id) NOT ENFORCED)")
    bqrun.sql(
        "INSERT INTO {ds}.events (id, d) VALUES (1, DATE '2025-12-30'), (2, DATE '2025-12-31'), "
        "(3, DATE '2026-01-01'), (4, DATE '2026-01-02')"
    )
    bqrun.sql("CREATE TABLE {ds}.daily (id INT64 NOT NULL, d DATE NOT NULL, PRIMARY KEY (id) NOT ENFORCED)")
    bqrun.sql("INSERT INTO {ds}.daily (id, d) VALUES (1, DATE '2025-12-31'), (2, DATE '2026-01-01')")
    since = "        partition_filter: \"d >= DATE '2026-01-01'\"\n"
    config = batch_config(
        tmp_path,
        bqrun.name,
        "      - name: events\n        cursor_column: id\n        safety_lag: 0\n        snapshot_chunk_size: 1\n"
        + since
        + "      - name: daily\n        sync: full_refresh\n"
        + since,
    )
    w = run_warp(config)
    wait_until(
        lambda: bqrun.dest.count("events") == 2 and bqrun.dest.count("daily") == 1, 90, "the first run"
    )
    bqrun.sql("INSERT INTO {ds}.events (id, d) VALUES (5, DATE '2025-01-01'), (6, DATE '2026-03-01')")
    wait_until(lambda: bqrun.dest.count("events") == 3, 90, "the next run")
    time.sleep(2)  # more runs
    assert sorted(r[0] for r in bqrun.dest.query("SELECT id FROM {}", "events")) == [3, 4, 6]
    assert [r[0] for r in bqrun.dest.query("SELECT id FROM {}", "daily")] == [2]
    assert w.stop() == 0


def test_a_partition_filter_for_another_source_is_refused(tmp_path):
    config = write_config(
        tmp_path,
        "source:\n  connection_string: 'mysql://warp@127.0.0.1:3306'\n"
        "destination:\n  connection_string: 'postgresql://warp@127.0.0.1:5432/warp_test'\n"
        f"state_dir: {tmp_path}/state\n"
        "schemas:\n  - name: shop\n    mode: batch\n    schedule: {every: 1h}\n    tables:\n"
        "      - name: t\n        partition_filter: 'id > 3'\n",
    )
    result = run_cli("--config", config, "--validate-config")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "schemas[0].tables[0].partition_filter: partition_filter is read by the BigQuery source only" in (
        result.stderr
    )


BIG_ROWS = 1200
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("sync", "cursor", "read_api"),
    [
        ("incremental", "id", "auto"),
        ("incremental", "updated_at", "auto"),
        ("full_refresh", None, "auto"),
        ("incremental", "updated_at", "storage"),
        ("full_refresh", None, "storage"),
    ],
    ids=[
        "incremental-int64",
        "incremental-timestamp",
        "full_refresh",
        "incremental-timestamp-storage",
        "full_refresh-storage",
    ],
    indirect=["read_api"],
)
def test_a_kill_during_a_run_resumes_without_loss_or_duplicates(
    bqrun, run_warp, tmp_path, sync, cursor, read_api
):
    # the Storage Read API hands the copy its rows in a few batches, so 1,200 rows are written in a
    # fraction of a second, too fast to catch part way: ten times as many keep the window wide
    big_rows = BIG_ROWS * (10 if read_api == "storage" else 1)
    bqrun.sql(
        "CREATE TABLE {ds}.big (id INT64 NOT NULL, v STRING NOT NULL, updated_at TIMESTAMP NOT NULL, "
        "PRIMARY KEY (id) NOT ENFORCED)"
    )
    # three rows per timestamp: a chunk may end inside a group sharing one cursor value
    bqrun.sql(
        "INSERT INTO {ds}.big (id, v, updated_at) SELECT id, CONCAT('value ', CAST(id AS STRING)), "
        "TIMESTAMP_ADD(TIMESTAMP '2026-01-01 00:00:00+00', INTERVAL DIV(id, 3) SECOND) "
        f"FROM UNNEST(GENERATE_ARRAY(1, {big_rows})) AS id"
    )
    table = "      - name: big\n        snapshot_chunk_size: 20\n" + (
        f"        cursor_column: {cursor}\n        safety_lag: 0\n"
        if sync == "incremental"
        else "        sync: full_refresh\n"
    )
    config = write_config(
        tmp_path,
        f"schemas:\n  - name: {bqrun.name}\n    mode: batch\n    schedule: {{every: 1h}}\n    tables:\n{table}",
    )
    state_dir = os.path.join(str(tmp_path), "state")
    w = run_warp(config)

    def partway() -> bool:
        if sync == "incremental":
            state = batch_state(state_dir, bqrun.name)[0].get("big")
            return state is not None and 200 <= state.rows_moved < big_rows - 200
        beside = [t for t in bqrun.dest.tables() if t.startswith("_warp_new_")]
        return bool(beside) and 200 <= (bqrun.dest.count(beside[0]) or 0) < big_rows - 200

    if sync == "full_refresh":
        # a stop (SIGTERM) in the middle of the copy drops the unfinished copy beside the live table
        wait_until(partway, 120, "the run to be part way", interval=0.05)
        assert w.stop() == 0
        assert not [t for t in bqrun.dest.tables() if t.startswith("_warp_new_")], "the stop dropped the copy"
        assert bqrun.dest.count("big") in (None, 0)
        w = run_warp(config)
    wait_until(partway, 120, "the run to be part way", interval=0.05)
    w.kill()
    held = bqrun.dest.count("big")
    if sync == "full_refresh":
        assert held in (None, 0), "nothing is swapped in before the copy is complete"
    else:
        assert held is not None and 0 < held < big_rows
        mark = batch_state(state_dir, bqrun.name)[0]["big"].mark
        assert mark is not None and mark["column"] == cursor

    w = run_warp(config)  # an unfinished run starts again at once, whatever the schedule says
    wait_equal(bqrun, w, ["big"], timeout=180)
    assert bqrun.dest.count("big") == big_rows
    wait_until(
        lambda: (
            (batch_state(state_dir, bqrun.name)[1] or None) is not None
            and batch_state(state_dir, bqrun.name)[1].run_status == "ok"
        ),
        60,
        "the run to be recorded as finished",
    )
    assert not [t for t in bqrun.dest.tables() if t.startswith("_warp_new_")], "no copy beside is left"
    tables, schedule = batch_state(state_dir, bqrun.name)
    assert schedule.run_status == "ok" and tables["big"].run_status == "ok"
    if sync == "incremental":
        last = big_rows if cursor == "id" else T0 + dt.timedelta(seconds=big_rows // 3)
        assert decode_value(tables["big"].mark["cursor"]) == last
        assert tables["big"].rows_moved < big_rows, "the run went on from its last chunk, not from the start"
    assert w.stop() == 0


@pytest.mark.destinations
def test_key_scan_deletes_rows_gone_from_the_source(bqrun, run_warp, tmp_path):
    bqrun.sql(
        "CREATE TABLE {ds}.items (id INT64 NOT NULL, v STRING, updated_at TIMESTAMP NOT NULL, "
        "PRIMARY KEY (id) NOT ENFORCED)"
    )
    bqrun.sql(
        "INSERT INTO {ds}.items (id, v, updated_at) SELECT id, CONCAT('v', CAST(id AS STRING)), "
        "TIMESTAMP_ADD(TIMESTAMP '2026-01-01 00:00:00+00', INTERVAL id SECOND) "
        "FROM UNNEST(GENERATE_ARRAY(1, 100)) AS id"
    )
    config = batch_config(
        tmp_path,
        bqrun.name,
        "      - name: items\n        cursor_column: updated_at\n        safety_lag: 1s\n"
        "        snapshot_chunk_size: 25\n        delete_detection: key_scan\n",
    )
    w = run_warp(config)
    wait_equal(bqrun, w, ["items"])

    bqrun.sql("DELETE FROM {ds}.items WHERE id > 90 OR id IN (7, 8)")
    bqrun.sql(
        "UPDATE {ds}.items SET v = 'changed', updated_at = TIMESTAMP '2026-02-01 00:00:00+00' WHERE id = 1"
    )
    bqrun.sql(
        "INSERT INTO {ds}.items (id, v, updated_at) VALUES (200, 'new', TIMESTAMP '2026-02-01 00:00:01+00')"
    )
    wait_equal(bqrun, w, ["items"])
    assert bqrun.dest.count("items") == 100 - 12 + 1
    rows = dict(bqrun.dest.query("SELECT id, v FROM {} WHERE id IN (1, 7, 91, 200)", "items"))
    assert rows == {1: "changed", 200: "new"}
    assert "items: key scan deleted 12 rows gone from the source" in w.output
    assert w.stop() == 0
    tables, _ = batch_state(os.path.join(str(tmp_path), "state"), bqrun.name)
    assert tables["items"].run_error is None
