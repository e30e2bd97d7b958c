"""BSON type order and ``$type`` for the types mongomock leaves out: timestamps, MinKey/MaxKey, JavaScript.

MongoDB compares values of different BSON types by a fixed order of types ("Comparison/Sort Order" in
the manual: MinKey < null < numbers < strings < objects < arrays < binary < ObjectId < bool < date <
timestamp < regex < JavaScript < MaxKey), and a range query only matches values of its bound's type.
mongomock orders most types but refuses timestamps, MinKey, MaxKey and code (it takes code for a
string, as bson's ``Code`` is a ``str``); its ``$type`` takes neither the type numbers nor an array of
types.  :func:`install` fills those gaps in mongomock's matcher, which the whole server shares.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from typing import Any

import mongomock
import mongomock.filtering as filtering
from bson import Code, MaxKey, MinKey, Regex
from bson.timestamp import Timestamp

# the server's canonical type numbers (bsontypes.h canonicalizeBSONType), as mongomock numbers the others
_MIN_KEY, _TIMESTAMP, _CODE, _CODE_WITH_SCOPE, _MAX_KEY = -1, 47, 60, 65, 127

_mongomock_compare_type = filtering._get_compare_type


def _is_code(value: Any) -> bool:
    return isinstance(value, Code) and value.scope is None


def _is_code_with_scope(value: Any) -> bool:
    return isinstance(value, Code) and value.scope is not None


# $type aliases and numbers ("$type" in the manual); None: the decoded value cannot tell (undefined
# decodes to None, a symbol to a str, a DBPointer to a DBRef)
_PREDICATES: dict[str, Callable[[Any], bool] | None] = {
    **filtering.TYPE_MAP,
    "string": lambda v: isinstance(v, str) and not isinstance(v, Code),
    "null": lambda v: v is None,
    "regex": lambda v: isinstance(v, (re.Pattern, Regex)),
    "javascript": _is_code,
    "javascriptWithScope": _is_code_with_scope,
    "timestamp": lambda v: isinstance(v, Timestamp),
    "minKey": lambda v: isinstance(v, MinKey),
    "maxKey": lambda v: isinstance(v, MaxKey),
}
_NUMBERS = {
    1: "double",
    2: "string",
    3: "object",
    4: "array",
    5: "binData",
    6: "undefined",
    7: "objectId",
    8: "bool",
    9: "date",
    10: "null",
    11: "regex",
    12: "dbPointer",
    13: "javascript",
    14: "symbol",
    15: "javascriptWithScope",
    16: "int",
    17: "timestamp",
    18: "long",
    19: "decimal",
    -1: "minKey",
    127: "maxKey",
}


def compare_type(value: Any) -> int:
    """The rank of ``value``'s BSON type in MongoDB's comparison order."""
    if isinstance(value, Timestamp):
        return _TIMESTAMP
    if isinstance(value, MinKey):
        return _MIN_KEY
    if isinstance(value, MaxKey):
        return _MAX_KEY
    if isinstance(value, Code):
        return _CODE_WITH_SCOPE if value.scope is not None else _CODE
    return int(_mongomock_compare_type(value))


def type_op(doc_val: Any, search_val: Any, in_array: bool = False) -> bool:
    """``{field: {$type: search_val}}``: one alias or number, or an array of them; an array field matches
    when it is asked for (``"array"``) or when one of its elements is of a type asked for."""
    wanted = search_val if isinstance(search_val, list) else [search_val]
    if not wanted:
        raise mongomock.OperationFailure("$type must match at least one type", code=2)
    predicates = [_predicate(alias) for alias in wanted]
    if any(predicate(doc_val) for predicate in predicates):
        return True
    if isinstance(doc_val, (list, tuple)) and not in_array:
        return any(type_op(item, search_val, in_array=True) for item in doc_val)
    return False


def _predicate(alias: Any) -> Callable[[Any], bool]:
    if isinstance(alias, numbers.Number) and not isinstance(alias, bool):
        number = alias
        if number != int(number) or int(number) not in _NUMBERS:  # type: ignore[call-overload]
            raise mongomock.OperationFailure(f"Invalid numerical type code: {alias}", code=2)
        alias = _NUMBERS[int(number)]  # type: ignore[call-overload]
    if not isinstance(alias, str) or alias not in _PREDICATES:
        raise mongomock.OperationFailure(f"Unknown type name alias: {alias}", code=2)
    predicate = _PREDICATES[alias]
    if predicate is None:
        raise NotImplementedError(f"$type {alias!r}: the decoded value does not tell that type")
    return predicate


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


_mongomock_in = filtering._in_op


def in_op(doc_val: Any, search_val: Any) -> bool:
    """``{field: {$in: [...]}}``, where a NaN matches a NaN as on a server (Python's NaN equals nothing)."""
    if isinstance(search_val, (list, tuple)) and any(_is_nan(v) for v in search_val):
        values = doc_val if isinstance(doc_val, (list, tuple)) else [doc_val]
        if any(_is_nan(v) for v in values):
            return True
    return bool(_mongomock_in(doc_val, search_val))


def install() -> None:
    """Make mongomock's matcher and sorts use :func:`compare_type`, :func:`type_op` and :func:`in_op`
    (idempotent)."""
    filtering._get_compare_type = compare_type
    filtering._filterer_inst._operator_map["$type"] = type_op
    filtering._filterer_inst._operator_map["$in"] = in_op
    filtering._in_op = in_op  # $nin too
