"""``cartridge-warp verify`` of DOUBLE and JSON columns: exact, however they are hashed.

A DOUBLE is rendered in SQL by both databases (significand and binary exponent, computed with exact
arithmetic: warpd.connectors.base.exact_double); a JSON document in Python, by the json module's C
code when it holds only integers and by the Decimal path otherwise.  Each test replicates with the
real process, then edits the destination directly and runs ``cartridge-warp verify`` as a user
would: equal values must verify equal, and a change of one ulp or of any part of a document must be
found (tests/test_verify_live.py has the other value kinds).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Databases, Warp
from test_verify import config_for, differences, replicate, verified, verify

pytestmark = pytest.mark.destinations


def _edge_doubles() -> list[float]:
    """Zeros, the smallest subnormal, the largest double, powers of two and their neighbours at both
    ends of the range and in between, 0.1 + 0.2, and seeded random doubles of every magnitude."""
    rng = random.Random(13)
    values = [0.0, -0.0, 5e-324, -5e-324, 2.225073858507201e-308, 2.2250738585072014e-308]
    values += [1.7976931348623157e308, -1.7976931348623157e308, 0.1 + 0.2, 0.3, 1 / 3, math.pi]
    exponents = [-1074, -1073, -1050, -1023, -1022, -1021, -1, 0, 1, 52, 53, 1000, 1022, 1023]
    exponents += rng.sample(range(-1074, 1024), 40)
    for k in exponents:
        p = math.ldexp(1.0, k)
        values += [p, -p, math.nextafter(p, 0.0), math.nextafter(p, math.inf)]
    for _ in range(200):
        values.append(rng.uniform(-1.0, 1.0) * 10.0 ** rng.randint(-300, 300))
    return [v for v in values if math.isfinite(v)]


def test_doubles_compare_exactly_and_a_change_of_one_ulp_is_found(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    doubles = _edge_doubles()
    dbs.sql("CREATE TABLE dbl (id INT PRIMARY KEY, x DOUBLE)")
    dbs.many("INSERT INTO dbl VALUES (%s, %s)", [(i, v) for i, v in enumerate(doubles)] + [(-1, None)])
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)
    target = f"{dbs.name}.dbl"
    (table,) = verified(dbs, config, target, 0)["tables"]
    assert table["source_rows"] == len(doubles) + 1 and "x" in table["compared_columns"]

    pg = dbs.dest.kind == "postgresql"
    dbl = dbs.dest.ident("dbl")
    x = '"x"' if pg else "`x`"
    # one ulp up or down, at the edges of the range and in between; a NULL; PostgreSQL's NaN and
    # infinities (never a MariaDB value)
    changes = [
        (row, math.nextafter(doubles[row], direction))
        for row, direction in ((2, math.inf), (2, 0.0), (6, 0.0), (8, math.inf), (8, 0.0))
    ]
    changes += [
        (doubles.index(math.ldexp(1.0, k)), math.nextafter(math.ldexp(1.0, k), 0.0)) for k in (-1022, 53)
    ]
    changes += [(len(doubles) - 1, math.nextafter(doubles[-1], math.inf)), (0, 5e-324), (9, None)]
    if pg:
        changes += [(10, float("nan")), (11, float("inf")), (12, float("-inf"))]
    missed = []
    for row, value in changes:
        dbs.dest.query(f"UPDATE {dbl} SET {x} = %s WHERE id = %s", args=(value, row))  # noqa: S608
        run = verify(dbs, config, target, "--json")
        found = differences(json.loads(run.stdout)) if run.stdout else run.stderr
        if run.returncode != 1 or found != [("dbl", "different", {"id": str(row)})]:
            missed.append((row, doubles[row], value, run.returncode, found))
        dbs.dest.query(f"UPDATE {dbl} SET {x} = %s WHERE id = %s", args=(doubles[row], row))  # noqa: S608
    assert not missed
    # -0 is 0 (as the Python rendering of a float has it)
    dbs.dest.query(f"UPDATE {dbl} SET {x} = %s WHERE id = %s", args=(0.0, 1))  # noqa: S608
    verified(dbs, config, target, 0)


# integer-only documents take the C path, the others the Decimal path: the same value spelled
# either way must compare equal, whichever side holds which spelling
DOCS = [
    (1, '{"n": 1e2, "m": 1.0, "s": "x"}'),
    (2, '{"n": 100, "m": 1, "s": "x"}'),
    (3, '{"k": 42, "ok": true, "tag": "t7", "none": null}'),
    (4, '[1, "two", [3, {"b": 4, "a": 5}], false]'),
    (5, "123456789012345678901234567890"),
    (6, '{"é": "☃ \\u00e9\\n", "": -0}'),
    (7, '{"f": 2.50, "big": 1E+30}'),
]


def test_json_documents_compare_by_value_and_any_change_is_found(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE docs (id INT PRIMARY KEY, js JSON) CHARACTER SET utf8mb4")
    dbs.many("INSERT INTO docs VALUES (%s, %s)", DOCS)
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)
    target = f"{dbs.name}.docs"
    verified(dbs, config, target, 0)

    pg = dbs.dest.kind == "postgresql"
    docs = dbs.dest.ident("docs")
    js = '"js"' if pg else "`js`"

    def run_with(row: int, value: str) -> tuple[int, Any]:
        dbs.dest.query(f"UPDATE {docs} SET {js} = %s WHERE id = %s", args=(value, row))  # noqa: S608
        try:
            run = verify(dbs, config, target, "--json")
            return run.returncode, differences(json.loads(run.stdout)) if run.stdout else run.stderr
        finally:
            dbs.dest.query(f"UPDATE {docs} SET {js} = %s WHERE id = %s", args=(dict(DOCS)[row], row))  # noqa: S608

    # the same values, other spellings (integers vs. fractions and exponents, key order, spaces)
    same = [
        (1, '{"s":"x","m":1,"n":100}'),
        (2, '{"n": 100.0, "m": 1e0, "s": "x"}'),
        (3, '{"tag":"t7","none":null,"ok":true,"k":42}'),
        (5, "1.23456789012345678901234567890e29"),
        (7, '{"big": 1000000000000000000000000000000, "f": 2.5}'),
    ]
    wrong = [(row, value, found) for row, value in same if (found := run_with(row, value)) != (0, [])]
    assert not wrong
    changes = [
        (2, '{"n": 101, "m": 1, "s": "x"}'),  # a number
        (1, '{"n": 100, "m": 1, "s": "y"}'),  # a string, the other side's spelling being 1e2
        (3, '{"k": 42, "ok": true, "Tag": "t7", "none": null}'),  # a key
        (3, '{"k": 42, "ok": false, "tag": "t7", "none": null}'),
        (3, '{"k": 42, "ok": true, "tag": "t7"}'),  # a key less
        (4, '[1, "two", [{"b": 4, "a": 5}, 3], false]'),  # array order
        (4, '[1, "two", [3, {"b": 4, "a": 6}], false]'),
        (5, "123456789012345678901234567891"),
        (6, '{"é": "☃ é", "": 0}'),
        (6, '{"é": "☃ é\\n", "": 0.5}'),
        (7, '{"f": 2.51, "big": 1E+30}'),
        (7, '{"f": 2.5, "big": 1000000000000000000000000000001}'),
        (7, '{"f": 25, "big": 1E+30}'),
        (2, '"{\\"n\\": 100, \\"m\\": 1, \\"s\\": \\"x\\"}"'),  # the document as a JSON string
    ]
    missed = [
        (row, value, found)
        for row, value in changes
        if (found := run_with(row, value)) != (1, [("docs", "different", {"id": str(row)})])
    ]
    assert not missed
    verified(dbs, config, target, 0)


def test_json_values_of_keys_holding_the_packing_separators_are_still_compared(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """A range's keys and documents travel packed in one string, split on two control characters; a
    text key holding one of them makes the range read row by row: nothing is lost either way."""
    dbs.sql("CREATE TABLE tagged (k VARCHAR(20) PRIMARY KEY, js JSON) CHARACTER SET utf8mb4")
    rows = [("plain", '{"a": 1}'), ("rec\x1esep", '{"a": 2}'), ("unit\x1fsep", "[3]"), ("z", '"\\u001f"')]
    dbs.many("INSERT INTO tagged VALUES (%s, %s)", rows)
    config = config_for(dbs, tmp_path)
    replicate(dbs, warp, config)
    target = f"{dbs.name}.tagged"
    assert verified(dbs, config, target, 0)["tables"][0]["source_rows"] == 4
    tagged = dbs.dest.ident("tagged")
    js = '"js"' if dbs.dest.kind == "postgresql" else "`js`"
    key = '"k"' if dbs.dest.kind == "postgresql" else "`k`"
    for k, value in (("unit\x1fsep", "[4]"), ("plain", '{"a": 2}'), ("z", '"\\u001e"')):
        dbs.dest.query(f"UPDATE {tagged} SET {js} = %s WHERE {key} = %s", args=(value, k))  # noqa: S608
        assert differences(verified(dbs, config, target, 1)) == [("tagged", "different", {"k": k})]
        dbs.dest.query(f"UPDATE {tagged} SET {js} = %s WHERE {key} = %s", args=(dict(rows)[k], k))  # noqa: S608
