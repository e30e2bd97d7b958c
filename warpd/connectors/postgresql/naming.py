"""Deterministic destination names for source identifiers (PostgreSQL, and MySQL with its own limit).

PostgreSQL truncates identifiers longer than 63 bytes (NAMEDATALEN - 1), so
two long source names could silently become one.  A name that fits is kept
exactly (it is always quoted, so case, spaces, quotes and unicode survive).
A longer name keeps its first bytes (cut on a character boundary) and gains
``_`` plus the first 8 hex digits of the SHA-1 of the full source name, so
the result is stable across runs and machines.  If two source names still
end up equal (a source column named like a metadata column, or a hash
collision), the later one in source order gets ``_2``, ``_3``... before
the suffix rule is applied again.  See docs/type-mapping.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

MAX_IDENTIFIER_BYTES = 63
_HASH_LEN = 8


def _fit(name: str, limit: int = MAX_IDENTIFIER_BYTES, unit: str = "bytes") -> str:
    """``name`` if it fits ``limit`` (counted in ``unit``: "bytes" of UTF-8 or "characters"), else cut + hash."""
    raw = name.encode("utf-8")
    size = len(raw) if unit == "bytes" else len(name)
    if size <= limit:
        return name
    digest = hashlib.sha1(raw).hexdigest()[:_HASH_LEN]
    budget = limit - _HASH_LEN - 1
    if unit == "bytes":
        cut = raw[:budget].decode("utf-8", errors="ignore")  # drops a split multi-byte character
    else:
        cut = name[:budget]
    return f"{cut}_{digest}"


def fit_identifier(name: str, limit: int, unit: str) -> str:
    """``name`` under another destination's limit (``unit``: "bytes" or "characters"), by the same rule."""
    return _fit(name, limit, unit)


def pg_identifier(name: str) -> str:
    """The PostgreSQL name for one source identifier (table or schema)."""
    return _fit(name)


def map_columns(
    names: Iterable[str],
    reserved: Iterable[str] = (),
    *,
    limit: int = MAX_IDENTIFIER_BYTES,
    unit: str = "bytes",
    fold: Callable[[str], str] = str,
    clean: Callable[[str], str] = str,
) -> dict[str, str]:
    """Map source column names to distinct destination names, in source order.

    ``limit``/``unit`` are the destination's identifier limit (PostgreSQL: 63
    bytes; MySQL: 64 characters); ``fold`` says which names the destination
    takes as equal (MySQL column names ignore case: ``str.lower``); ``clean``
    turns a name the destination cannot hold into one it can, before the limit
    is applied (MySQL: :func:`warpd.connectors.mysql.destination.storable_name`).
    """
    taken = {fold(r) for r in reserved}
    result: dict[str, str] = {}
    for name in names:
        candidate = _fit(clean(name), limit, unit)
        n = 2
        while fold(candidate) in taken:
            candidate = _fit(clean(f"{name}_{n}"), limit, unit)
            n += 1
        taken.add(fold(candidate))
        result[name] = candidate
    return result
