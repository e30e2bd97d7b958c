"""``cartridge-warp verify`` with a BigQuery destination (the emulator, tests/bigquery_support.py):
MariaDB source -> BigQuery, replicated by the real process, then edited directly in BigQuery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import Databases, Warp
from test_replication import assert_converged, start_streaming, stop_cleanly
from test_verify import EVERY_TYPE, ROW_VALUES, config_for, differences, replicate, verified, verify

pytestmark = pytest.mark.parametrize("destination_kind", ["bigquery"], indirect=True)

# the emulator's BIGNUMERIC holds 20 integer digits (DECIMAL(38,18)), BigQuery's 38; its Parquet loads
# refuse negative intervals
ROWS = ROW_VALUES.replace("123456789012345678901234567890", "12345678901234567890").replace(
    "'-100:02:03.45'", "'100:02:03.45'"
)
assert ROWS != ROW_VALUES


def test_every_type_verifies_equal_and_each_bigquery_edit_is_reported(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql(EVERY_TYPE)
    dbs.sql("INSERT INTO every_type VALUES " + ROWS)
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)

    report = verified(dbs, config, f"{dbs.name}.every_type", 0)
    (table,) = report["tables"]
    assert (table["source_rows"], table["destination_rows"], table["differing_keys"]) == (4, 4, 0)
    assert table["not_compared"] == {}
    assert {"vc", "tm", "bt", "d", "dtm", "ts", "u", "bl", "f", "dbl", "js", "st"} <= set(
        table["compared_columns"]
    )

    every = dbs.dest.ident("every_type")
    # floats, JSON and SET (held as a JSON array) compared in Python: a SET's members in another order
    # and a JSON document's keys in another order are equal; JSON's array order, a value, a double differ
    dbs.dest.query(f'UPDATE {every} SET st = PARSE_JSON(\'["y", "x"]\') WHERE id = 1')  # noqa: S608
    dbs.dest.query(f'UPDATE {every} SET js = PARSE_JSON(\'{{"a": [1], "b": 1.0}}\') WHERE id = 1')  # noqa: S608
    verified(dbs, config, f"{dbs.name}.every_type", 0)
    dbs.dest.query(f"UPDATE {every} SET js = PARSE_JSON('[null]') WHERE id = 2")  # noqa: S608 - was []
    dbs.dest.query(f"UPDATE {every} SET dbl = 1e299 WHERE id = 4")  # noqa: S608 - was 1e300
    dbs.dest.query(f"UPDATE {every} SET js = PARSE_JSON('null') WHERE id = 3")  # noqa: S608 - JSON null, was SQL NULL
    report = verified(dbs, config, f"{dbs.name}.every_type", 1)
    assert differences(report) == [
        ("every_type", "different", {"id": "2"}),
        ("every_type", "different", {"id": "3"}),
        ("every_type", "different", {"id": "4"}),
    ]
    dbs.dest.query(f"UPDATE {every} SET js = PARSE_JSON('[]') WHERE id = 2")  # noqa: S608 - as they were
    dbs.dest.query(f"UPDATE {every} SET js = NULL WHERE id = 3")  # noqa: S608
    dbs.dest.query(f"UPDATE {every} SET dbl = 1e300 WHERE id = 4")  # noqa: S608
    verified(dbs, config, f"{dbs.name}.every_type", 0)

    dbs.dest.query(f"UPDATE {every} SET vc = 'changed' WHERE id = 1")  # noqa: S608 - test SQL
    dbs.dest.query(f"UPDATE {every} SET tx = NULL WHERE id = 2")  # noqa: S608 - '' vs NULL
    dbs.dest.query(f"UPDATE {every} SET d = NUMERIC '10.500' WHERE id = 4")  # noqa: S608 - the same value
    dbs.dest.query(f"DELETE FROM {every} WHERE id = 3")  # noqa: S608
    dbs.dest.query(f"INSERT INTO {every} (id) VALUES (99)")  # noqa: S608
    report = verified(dbs, config, f"{dbs.name}.every_type", 1)
    assert differences(report) == [
        ("every_type", "different", {"id": "1"}),
        ("every_type", "different", {"id": "2"}),
        ("every_type", "extra", {"id": "99"}),
        ("every_type", "missing", {"id": "3"}),
    ]
    text = verify(dbs, config, dbs.name)
    assert text.returncode == 1, text.stdout + text.stderr
    assert "id=3: missing at the destination" in text.stdout


def test_composite_text_key_and_soft_deletes_narrow_down_to_the_differing_keys(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE pairs (region VARCHAR(20), n INT, v VARCHAR(20), PRIMARY KEY (region, n))")
    regions = ["a", "B", "c", "é", "Z", "zz", " lead", "tail "]
    dbs.many("INSERT INTO pairs VALUES (%s, %s, %s)", [(r, n, f"v{n}") for r in regions for n in range(250)])
    config = config_for(dbs, tmp_path, "    deletes: soft\n    metadata_columns: true\n")
    w = start_streaming(warp, config)
    dbs.sql("DELETE FROM pairs WHERE region = 'a' AND n = 0")
    assert_converged(dbs, w, soft_delete=True)
    stop_cleanly(w)
    assert dbs.dest.count("pairs") == 2000  # the deleted row is kept, marked
    report = verified(dbs, config, f"{dbs.name}.pairs", 0)
    assert (report["tables"][0]["source_rows"], report["tables"][0]["destination_rows"]) == (1999, 1999)

    pairs = dbs.dest.ident("pairs")
    dbs.dest.query(f"UPDATE {pairs} SET v = 'x' WHERE region = 'é' AND n = 77")  # noqa: S608
    dbs.dest.query(  # noqa: S608 - marked deleted at the destination only: absent there
        f"UPDATE {pairs} SET _warp_deleted_at = CURRENT_TIMESTAMP() WHERE region = 'B' AND n = 249"
    )
    dbs.dest.query(f"INSERT INTO {pairs} (region, n, v) VALUES ('b', 5, 'v5')")  # noqa: S608
    report = verified(dbs, config, f"{dbs.name}.pairs", 1)
    assert differences(report) == [
        ("pairs", "different", {"region": "é", "n": "77"}),
        ("pairs", "extra", {"region": "b", "n": "5"}),
        ("pairs", "missing", {"region": "B", "n": "249"}),
    ]
    assert report["tables"][0]["ranges"] > 3  # narrowed, not listed whole


def test_a_key_bigquery_cannot_order_like_the_source_is_refused_with_exit_2(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE shifts (starts TIME PRIMARY KEY, label VARCHAR(10))")  # held as an INTERVAL
    dbs.sql("INSERT INTO shifts VALUES ('08:00:00', 'early'), ('16:00:00', 'late')")
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)
    run = verify(dbs, config, f"{dbs.name}.shifts")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "'shifts'" in run.stderr and "'starts'" in run.stderr and "INTERVAL" in run.stderr
    assert "Traceback" not in run.stderr
