"""Server error replies and the argument checks that produce them.

Codes and names follow the server's ``error_codes.yml`` (the names pymongo shows as
``OperationFailure.details["codeName"]``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import bson
from bson.int64 import Int64

CODE_NAMES: dict[int, str] = {
    1: "InternalError",
    2: "BadValue",
    9: "FailedToParse",
    13: "Unauthorized",
    14: "TypeMismatch",
    16: "InvalidLength",
    18: "AuthenticationFailed",
    20: "IllegalOperation",
    26: "NamespaceNotFound",
    27: "IndexNotFound",
    40: "ConflictingUpdateOperators",
    43: "CursorNotFound",
    47: "NoMatchingDocument",
    48: "NamespaceExists",
    59: "CommandNotFound",
    66: "ImmutableField",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    225: "TransactionTooOld",
    238: "NotImplemented",
    251: "NoSuchTransaction",
    260: "InvalidResumeToken",
    280: "ChangeStreamFatalError",
    286: "ChangeStreamHistoryLost",
    292: "CursorInUse",
    352: "UnsupportedOpQueryCommand",
    10107: "NotWritablePrimary",
    10334: "BSONObjectTooLarge",
    11000: "DuplicateKey",
}

# BSON type names as the server spells them in TypeMismatch messages.
_TYPE_NAMES: dict[type, str] = {
    bool: "bool",
    int: "int",
    Int64: "long",
    float: "double",
    str: "string",
    dict: "object",
    list: "array",
    bytes: "binData",
    type(None): "null",
}


class CommandError(Exception):
    """A command failure, turned into ``{ok: 0, code, codeName, errmsg}`` on the wire."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        labels: Iterable[str] = (),
        extra: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.labels = list(labels)
        self.extra = dict(extra or {})

    def to_reply(self) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "ok": 0.0,
            "errmsg": self.message,
            "code": self.code,
            "codeName": CODE_NAMES.get(self.code, f"Location{self.code}"),
        }
        reply.update(self.extra)
        if self.labels:
            reply["errorLabels"] = self.labels
        return reply


def type_name(value: Any) -> str:
    for cls in type(value).__mro__:
        if cls in _TYPE_NAMES:
            return _TYPE_NAMES[cls]
    return type(value).__name__


_MISSING = object()
_NUMBER = (int, float, Int64, bson.Decimal128)


def arg(
    cmd: Mapping[str, Any],
    name: str,
    kinds: type | tuple[type, ...],
    default: Any = _MISSING,
    *,
    command: str | None = None,
) -> Any:
    """Return ``cmd[name]`` checked against ``kinds``, or ``default`` when absent.

    The error text copies the server's IDL parser ("BSON field 'find.limit' is the wrong
    type ...") so a failing test reads the way it would against a real mongod.
    """
    command = command or next(iter(cmd))
    if name not in cmd:
        if default is _MISSING:
            raise CommandError(40414, f"BSON field '{command}.{name}' is missing but a required field")
        return default
    value = cmd[name]
    if isinstance(value, bool) and bool not in _as_tuple(kinds):
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        expected = ", ".join(sorted({_TYPE_NAMES.get(k, k.__name__) for k in _as_tuple(kinds)}))
        raise CommandError(
            14,
            f"BSON field '{command}.{name}' is the wrong type '{type_name(value)}', "
            f"expected types '[{expected}]'",
        )
    return value


def int_arg(cmd: Mapping[str, Any], name: str, default: int, *, command: str | None = None) -> int:
    """A numeric argument the server coerces to an integer (limit, skip, batchSize, ...)."""
    value = arg(cmd, name, _NUMBER, default, command=command)
    if isinstance(value, bson.Decimal128):
        value = value.to_decimal()
    return int(value)


def bool_arg(cmd: Mapping[str, Any], name: str, default: bool, *, command: str | None = None) -> bool:
    """Booleans; the server also accepts numbers here, as pymongo sometimes sends 1/0."""
    value = arg(cmd, name, (bool, *_NUMBER), default, command=command)
    return bool(value)


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)
