"""Which tables of a schema are replicated: whitelists and blacklists.

Lists exist at two levels: the top-level ``global_table_whitelist`` /
``global_table_blacklist`` apply to every schema, a schema's
``table_whitelist`` / ``table_blacklist`` to that schema only.  Entries are
exact names or shell-style globs (``*``, ``?``, ``[abc]``), matched
case-sensitively: table and collection names are case-sensitive in
PostgreSQL, MongoDB and MySQL on Linux, so ``Orders`` and ``orders`` are
different tables and a filter must not conflate them.

The rules (docs/parallelism-and-filtering.md has examples):

1. A table matching any blacklist entry, global or schema, is excluded.
   A blacklist always wins over a whitelist.
2. Otherwise, if the schema has a whitelist, the table must match it; the
   schema's whitelist *replaces* the global one for that schema.
3. Otherwise, if there is a global whitelist, the table must match it.
4. Otherwise the table is included.

An empty list is the same as no list.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase


def matching_entry(table: str, patterns: tuple[str, ...]) -> str | None:
    """Return the first entry of *patterns* that *table* matches, else None."""
    for pattern in patterns:
        # Exact comparison first, so a name with glob characters ("a[1]") still matches itself.
        if table == pattern or fnmatchcase(table, pattern):
            return pattern
    return None


@dataclass(frozen=True)
class TableFilter:
    """The four lists that decide whether a table of one schema is replicated."""

    global_whitelist: tuple[str, ...] = ()
    global_blacklist: tuple[str, ...] = ()
    schema_whitelist: tuple[str, ...] = ()
    schema_blacklist: tuple[str, ...] = ()

    def includes(self, table: str) -> bool:
        """True when *table* is replicated."""
        return self.exclusion_reason(table) is None

    def exclusion_reason(self, table: str) -> str | None:
        """Why *table* is not replicated, in words for the dry-run plan; None when it is."""
        for key, patterns in (
            ("table_blacklist", self.schema_blacklist),
            ("global_table_blacklist", self.global_blacklist),
        ):
            entry = matching_entry(table, patterns)
            if entry is not None:
                return f"matches {key} entry {entry!r}"
        if self.schema_whitelist:
            key, whitelist = "table_whitelist", self.schema_whitelist
        elif self.global_whitelist:
            key, whitelist = "global_table_whitelist", self.global_whitelist
        else:
            return None
        if matching_entry(table, whitelist) is None:
            return f"matches no {key} entry"
        return None
