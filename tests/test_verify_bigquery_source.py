"""``cartridge-warp verify`` with a BigQuery source (the emulator; ``mode: batch``) -> PostgreSQL, MariaDB:
a batch run copies the tables, then the destination is edited directly."""

from __future__ import annotations

from typing import Any

import pytest
import test_bigquery_source as bigquery_source
from test_bigquery_source import BigQueryRun, batch_config, wait_equal
from test_verify import differences, verified, verify

from tests.destinations import with_destination_schema

# the BigQuery source tests' fixtures: a source dataset and its PostgreSQL schema, the process
bqrun, read_api, run_warp = bigquery_source.bqrun, bigquery_source.read_api, bigquery_source.run_warp


@pytest.mark.destinations
def test_a_batch_copy_verifies_equal_and_each_destination_edit_is_reported(
    bqrun: BigQueryRun, run_warp: Any, tmp_path: Any
) -> None:
    bqrun.sql(
        "CREATE TABLE {ds}.types (id INT64 NOT NULL, i INT64, n NUMERIC, n2 NUMERIC(10, 2), bn BIGNUMERIC, "
        "f FLOAT64, b BOOL, s STRING, by BYTES, d DATE, dtm DATETIME, ts TIMESTAMP, tm TIME, "
        "j JSON, g GEOGRAPHY, ar ARRAY<STRING>, iv INTERVAL, st STRUCT<a INT64, b ARRAY<STRING>>, rg RANGE<DATE>, "
        "PRIMARY KEY (id) NOT ENFORCED)"
    )
    bqrun.sql(
        "INSERT INTO {ds}.types VALUES (1, -9223372036854775808, NUMERIC '-99999999999999999999999999999.999999999', "
        "NUMERIC '12345678.90', BIGNUMERIC '12345678901234567890.123456789012345678', 0.1, TRUE, "
        "'naïve ☃, :N', b'\\x00\\xff', DATE '0001-01-01', DATETIME '9999-12-31 23:59:59.999999', "
        "TIMESTAMP '2024-02-29 12:34:56.789012+00', TIME '23:59:59.999999', JSON '{{\"k\": [1, 2.5, null]}}', "
        "ST_GEOGPOINT(1.5, 2), ['p', 'q'], INTERVAL 3 DAY, STRUCT(7 AS a, ['u', 'v'] AS b), "
        "RANGE(DATE '2024-01-01', NULL))"
    )
    bqrun.sql("INSERT INTO {ds}.types (id, s, ar) VALUES (2, '', [])")  # every other column NULL
    bqrun.sql(
        'INSERT INTO {ds}.types (id, f, j, ar) VALUES (3, 1e300, JSON \'{{"a": 1, "b": ["x", 0.5]}}\', '
        "['x', 'y']), (4, -0.25, JSON '[1, \"two\", {{\"t\": true}}]', ['z'])"
    )
    bqrun.sql(
        "CREATE TABLE {ds}.pairs (region STRING NOT NULL, day DATE NOT NULL, v INT64, "
        "PRIMARY KEY (region, day) NOT ENFORCED)"
    )
    bqrun.sql(
        "INSERT INTO {ds}.pairs (region, day, v) SELECT r, DATE_ADD(DATE '2024-01-01', INTERVAL n DAY), n "
        "FROM UNNEST(['a', 'B', 'é', 'Z', ' lead']) AS r, UNNEST(GENERATE_ARRAY(0, 199)) AS n"
    )
    config = batch_config(
        tmp_path,
        bqrun.name,
        "      - name: types\n        sync: full_refresh\n      - name: pairs\n        sync: full_refresh\n",
    )
    with open(config, encoding="utf-8") as f:  # verify reads the destination schema the process writes
        text = with_destination_schema(f.read(), bqrun.name, bqrun.dest)
    with open(config, "w", encoding="utf-8") as f:
        f.write(text or "")
    w = run_warp(config)
    wait_equal(bqrun, w, ["types", "pairs"])
    assert w.stop() == 0

    report = verified(bqrun, config, bqrun.name, 0)  # type: ignore[arg-type]  # the attributes verify reads
    tables = {t["table"]: t for t in report["tables"]}
    assert (tables["pairs"]["source_rows"], tables["pairs"]["destination_rows"]) == (1000, 1000)
    assert (tables["types"]["source_rows"], tables["types"]["destination_rows"]) == (4, 4)
    assert {
        "i",
        "n",
        "n2",
        "bn",
        "b",
        "s",
        "by",
        "d",
        "dtm",
        "ts",
        "tm",
        "g",
        "iv",
        "f",
        "j",
        "ar",
        "st",
        "rg",
    } <= set(tables["types"]["compared_columns"])
    assert tables["types"]["not_compared"] == {}

    # FLOAT64, JSON, STRUCT and ARRAY (held as JSON) compared in Python: a document spelled otherwise is
    # equal; an array reordered, a double changed, a JSON null where the source holds SQL NULL differ
    bqrun.dest.query("UPDATE {} SET j = %s WHERE id = 3", "types", args=('{"b": ["x", 5e-1], "a": 1.0}',))
    verified(bqrun, config, f"{bqrun.name}.types", 0)  # type: ignore[arg-type]
    bqrun.dest.query("UPDATE {} SET ar = %s WHERE id = 3", "types", args=('["y", "x"]',))
    bqrun.dest.query("UPDATE {} SET f = -0.5 WHERE id = 4", "types")
    bqrun.dest.query("UPDATE {} SET j = %s WHERE id = 2", "types", args=("null",))
    bqrun.dest.query("UPDATE {} SET st = %s WHERE id = 1", "types", args=('{"a": 7, "b": ["v", "u"]}',))
    report = verified(bqrun, config, f"{bqrun.name}.types", 1)  # type: ignore[arg-type]
    assert differences(report) == [
        ("types", "different", {"id": "1"}),
        ("types", "different", {"id": "2"}),
        ("types", "different", {"id": "3"}),
        ("types", "different", {"id": "4"}),
    ]
    # ... and a JSON value changed at the source (the emulator cannot UPDATE an ARRAY column)
    bqrun.dest.query("UPDATE {} SET j = NULL WHERE id = 2", "types")  # as they were
    bqrun.dest.query("UPDATE {} SET st = %s WHERE id = 1", "types", args=('{"b": ["u", "v"], "a": 7}',))
    bqrun.dest.query("UPDATE {} SET ar = %s WHERE id = 3", "types", args=('["x", "y"]',))
    bqrun.dest.query("UPDATE {} SET f = -0.25 WHERE id = 4", "types")
    verified(bqrun, config, f"{bqrun.name}.types", 0)  # type: ignore[arg-type]
    bqrun.sql('UPDATE {ds}.types SET j = PARSE_JSON(\'[1, "two", {{"t": false}}]\') WHERE id = 4')
    report = verified(bqrun, config, f"{bqrun.name}.types", 1)  # type: ignore[arg-type]
    assert differences(report) == [("types", "different", {"id": "4"})]

    bqrun.dest.query("UPDATE {} SET s = 'changed' WHERE id = 1", "types")
    bqrun.dest.query("UPDATE {} SET s = NULL WHERE id = 2", "types")  # '' -> NULL
    bqrun.dest.query("UPDATE {} SET v = -1 WHERE region = 'é' AND day = '2024-03-01'", "pairs")
    bqrun.dest.query("DELETE FROM {} WHERE region = 'B' AND day = '2024-01-01'", "pairs")
    bqrun.dest.query("INSERT INTO {} (region, day, v) VALUES ('b', '2024-01-01', 0)", "pairs")
    report = verified(bqrun, config, bqrun.name, 1)  # type: ignore[arg-type]
    assert differences(report) == [
        ("pairs", "different", {"region": "é", "day": "2024-03-01"}),
        ("pairs", "extra", {"region": "b", "day": "2024-01-01"}),
        ("pairs", "missing", {"region": "B", "day": "2024-01-01"}),
        ("types", "different", {"id": "1"}),
        ("types", "different", {"id": "2"}),
        ("types", "different", {"id": "4"}),
    ]
    text = verify(bqrun, config, f"{bqrun.name}.pairs")  # type: ignore[arg-type]
    assert text.returncode == 1, text.stdout + text.stderr
    assert "region=B, day=2024-01-01: missing at the destination" in text.stdout
