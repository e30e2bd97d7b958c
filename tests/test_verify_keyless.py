"""warpd.verify on JSON values: a keyless table holding JSON, replicated by the real
``cartridge-warp`` from MariaDB to each destination (tests/destinations.py), verifies
as equal, and a real difference in a JSON value is still reported.

The source reads JSON as its verbatim text (``1E2``, keys in any order, duplicate
keys); each destination reads it back parsed, after its own rewriting (``jsonb``
reorders keys, drops duplicate keys and stores ``1E2`` as ``100``; MariaDB keeps the
text, parsed as ``100.0``).  ``warpd.verify`` renders both sides one canonical way
(``canonical_json``), for a row's identity in a keyless table as for a column of a
keyed one.  There is no ``cartridge-warp verify`` command: ``converged()`` (the tests'
helper over ``warpd.verify.table_difference``) is what is checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from conftest import Databases, Warp, converged
from test_replication import assert_converged, start_streaming, stop_cleanly

from warpd.verify import canonical_json

# (n, JSON text as MariaDB keeps it); SQL NULL as None
DOCUMENTS = [
    (1, '{"b": 1, "a": [2.50, "x"]}'),
    (2, '{"a": 1, "a": 2, "z": {"y": null, "x": true}}'),  # a duplicate key: the last one counts
    (3, "1E2"),  # MariaDB reads back 100.0, jsonb 100
    (4, "[1.0, -0.0, 1e300, 12345678901234567890123]"),
    (5, '"1"'),
    (6, "1"),
    (7, "true"),
    (8, "null"),  # JSON null, not SQL NULL
    (9, None),
    (10, '"\\\\N"'),
    (11, '{"k": 1}'),
    (12, '{"k": "1"}'),
    (13, '{"k": true}'),
    (14, '"caf\\u00e9 \u00e9"'),
]
DUPLICATES = [1, 3, 3, 9, 11]  # the same rows again: identical source rows collapse at the destination


def values(rows: list[tuple[int, str | None]]) -> str:
    return ", ".join(f"({n}, {'NULL' if doc is None else _literal(doc)})" for n, doc in rows)


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def by_n(n: int, shift: int = 0) -> tuple[int, str | None]:
    number, doc = DOCUMENTS[n - 1]
    return number + shift, doc


def test_canonical_json_renders_one_value_one_way_and_distinct_values_apart() -> None:
    """The rendering both sides go through: spelling, key order and duplicate keys do not count,
    the kind and the value do (the shared rule of warpd/types.py: an integral double is ``2``)."""
    same = [
        ("1E2", "100"),
        ("100.0", "100"),
        ("1.00E+2", "100"),
        ("2.50", "2.5"),
        ("-0.0", "0"),
        ("1e300", "1" + "0" * 300),
        ('{"b": 1, "a": [1]}', '{"a":[1],"b":1}'),
        ('{"a": 1, "a": 2}', '{"a": 2}'),
        ('"caf\\u00e9"', '"café"'),
    ]
    for a, b in same:
        assert canonical_json(json.loads(a)) == canonical_json(json.loads(b)), (a, b)
    different = [
        ('"1"', "1"),
        ("true", "1"),
        ("false", "0"),
        ("null", '"null"'),
        ("null", "0"),
        ("[1, 2]", "[2, 1]"),
        ('{"a": 1}', '{"a": 1, "b": null}'),
        ("12345678901234567890123", "12345678901234567890124"),  # beyond 28 digits of Decimal context
        ("1" + "0" * 40 + "1", "1" + "0" * 41),
        ("0.5", "0.25"),
    ]
    for a, b in different:
        assert canonical_json(json.loads(a)) != canonical_json(json.loads(b)), (a, b)


@pytest.mark.destinations
def test_a_keyless_table_with_json_verifies_equal_and_a_changed_json_value_is_reported(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    dbs.sql("CREATE TABLE docs (n INT NOT NULL, j JSON)")
    dbs.sql(f"INSERT INTO docs VALUES {values(DOCUMENTS + [by_n(n) for n in DUPLICATES])}")
    w = start_streaming(warp)
    # streamed rows: the same documents (and duplicates) again, then updates and deletes found by
    # their whole row, JSON included
    dbs.sql(f"INSERT INTO docs VALUES {values([by_n(n, 100) for n, _ in DOCUMENTS])}")
    dbs.sql(f"INSERT INTO docs VALUES {values([by_n(n, 100) for n in DUPLICATES])}")
    dbs.sql("UPDATE docs SET n = n + 1000 WHERE n IN (2, 103, 112)")
    dbs.sql("DELETE FROM docs WHERE n IN (4, 104, 111)")
    dbs.sql("""UPDATE docs SET j = '{"k": 2, "added": [1E1]}' WHERE n = 113""")
    assert_converged(dbs, w)  # converged(): warpd.verify compares the whole table
    stop_cleanly(w)

    assert converged(dbs, ["docs"]) == []
    # the destination holds each distinct row once, its JSON rewritten by the destination
    distinct = {
        (n, None if j is None else canonical_json(json.loads(j))) for n, j in dbs.sql("SELECT n, j FROM docs")
    }
    assert dbs.dest.count("docs") == len(distinct) < dbs.source_count("docs")
    held = dict(dbs.dest.query("SELECT n, j FROM {} WHERE n IN (3, 1002)", "docs"))
    assert dbs.dest.json(held[3]) == 100 and {"a": 2, "z": {"x": True, "y": None}} == dbs.dest.json(
        held[1002]
    )

    # a real difference in one JSON value of a keyless row is reported: the source's row is missing,
    # the destination's is extra. Each change is undone before the next.
    changes = [
        (11, '{"k": 1}', '{"k": "1"}'),  # a number become a string
        (7, "true", "1"),  # a boolean become a number
        (3, "1E2", "100.5"),
        (1, '{"b": 1, "a": [2.50, "x"]}', '{"b": 1, "a": ["x", 2.50]}'),  # array order
        (8, "null", '"null"'),
        (12, '{"k": "1"}', '{"k": "1", "l": null}'),
    ]
    for n, before, after in changes:
        dbs.dest.query("UPDATE {} SET j = %s WHERE n = %s", "docs", args=(after, n))
        problems = converged(dbs, ["docs"])
        assert len(problems) == 1 and "missing at destination" in problems[0], (n, after, problems)
        assert "extra at destination" in problems[0], (n, after, problems)
        dbs.dest.query("UPDATE {} SET j = %s WHERE n = %s", "docs", args=(before, n))
        assert converged(dbs, ["docs"]) == [], (n, before)
    # a row the destination lacks, and one it has too many, are reported
    dbs.dest.query("DELETE FROM {} WHERE n = 5", "docs")
    assert "missing at destination: [(5, '\"1\"')]" in " ".join(converged(dbs, ["docs"]))


@pytest.mark.destinations
def test_a_keyed_table_with_json_tells_a_string_a_number_and_a_boolean_apart(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    """A column's JSON is compared in the same canonical rendering: equal numbers spelled apart are
    equal, ``1``, ``"1"`` and ``true`` are not (Python alone holds ``True == 1``)."""
    dbs.sql("CREATE TABLE keyed (n INT PRIMARY KEY, j JSON)")
    dbs.sql(f"INSERT INTO keyed VALUES {values(DOCUMENTS)}")
    w = start_streaming(warp)
    dbs.sql('UPDATE keyed SET j = \'{"k": 1.0E0, "k": 1}\' WHERE n = 11')
    assert_converged(dbs, w)
    stop_cleanly(w)
    for n, before, after in [
        (6, "1", "true"),
        (6, "1", '"1"'),
        (11, '{"k": 1}', '{"k": true}'),
        (8, "null", "0"),
    ]:
        dbs.dest.query("UPDATE {} SET j = %s WHERE n = %s", "keyed", args=(after, n))
        problems = converged(dbs, ["keyed"])
        assert len(problems) == 1 and f"key ({n},) column j" in problems[0], (n, after, problems)
        dbs.dest.query("UPDATE {} SET j = %s WHERE n = %s", "keyed", args=(before, n))
        assert converged(dbs, ["keyed"]) == [], (n, before)
