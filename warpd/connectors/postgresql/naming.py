"""Deterministic PostgreSQL names for source identifiers.

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
from collections.abc import Iterable

MAX_IDENTIFIER_BYTES = 63
_HASH_LEN = 8


def _fit(name: str, limit: int = MAX_IDENTIFIER_BYTES) -> str:
    raw = name.encode("utf-8")
    if len(raw) <= limit:
        return name
    digest = hashlib.sha1(raw).hexdigest()[:_HASH_LEN]
    budget = limit - _HASH_LEN - 1
    cut = raw[:budget].decode("utf-8", errors="ignore")  # drops a split multi-byte character
    return f"{cut}_{digest}"


def pg_identifier(name: str) -> str:
    """The PostgreSQL name for one source identifier (table or schema)."""
    return _fit(name)


def map_columns(names: Iterable[str], reserved: Iterable[str] = ()) -> dict[str, str]:
    """Map source column names to distinct PostgreSQL names, in source order."""
    taken = set(reserved)
    result: dict[str, str] = {}
    for name in names:
        candidate = _fit(name)
        n = 2
        while candidate in taken:
            candidate = _fit(f"{name}_{n}")
            n += 1
        taken.add(candidate)
        result[name] = candidate
    return result
