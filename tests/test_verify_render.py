"""The canonical texts verify hashes in Python (warpd/verify_ranges.py): the two JSON paths agree.

A document of integers only is parsed and dumped by msgspec's C code (or, without it, the json
module's), any other by the Decimal path; the row hashes of the two sides are only comparable if both paths give one text for
one value and different texts for different values.  Database-free: the end-to-end checks are in
tests/test_verify_values.py.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from warpd import verify_ranges
from warpd.verify_ranges import _JSON, _double_text, _float_text, _json_dump, _json_text

_INTEGRAL = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(derandomize=True, max_examples=300)
@given(_INTEGRAL, st.sampled_from([{}, {"indent": 1}, {"ensure_ascii": False}]))
@example({"k": 42, "ok": True, "tag": "t7"}, {})
@example(["\ud800", "\u2028", "é"], {"ensure_ascii": False})
def test_an_integer_document_renders_alike_in_both_paths(doc: Any, spelling: dict[str, Any]) -> None:
    text = json.dumps(doc, **spelling)
    assert _json_text(text) == _json_dump(_JSON.decode(text))  # the C path against the Decimal path


def _without_msgspec(text: str) -> str:
    """``_json_text`` as it is where msgspec is not installed (the json module's C path)."""
    saved = verify_ranges._MS_DECODE
    verify_ranges._MS_DECODE = None
    try:
        return _json_text(text)
    finally:
        verify_ranges._MS_DECODE = saved


@settings(derandomize=True, max_examples=300)
@given(_INTEGRAL, st.sampled_from([{}, {"indent": 1}, {"ensure_ascii": False}]))
@example({"é": 1, "z": 2, "a": 3, "\U0001f600": 4, "\uffff": 5, "A": 6, "": 7}, {"ensure_ascii": False})
@example("".join(map(chr, range(0x30))) + "\u2028\x7f\x80é\U0001f600", {"ensure_ascii": False})
@example({"deep": [[[[{"x": -0}]]]], "big": -(10**60)}, {})
def test_msgspec_renders_integer_documents_as_the_json_module_does(
    doc: Any, spelling: dict[str, Any]
) -> None:
    """A document with and without msgspec installed renders alike: keys in the same order, strings
    escaped alike, integers of any size alike (else two machines' verify would hash one row apart)."""
    if verify_ranges._MS_DECODE is None:
        pytest.fail("msgspec is a dependency of cartridge-warp: pip install -e . installs it")
    text = json.dumps(doc, **spelling)
    assert _json_text(text) == _without_msgspec(text)


def test_documents_msgspec_refuses_render_as_without_it() -> None:
    """Fractions, exponents, NaN, lone surrogates, spaces around it, duplicate keys: msgspec's path
    gives way to the others, which give the same text as without it."""
    for text in ['{"a": 1.5}', "[1e2]", "NaN", '["\\ud800"]', "  [1] ", '{"a": 1, "a": 2}', "-0", "1" * 4300]:
        assert _json_text(text) == _without_msgspec(text), text
    assert _json_text('{"a": 1, "a": 2}') == '{"a":2}'


def _with_fractions(value: Any) -> str:
    """``value`` as JSON, each integer written as a fraction (``42.0``) and every other integer as an
    exponent (``4.2e1``)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int):
        digits = str(abs(value))
        sign = "-" if value < 0 else ""
        return (
            f"{sign}{digits}.0" if value % 2 else f"{sign}{digits[0]}.{digits[1:] or '0'}e{len(digits) - 1}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_with_fractions(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)}: {_with_fractions(v)}" for k, v in value.items()) + "}"


@settings(derandomize=True, max_examples=300)
@given(_INTEGRAL)
@example({"n": 100, "m": [1, -20, 0]})
def test_integers_spelled_as_fractions_or_exponents_render_as_integers(doc: Any) -> None:
    """A document with its integers written ``42.0`` or ``4.2e1`` (the Decimal path) renders as the
    document with the integers (the C path)."""
    assert _json_text(_with_fractions(doc)) == _json_text(json.dumps(doc))


def test_numbers_compare_by_value_and_only_by_value() -> None:
    equal = [
        ["100", "1e2", "100.0", "1E+2", "10e1", "100.000"],
        ["0", "-0", "0.0", "-0.0", "0e5"],
        ["-12", "-12.0", "-1.2e1"],
        ["123456789012345678901234567890", "1.23456789012345678901234567890e29"],
        ["[1, 2.5]", "[1.0, 2.50]", "[1e0, 25e-1]"],
        ['{"b": 1, "a": [true, null]}', '{ "a" : [ true , null ] , "b" : 1.0 }'],
    ]
    for spellings in equal:
        assert len({_json_text(s) for s in spellings}) == 1, spellings
    different = [
        "1",
        "2",
        "-1",
        "1.5",
        "15",
        "0.15",
        "1e-5",
        "1e4300",
        "1e4301",
        "NaN",
        "Infinity",
        "-Infinity",
        '"1"',
        "true",
        "null",
        "[1, 2]",
        "[2, 1]",
        '{"a": 1}',
        '{"A": 1}',
        '{"a": "1"}',
        '{"a": 1, "b": 2}',
        "123456789012345678901234567891",
        "1" + "0" * 4299,
    ]
    assert len({_json_text(s) for s in different}) == len(different)


def test_a_double_renders_as_python_writes_it() -> None:
    for value in (0.1 + 0.2, 5e-324, -1.7976931348623157e308, 0.0, -0.0, math.nan, math.inf, -math.inf, 1.0):
        assert _double_text(value) == _float_text(value, 64) == _float_text(value, None)


def test_a_ranges_json_sum_is_the_same_for_the_same_documents_spelled_otherwise() -> None:
    """``values_total`` of one JSON column (its hot path hashes msgspec's bytes, or the Decimal path's
    text as UTF-8): equal documents spelled differently sum alike, any changed document or key does not."""
    from warpd.types import Column, ColumnType, Kind
    from warpd.verify_ranges import renderer, values_total

    render = [renderer(Column("doc", ColumnType(Kind.JSON), True, "json"))]
    mine = [
        (("1",), ('{"b": 1, "a": [true, null, "é"]}',)),
        (("2",), (None,)),
        (("3",), ('{"x": 2.50, "y": 1e2}',)),
        (("4",), ("[]",)),
    ]
    theirs = [
        (("1",), ('{"a":[true,null,"\\u00e9"],"b":1.0}',)),
        (("2",), (None,)),
        (("3",), ('{"y": 100, "x": 25e-1}',)),
        (("4",), ("[ ]",)),
    ]
    assert values_total(render, mine) == values_total(render, theirs)
    changed = [
        [(("1",), ('{"a":[true,null,"e"],"b":1}',)), *theirs[1:]],
        [theirs[0], (("2",), ("null",)), *theirs[2:]],
        [*theirs[:2], (("3",), ('{"y": 100, "x": 2.5000001}',)), theirs[3]],
        [*theirs[:3], (("5",), ("[]",))],
    ]
    for rows in changed:
        assert values_total(render, rows) != values_total(render, mine), rows


def test_a_ranges_json_sum_is_the_same_whether_its_values_came_packed_or_row_by_row() -> None:
    """A side whose packed string was cut is read row by row while the other side's comes packed
    (rowhash.unpack_values): both paths of ``values_total`` must give one range the same sum."""
    from warpd.connectors.rowhash import FIELD_END, RECORD_END, unpack_values
    from warpd.types import Column, ColumnType, Kind
    from warpd.verify_ranges import renderer, values_total

    render = [renderer(Column("doc", ColumnType(Kind.JSON), True, "json"))]
    rows = [("1", '{"b": 1, "a": [true, null, "é"]}'), ("2", None), ("3", '{"x": 2.50}'), ("40", "[]")]
    packed = "".join(f"{key}{FIELD_END}{'' if doc is None else '=' + doc}{RECORD_END}" for key, doc in rows)
    unpacked = unpack_values(packed, len(rows), 1, 1)
    assert unpacked is not None
    assert list(unpacked) == [((key,), (doc,)) for key, doc in rows]
    one_by_one = [((key,), (doc,)) for key, doc in rows]
    assert values_total(render, unpacked) == values_total(render, one_by_one)
    # a value moved to another key changes the sum on the packed path too
    moved = unpack_values(packed.replace("40" + FIELD_END, "4" + FIELD_END), len(rows), 1, 1)
    assert moved is not None and values_total(render, moved) != values_total(render, one_by_one)
    empty = unpack_values(None, 0, 1, 1)
    assert empty is not None and list(empty) == [] and values_total(render, empty) == 0
