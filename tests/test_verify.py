"""``cartridge-warp verify``: key-range checksums computed by MariaDB and by each destination
(PostgreSQL, MariaDB; tests/destinations.py) after a real replication by ``cartridge-warp``.

Every test replicates with the real process, stops it cleanly, then edits the destination
directly (the differences verify must find) and runs ``cartridge-warp verify`` as a user
would, asserting its exit code and what it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from conftest import ROOT, Databases, Warp, write_config
from test_replication import assert_converged, start_streaming, stop_cleanly

from warpd.state.store import StateStore

pytestmark = pytest.mark.destinations

EVERY_TYPE = """
CREATE TABLE every_type (
  id INT PRIMARY KEY,
  ti TINYINT, si SMALLINT, mi MEDIUMINT, bi BIGINT, ubi BIGINT UNSIGNED, flag TINYINT(1), yr YEAR,
  d DECIMAL(12,3), dz DECIMAL(30,0), f FLOAT, dbl DOUBLE,
  vc VARCHAR(50), ch CHAR(5), tx TEXT, en ENUM('a','b'), st SET('x','y'),
  vb VARBINARY(10), bl BLOB, bn BINARY(4), bt BIT(10),
  dt DATE, dtm DATETIME(6), dtm0 DATETIME, ts TIMESTAMP(3) NULL, tm TIME(2),
  js JSON, u UUID
) CHARACTER SET utf8mb4
"""
ROW_VALUES = (
    "(1, -128, -32768, -8388608, -9223372036854775808, 18446744073709551615, 1, 2024,"
    " -123456789.125, 123456789012345678901234567890, 1.5, 0.1,"
    " 'café ☃ ,:N', 'ab', 'multi\\nline\\ttab', 'a', 'x,y',"
    " 0x00ff10, 0xdeadbeef, 0x01020304, b'1010101010',"
    " '2024-02-29', '2024-02-29 23:59:59.123456', '1999-12-31 00:00:00', '2038-01-01 12:00:00.5', '-100:02:03.45',"
    " '{\"b\": 1, \"a\": [1.0]}', '0d6e5b46-2f1c-11ef-9e8a-0242ac120002'),"
    "(2, 0, 0, 0, 0, 0, 0, 1901, 0.000, 0, 0, 0, '', '', '', 'b', '', '', '', 0x00000000, b'0',"
    " '1000-01-01', '1000-01-01 00:00:00', '9999-12-31 23:59:59', '1970-01-01 00:00:01', '00:00:00', '[]',"
    " '00000000-0000-0000-0000-000000000000'),"
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
    "(4, 5, 6, 7, 8, 9, 1, 2000, 10.5, 100, -2.25, 1e300, 'N', 'N', 'null', NULL, 'y', 'N', 0x4e, 'abcd',"
    " b'1111111111', '2000-01-01', '2000-01-01 00:00:00.000001', '2000-01-01 00:00:00', NULL, '838:59:59',"
    " 'null', NULL)"
)


def verify(dbs: Databases, config: str, target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``cartridge-warp verify`` as a user runs it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "warpd",
            "verify",
            "--config",
            config,
            "--source",
            dbs.source_uri,
            "--destination",
            dbs.dest_uri,
            target,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT},
        cwd=ROOT,
    )


def verified(dbs: Databases, config: str, target: str, expect: int, *extra: str) -> dict[str, Any]:
    run = verify(dbs, config, target, "--json", *extra)
    assert run.returncode == expect, f"exit {run.returncode}\n{run.stdout}\n{run.stderr[-6000:]}"
    return dict(json.loads(run.stdout))


def differences(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = [(t["table"], k["difference"], k["key"]) for t in report["tables"] for k in t["keys"]]
    return sorted(found, key=lambda d: (d[0], d[1], sorted(d[2].items())))


def config_for(dbs: Databases, tmp_path: Any, extra: str = "") -> str:
    return write_config(
        tmp_path, f"schemas:\n  - name: {dbs.name}\n    destination_schema: {dbs.dest_schema}\n{extra}"
    )


def replicate(dbs: Databases, warp: Callable[..., Warp], config: str) -> None:
    w = start_streaming(warp, config)
    assert_converged(dbs, w)
    stop_cleanly(w)


def daemon_config(dbs: Databases, tmp_path: Any, extra: str = "") -> str:
    """A configuration file as warpd reads it: endpoints in the file."""
    return write_config(
        tmp_path,
        f"source:\n  connection_string: {dbs.source_uri}\ndestination:\n  connection_string: {dbs.dest_uri}\n"
        f"{extra}schemas:\n  - name: {dbs.name}\n    destination_schema: {dbs.dest_schema}\n",
    )


def warpctl_verify(config: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-m", "warpd.supervisor.warpctl", "--config", config, "verify", *args],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT, check=False,
    )  # fmt: skip


def test_every_type_verifies_equal_and_each_destination_edit_is_reported(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql(EVERY_TYPE)
    dbs.sql("INSERT INTO every_type VALUES " + ROW_VALUES)
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)

    report = verified(dbs, config, f"{dbs.name}.every_type", 0)
    (table,) = report["tables"]
    assert report["equal"] and table["equal"]
    assert (table["source_rows"], table["destination_rows"], table["differing_keys"]) == (4, 4, 0)
    # floats, JSON and SET have no SQL rendering both databases share: compared in Python
    assert table["not_compared"] == {}
    assert {"vc", "tm", "f", "dbl", "js", "st"} <= set(table["compared_columns"])

    every = dbs.dest.ident("every_type")
    dbs.dest.query(f"UPDATE {every} SET vc = 'changed' WHERE id = 1")  # noqa: S608 - test SQL
    dbs.dest.query(f"UPDATE {every} SET tx = NULL WHERE id = 2")  # noqa: S608 - '' vs NULL
    dbs.dest.query(f"DELETE FROM {every} WHERE id = 3")  # noqa: S608
    dbs.dest.query(f"INSERT INTO {every} (id) VALUES (99)")  # noqa: S608
    report = verified(dbs, config, f"{dbs.name}.every_type", 1)
    (table,) = report["tables"]
    assert not report["equal"]
    assert (table["missing_keys"], table["extra_keys"], table["different_keys"]) == (1, 1, 2)
    assert differences(report) == [
        ("every_type", "different", {"id": "1"}),
        ("every_type", "different", {"id": "2"}),
        ("every_type", "extra", {"id": "99"}),
        ("every_type", "missing", {"id": "3"}),
    ]
    text = verify(dbs, config, dbs.name)
    assert text.returncode == 1, text.stdout + text.stderr
    assert "DIFFERENT: 4 key(s)" in text.stdout and "id=3: missing at the destination" in text.stdout
    assert "id=99: extra at the destination" in text.stdout


def test_many_rows_and_a_composite_text_key_narrow_down_to_the_differing_keys(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    # collation order (case-insensitive at MariaDB) differs from PostgreSQL's: ranges use UTF-8 bytes
    dbs.sql("CREATE TABLE pairs (region VARCHAR(20), n INT, v VARCHAR(20), PRIMARY KEY (region, n))")
    regions = ["a", "B", "c", "é", "Z", "zz", " lead", "tail "]
    dbs.many(
        "INSERT INTO pairs VALUES (%s, %s, %s)",
        [(r, n, f"v{n}") for r in regions for n in range(1500)],
    )
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)
    assert verified(dbs, config, dbs.name, 0)["tables"][0]["source_rows"] == 12_000

    pairs = dbs.dest.ident("pairs")
    dbs.dest.query(f"UPDATE {pairs} SET v = 'x' WHERE region = 'é' AND n = 777")  # noqa: S608
    dbs.dest.query(f"DELETE FROM {pairs} WHERE region = 'B' AND n = 1499")  # noqa: S608
    dbs.dest.query(f"INSERT INTO {pairs} VALUES ('b', 5, 'v5')")  # noqa: S608 - 'b' only differs in case
    report = verified(dbs, config, f"{dbs.name}.pairs", 1)
    assert differences(report) == [
        ("pairs", "different", {"region": "é", "n": "777"}),
        ("pairs", "extra", {"region": "b", "n": "5"}),
        ("pairs", "missing", {"region": "B", "n": "1499"}),
    ]
    assert report["tables"][0]["ranges"] > 3  # narrowed, not listed whole

    run = verify(dbs, config, f"{dbs.name}.pairs", "--json", "--max-keys", "1")
    assert run.returncode == 1
    (table,) = json.loads(run.stdout)["tables"]
    assert len(table["keys"]) == 1 and table["differing_keys"] == 3


def test_soft_deleted_rows_count_as_absent(dbs: Databases, warp: Callable[..., Warp], tmp_path: Any) -> None:
    dbs.sql("CREATE TABLE soft (id INT PRIMARY KEY, v VARCHAR(10))")
    dbs.sql("INSERT INTO soft VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    config = config_for(dbs, tmp_path, "    deletes: soft\n    metadata_columns: true\n")
    w = start_streaming(warp, config)
    dbs.sql("DELETE FROM soft WHERE id = 2")
    assert_converged(dbs, w, soft_delete=True)
    stop_cleanly(w)
    assert dbs.dest.count("soft") == 3  # the deleted row is kept, marked
    report = verified(dbs, config, f"{dbs.name}.soft", 0)
    assert report["tables"][0]["destination_rows"] == 2


def test_keyless_table_and_unknown_table_are_refused_as_bad_usage(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE loose (a INT, b VARCHAR(10))")
    dbs.sql("INSERT INTO loose VALUES (1, 'x'), (1, 'x')")
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)
    run = verify(dbs, config, f"{dbs.name}.loose")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "has no primary key" in run.stderr and "key_columns" in run.stderr
    run = verify(dbs, config, f"{dbs.name}.nowhere")
    assert run.returncode == 2 and "does not exist at the source" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_table_still_being_copied_is_refused_with_its_progress(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """A table whose copy the state file says is under way (a snapshot or resync not done) would show
    every row not copied yet as missing: verify refuses it, says how far the copy is and what to do,
    and still compares the schema's other tables when they are named."""
    dbs.sql("CREATE TABLE done_t (id INT PRIMARY KEY)")
    dbs.sql("CREATE TABLE copying_t (id INT PRIMARY KEY)")
    dbs.sql("INSERT INTO done_t VALUES (1)")
    dbs.sql("INSERT INTO copying_t VALUES (1), (2), (3)")
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)
    state_dir = str(tmp_path / "state")
    store = StateStore(state_dir)
    try:  # as the process records a copy under way (here after its first row)
        store.set_snapshot_progress(dbs.name, "copying_t", "running", {"id": 1}, 1, 3)
    finally:
        store.close()
    for target in (dbs.name, f"{dbs.name}.copying_t"):
        run = verify(dbs, config, target, "--state-dir", state_dir)
        assert run.returncode == 2, run.stdout + run.stderr
        assert "is still copying 'copying_t' (1 of about 3 rows copied)" in run.stderr, run.stderr
        assert "warpctl status" in run.stderr and "Traceback" not in run.stderr
    run = verify(dbs, config, dbs.name, "--state-dir", state_dir)
    assert "or name the other tables" in run.stderr
    assert verified(dbs, config, f"{dbs.name}.done_t", 0, "--state-dir", state_dir)["equal"] is True


def test_a_change_in_any_compared_column_is_found(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """Each compared column in turn takes another row's value at the destination: a rendering that
    lost information (or rendered every value alike) would let it pass."""
    dbs.sql(EVERY_TYPE)
    dbs.sql("INSERT INTO every_type VALUES " + ROW_VALUES)
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)
    compared = verified(dbs, config, dbs.name, 0)["tables"][0]["compared_columns"]
    every = dbs.dest.ident("every_type")
    missed = []
    for column in compared:
        if column == "id":
            continue
        quoted = f'"{column}"' if dbs.dest.kind == "postgresql" else f"`{column}`"
        read = f"{quoted}::text" if dbs.dest.kind == "postgresql" and column == "js" else quoted  # jsonb
        # row 1 takes row 4's value, then NULL (row 3's): both must differ from what the source holds
        for other in (4, 3):
            (value,) = dbs.dest.query(f"SELECT {read} FROM {every} WHERE id = %s", args=(other,))[0]  # noqa: S608
            (kept,) = dbs.dest.query(f"SELECT {read} FROM {every} WHERE id = 1")[0]  # noqa: S608
            dbs.dest.query(f"UPDATE {every} SET {quoted} = %s WHERE id = 1", args=(value,))  # noqa: S608
            report = verified(dbs, config, f"{dbs.name}.every_type", 1 if value != kept else 0)
            if value != kept and differences(report) != [("every_type", "different", {"id": "1"})]:
                missed.append((column, other, differences(report)))
            dbs.dest.query(f"UPDATE {every} SET {quoted} = %s WHERE id = 1", args=(kept,))  # noqa: S608
    assert not missed
    verified(dbs, config, dbs.name, 0)


def test_warpctl_verify_reads_the_daemons_configuration_and_an_unreachable_destination_exits_3(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    dbs.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    replicate(dbs, warp, config_for(dbs, tmp_path))
    dbs.dest.query(f"UPDATE {dbs.dest.ident('t')} SET v = 'z' WHERE id = 2")  # noqa: S608
    full = daemon_config(dbs, tmp_path)
    run = warpctl_verify(full, f"{dbs.name}.t", "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    assert differences(json.loads(run.stdout)) == [("t", "different", {"id": "2"})]

    closed = dbs.dest_uri.replace(":5432/", ":1/").replace(":3306/", ":1/")
    run = verify(dbs, full, dbs.name, "--destination", closed)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
