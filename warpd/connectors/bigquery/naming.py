"""BigQuery names for source identifiers: deterministic, documented renames (docs/bigquery.md).

Column names may hold only letters, digits and underscores, must not start
with a digit or a reserved prefix (``_TABLE_``, ``_FILE_``, ``_PARTITION``,
``_ROW_TIMESTAMP``, ``__ROOT__``, ``_COLIDENTIFIER``), are at most 300
characters and are compared without regard to case.  A source name that
breaks a rule has every other character replaced by ``_``, a leading digit or
reserved prefix gets ``c_`` in front, and it gains ``_`` plus the first 8 hex
digits of the SHA-1 of the source name.  The hash makes the rename depend on
the name alone, never on the other columns: ``a-b`` and ``a_b`` in one table
stay apart whatever their order, and dropping one, or adding a column before
it, never moves another's data to a new name.  Then the shared rule of
:func:`warpd.connectors.postgresql.naming.map_columns` applies: a name over
the limit is cut and gains the hash, and the later of two names still equal
(case ignored: ``Id`` and ``id`` from MongoDB) gains ``_2``, ``_3``...

Dataset and table names get the same rule (dataset names: letters, digits,
underscores, 1,024 characters).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from warpd.connectors.postgresql.naming import fit_identifier, map_columns

MAX_COLUMN_CHARS = 300
MAX_TABLE_CHARS = 1024
_BAD = re.compile(r"[^A-Za-z0-9_]")
_RESERVED_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colidentifier")


def clean(name: str) -> str:
    """``name`` with BigQuery's naming rules applied: unchanged when it follows them, else cleaned and
    suffixed with a hash of the source name."""
    out = _BAD.sub("_", name) or "_"
    if out[0].isdigit() or out.lower().startswith(_RESERVED_PREFIXES):
        out = "c_" + out
    if out != name:
        out = f"{out}_{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"
    return out


def column_names(names: Iterable[str], reserved: Iterable[str]) -> dict[str, str]:
    return map_columns(
        names, reserved, limit=MAX_COLUMN_CHARS, unit="characters", fold=str.lower, clean=clean
    )


def table_name(name: str) -> str:
    return fit_identifier(clean(name), MAX_TABLE_CHARS, "characters")


def dataset_name(name: str) -> str:
    return table_name(name)


def quote_ident(name: str) -> str:
    """A BigQuery identifier (or dotted ``project.dataset.table`` path) in backticks, backticks and
    backslashes escaped: the one quoting helper of the BigQuery connectors."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
