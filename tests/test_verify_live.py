"""``cartridge-warp verify``: floats, JSON and SET compared in Python; zero dates; a range holding
many more destination rows than source rows; re-checks beside a live, busy stream.

Each test replicates with the real process and runs ``cartridge-warp verify`` as a user would,
asserting its exit code and what it reports (tests/test_verify.py has the basics).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
from conftest import Databases, Warp, mysql_root
from daemon_support import Writer
from test_replication import assert_converged, start_streaming, stop_cleanly
from test_verify import config_for, differences, replicate, verified, verify

from warpd.engine import schema_lock

pytestmark = pytest.mark.destinations

# (id, FLOAT, DOUBLE, JSON, SET): floats at the edges of their precision, JSON in a spelling the
# destination will not keep (key order, spaces, 1.0, 1e2), SET members given out of order
FLOATS = """
CREATE TABLE nums (
  id INT PRIMARY KEY, f FLOAT, dbl DOUBLE, js JSON, st SET('x','y','z')
) CHARACTER SET utf8mb4
"""
FLOAT_ROWS = [
    (1, 0.1, 0.1 + 0.2, '{"b": {"y": 2, "x": [1.0, 2.50, 1e2]}, "a": "é"}', "y,x"),
    (2, 1.2345678, 1e300, '"text"', "z"),
    (3, 3.4e38, 5e-324, "12.0", ""),
    (4, -0.0, -0.0, '{"dup": 1, "dup": 2}', "x,y,z"),
    (5, 16777217.0, 1.7976931348623157e308, "[]", None),
    (6, 6.5e-30, -2.5, "null", "x"),
    (7, None, None, None, None),
]


def test_floats_json_and_sets_compare_by_value_and_any_change_is_found(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql(FLOATS)
    dbs.many("INSERT INTO nums VALUES (%s, %s, %s, %s, %s)", FLOAT_ROWS)
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)
    target = f"{dbs.name}.nums"
    (table,) = verified(dbs, config, target, 0)["tables"]
    assert table["not_compared"] == {} and {"f", "dbl", "js", "st"} <= set(table["compared_columns"])

    pg = dbs.dest.kind == "postgresql"
    nums = dbs.dest.ident("nums")

    def q(column: str) -> str:
        return f'"{column}"' if pg else f"`{column}`"

    def set_value(column: str, row: int, value: Any) -> None:
        dbs.dest.query(f"UPDATE {nums} SET {q(column)} = %s WHERE id = %s", args=(value, row))  # noqa: S608

    def value_of(column: str, row: int) -> Any:
        read = f"{q(column)}::text" if pg else q(column)
        return dbs.dest.query(f"SELECT {read} FROM {nums} WHERE id = %s", args=(row,))[0][0]  # noqa: S608

    # the same values in other spellings: equal
    same = {
        "js": (1, '{"a":"é","b":{"x":[1,2.5,100.0],"y":2}}'),
        "st": (1, ["x", "y"] if pg else '["y","x"]'),
    }
    if not pg:  # a double holding 0.1 holds the FLOAT 0.1 as the replication writes it (float32 form)
        same["f"] = (1, 0.1)
    for column, (row, value) in same.items():
        kept = value_of(column, row)
        set_value(column, row, value)
        assert verified(dbs, config, target, 0)["tables"][0]["equal"], (column, value)
        set_value(column, row, kept)

    # a change the destination's precision can hold: found
    changes = [
        ("f", 1, 0.10000001),  # the next single after 0.1
        ("f", 2, 1.2345679),
        ("dbl", 1, 0.3),  # 0.30000000000000004 at the source
        ("dbl", 3, 1e-323),
        ("js", 1, '{"a": "é", "b": {"y": 2, "x": [1, 2.5, 101]}}'),
        ("js", 2, '["text"]'),
        ("js", 6, None),  # JSON null is not SQL NULL
        ("st", 4, ["x", "y"] if pg else '["x","y"]'),
        ("st", 3, None),  # the empty set is not NULL
    ]
    if pg:  # PostgreSQL's real and double hold NaN and infinities: never equal to a MariaDB value
        changes += [("f", 3, float("inf")), ("dbl", 6, float("nan")), ("dbl", 2, float("-inf"))]
    missed = []
    for column, row, value in changes:
        kept = value_of(column, row)
        set_value(column, row, value)
        run = verify(dbs, config, target, "--json")
        found = differences(json.loads(run.stdout)) if run.stdout else run.stderr
        if run.returncode != 1 or found != [("nums", "different", {"id": str(row)})]:
            missed.append((column, row, value, run.returncode, found))
        set_value(column, row, kept)
    assert not missed
    verified(dbs, config, target, 0)


def test_zero_dates_compare_equal_to_what_the_replication_wrote(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    # a MySQL/MariaDB destination dead-letters a zero date of a NOT NULL column (docs/type-mapping.md)
    not_null = dbs.dest.kind == "postgresql"
    extra = ", dn DATE NOT NULL, dtn DATETIME NOT NULL" if not_null else ""
    dbs.sql(
        f"CREATE TABLE zd (id INT PRIMARY KEY, d DATE NULL, dt DATETIME(3) NULL, ts TIMESTAMP NULL{extra})"
    )
    dbs.sql("SET SESSION sql_mode = ''")
    try:
        more = ", '0000-00-00', '2020-00-15 10:00:00'" if not_null else ""
        dbs.sql(
            f"INSERT INTO zd VALUES (1, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00'{more})"
        )
        more = ", '2024-01-02', '2024-01-02 03:04:05'" if not_null else ""
        dbs.sql(f"INSERT INTO zd VALUES (2, '2024-01-02', '2020-01-00 10:00:00', NULL{more})")
        config = config_for(dbs, tmp_path)
        w = start_streaming(warp, config)
        more = ", '0000-00-00', '0000-00-00 00:00:00'" if not_null else ""
        dbs.sql(
            f"INSERT INTO zd VALUES (3, '0000-00-00', '2021-00-00 00:00:00', '0000-00-00 00:00:00'{more})"
        )
        assert_converged(dbs, w)
        stop_cleanly(w)
    finally:
        dbs.sql("SET SESSION sql_mode = DEFAULT")
    (table,) = verified(dbs, config, f"{dbs.name}.zd", 0)["tables"]
    assert table["source_rows"] == table["destination_rows"] == 3
    # a real date at the destination where the source holds a zero date is still a difference
    dbs.dest.query(f"UPDATE {dbs.dest.ident('zd')} SET d = '2000-01-01' WHERE id = 3")  # noqa: S608
    assert differences(verified(dbs, config, f"{dbs.name}.zd", 1)) == [("zd", "different", {"id": "3"})]


DIGITS = " UNION ALL ".join(f"SELECT {i} AS n" for i in range(10))


def test_many_extra_destination_rows_are_cut_by_the_destinations_keys(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """A range holding few source rows and 50,000 destination rows is cut by the destination's keys:
    every extra row is counted, --max-keys are listed, and no listing holds the whole block."""
    dbs.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    dbs.many("INSERT INTO t VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, 1001)])
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)
    t = dbs.dest.ident("t")
    numbers = " CROSS JOIN ".join(f"({DIGITS}) d{i}" for i in range(5))
    value = "d0.n + 10 * d1.n + 100 * d2.n + 1000 * d3.n + 10000 * d4.n"
    dbs.dest.query(
        f"INSERT INTO {t} (id, v) SELECT 1000000 + {value}, 'x' FROM {numbers} WHERE {value} < 50000"  # noqa: S608
    )
    run = verify(dbs, config, f"{dbs.name}.t", "--json", "--max-keys", "7")
    assert run.returncode == 1, run.stdout + run.stderr
    (table,) = json.loads(run.stdout)["tables"]
    assert (table["source_rows"], table["destination_rows"]) == (1000, 51000)
    assert (table["extra_keys"], table["missing_keys"], table["different_keys"]) == (50000, 0, 0)
    assert len(table["keys"]) == 7
    assert table["ranges"] > 50000 // 256  # cut down to listings of about 256 rows

    dbs.sql("DELETE FROM t")  # the source emptied (cartridge-warp is not running)
    (table,) = verified(dbs, config, f"{dbs.name}.t", 1)["tables"]
    assert (table["source_rows"], table["extra_keys"]) == (0, 51000)
    assert table["ranges"] > 51000 // 256


class Churn(Writer):
    """Inserts, updates and deletes rows of ``items`` in a thread, never touching ids below 100."""

    def _run(self) -> None:
        rnd = random.Random(7)
        next_id = self.next_id
        try:
            conn = mysql_root(self.database)
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    cur.execute(
                        "UPDATE items SET v = CONCAT(LEFT(v, 150), '+') WHERE id = %s",
                        (rnd.randint(100, 3000),),
                    )
                    cur.execute("INSERT INTO items VALUES (%s, %s)", (next_id, f"w{next_id}"))
                    if next_id % 3 == 0:
                        cur.execute("DELETE FROM items WHERE id = %s", (next_id - 5,))
                    next_id += 1
                    self.count += 1
                    self._stop.wait(0.004)
            conn.close()
        except pymysql.err.MySQLError as exc:
            self.error = exc


def test_a_busy_replica_verifies_equal_and_a_real_difference_is_still_found(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(200))")
    dbs.many("INSERT INTO items VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, 3001)])
    config = config_for(dbs, tmp_path)
    state = ["--state-dir", str(tmp_path / "state")]  # the warp fixture's
    w = start_streaming(warp, config)
    with Churn(dbs.name) as churn:
        for _ in range(3):
            report = verified(dbs, config, f"{dbs.name}.items", 0, *state)
            assert report["equal"], report
        items = dbs.dest.ident("items")
        dbs.dest.query(f"UPDATE {items} SET v = 'edited' WHERE id = 10")  # noqa: S608
        report = verified(dbs, config, f"{dbs.name}.items", 1, *state)
        (table,) = report["tables"]
        assert table["rechecked"]
        assert ("items", "different", {"id": "10"}) in differences(report)
        assert table["different_keys"] + table["missing_keys"] + table["extra_keys"] == 1, table
    assert churn.count > 100
    dbs.dest.query(f"UPDATE {items} SET v = 'v10' WHERE id = 10")  # noqa: S608 - undone
    assert_converged(dbs, w)
    stop_cleanly(w)

    # cartridge-warp stopped, a source change it will not apply until it runs again: nothing would
    # settle, so one check, said as such (and no wait for a stream that does not run)
    dbs.dest.query(f"UPDATE {items} SET v = 'edited' WHERE id = 10")  # noqa: S608
    dbs.sql("UPDATE items SET v = 'later' WHERE id = 20")
    run = verify(dbs, config, f"{dbs.name}.items", *state)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "DIFFERENT: 2 key(s)" in run.stdout and "no process is replicating this schema" in run.stdout
    # a process holds the schema (as a stuck or lagging one would) but its checkpoint does not pass
    # the position the check read: the keys stay unsettled (exit 3), with what to check
    held = schema_lock.acquire(str(tmp_path / "state"), dbs.name, wait=0)
    try:
        run = verify(dbs, config, f"{dbs.name}.items", "--settle-timeout", "1", *state)
    finally:
        held.release()
    assert run.returncode == 3, run.stdout + run.stderr
    assert "UNSETTLED: 2 key(s)" in run.stdout and "is not lagging (warpctl status)" in run.stdout
    # no state file (no daemon): a single check, as said
    run = verify(dbs, config, f"{dbs.name}.items", "--state-dir", str(tmp_path / "nowhere"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "DIFFERENT: 2 key(s)" in run.stdout and "single check" in run.stdout
