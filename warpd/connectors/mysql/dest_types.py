"""MySQL/MariaDB column types for the shared type set, and ``LOAD DATA`` field encoding.

:func:`mysql_type_sql` is the DDL type of a shared :class:`~warpd.types.ColumnType`
at a MySQL/MariaDB destination; :func:`field_encoder` returns the function that
renders one canonical value as a field of ``LOAD DATA ... FIELDS TERMINATED BY
'\\t' ESCAPED BY '\\\\'`` (``\\N`` for NULL); :func:`stage_expr` is the
expression that turns such a field, read into a user variable, into the
column's value; :func:`canonical` turns a value read back into its canonical
form.  The mapping is documented in docs/type-mapping.md ("MySQL/MariaDB
destination").
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from warpd.types import ColumnType, Kind

Encoder = Callable[[Any], str]

NULL_FIELD = "\\N"
MAX_DECIMAL_PRECISION = 65
MAX_DECIMAL_SCALE = 30
MAX_BIT_LENGTH = 64
# InnoDB indexes at most 3072 bytes per key: text key columns (4 bytes per character in utf8mb4)
# share what the fixed-size key columns leave of it (768 characters, or 3072 bytes for binary ones,
# when all key columns are text).  A longer key value is refused (dead letter).
KEY_BYTES = 3072
# the comment that marks a key column holding JSON text (its type is a VARCHAR like a text key's):
# a widening from text to JSON is then visible in the catalogue, so a replay never converts twice
JSON_KEY_COMMENT = "json"
# MariaDB's TIME(6) holds ±838:59:59.999999 (MySQL 8's ends at ±838:59:59: its strict session refuses
# the fraction beyond, and the row goes to the dead letters like any value the server refuses)
MAX_TIME = _dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999)
_UTC = _dt.UTC

# LOAD DATA's escapes (ESCAPED BY '\\'): backslash first, then every byte that would end a field
# or a line, NUL, and Ctrl-Z (which the server reads as end of file on Windows).
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\\0", "\x1a": "\\Z"})
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "0": "\x00", "Z": "\x1a", "b": "\b"}


def escape(value: str) -> str:
    """``value`` as one LOAD DATA field."""
    return value.translate(_ESCAPES)


def unescape(text: str) -> str | None:
    """The value of one LOAD DATA field (None for ``\\N``), as the server reads it."""
    if text == NULL_FIELD:
        return None
    if "\\" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(_UNESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def text_decimal(ct: ColumnType) -> bool:
    """Whether a DECIMAL is held as its exact text (no precision, or wider than DECIMAL(65,30))."""
    return ct.precision is None or ct.precision > MAX_DECIMAL_PRECISION or (ct.scale or 0) > MAX_DECIMAL_SCALE


def _fraction(precision: int | None) -> int:
    return 6 if precision is None else min(max(precision, 0), 6)


def mysql_type_sql(
    ct: ColumnType, *, key_share: int = 0, key_bytes: int = KEY_BYTES, collation: str = "utf8mb4_bin"
) -> str:
    """The column type (as used in DDL) for a shared type.

    ``key_share`` > 0 says the column is one of that many variable-length key
    columns, which must be indexable: text, JSON and bytes become VARCHAR/VARBINARY
    of their share of ``key_bytes`` (what the key's fixed-size columns leave of
    InnoDB's 3072-byte key limit) instead of LONGTEXT/JSON/LONGBLOB (JSON as its
    exact text, binary NO PAD collation).
    """
    kind = ct.kind
    if kind is Kind.INT:
        return {16: "smallint", 32: "int"}.get(ct.bits or 64, "bigint")
    if kind is Kind.BOOLEAN:
        return "tinyint(1)"
    if kind is Kind.DECIMAL:
        if text_decimal(ct):
            return _text_type(None, key_share, collation, key_bytes)
        return f"decimal({ct.precision},{ct.scale or 0})"
    if kind is Kind.FLOAT:
        return "double"  # a 32-bit float is held exactly too, and reads back exactly (FLOAT prints 6 digits)
    if kind is Kind.TEXT:
        return _text_type(ct.length, key_share, collation, key_bytes)
    if kind is Kind.BYTES:
        if key_share:
            cap = key_bytes // key_share
            return f"varbinary({min(ct.length, cap) if ct.length else cap})"
        return "longblob"
    if kind is Kind.BITS:
        if ct.length and ct.length <= MAX_BIT_LENGTH:
            return f"bit({ct.length})"
        return _text_type(None, key_share, collation, key_bytes)  # '0'/'1' text: BIT holds 64 bits at most
    if kind is Kind.DATE:
        return "date"
    if kind is Kind.TIME:
        p = _fraction(ct.precision)
        return f"time({p})" if p else "time"
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        p = _fraction(ct.precision)
        return f"datetime({p})" if p else "datetime"
    if kind in (Kind.JSON, Kind.TEXT_ARRAY):
        # a key column cannot be JSON (LONGTEXT on MariaDB, unindexable on MySQL): its canonical JSON
        # text, exactly, in an indexable binary NO PAD VARCHAR; a longer value is refused, never cut
        if key_share:
            return f"{_text_type(None, key_share, collation, key_bytes)} comment '{JSON_KEY_COMMENT}'"
        return "json"
    if kind is Kind.UUID:
        return "char(36) character set ascii collate ascii_bin"
    raise ValueError(f"no MySQL type for {ct.describe()}")


def _text_type(length: int | None, key_share: int, collation: str, key_bytes: int = KEY_BYTES) -> str:
    suffix = f" character set utf8mb4 collate {collation}"
    if key_share:
        cap = key_bytes // 4 // key_share
        return f"varchar({min(length, cap) if length else cap}){suffix}"
    # Non-key text is LONGTEXT whatever its bound: VARCHARs count towards the 65,535-byte row limit
    # (4 bytes per character in utf8mb4), so a wide table of VARCHAR(n) could not be created.
    return f"longtext{suffix}"


def variable_length(ct: ColumnType) -> bool:
    """Whether a key column of this type shares InnoDB's key-length budget (text, bytes, JSON, wide decimals)."""
    if ct.kind in (Kind.TEXT, Kind.BYTES, Kind.JSON, Kind.TEXT_ARRAY):
        return True
    if ct.kind is Kind.DECIMAL:
        return text_decimal(ct)
    return ct.kind is Kind.BITS and not (ct.length and ct.length <= MAX_BIT_LENGTH)


_DECIMAL_LEFTOVER_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def fixed_key_bytes(ct: ColumnType) -> int:
    """The bytes a key column of a fixed-size type takes of InnoDB's key limit (0 for variable-length)."""
    if variable_length(ct):
        return 0
    kind = ct.kind
    if kind is Kind.INT:
        return {16: 2, 32: 4}.get(ct.bits or 64, 8)
    if kind is Kind.BOOLEAN:
        return 1
    if kind is Kind.DECIMAL:  # MySQL's packed decimal: 4 bytes per 9 digits on each side of the point
        scale = ct.scale or 0
        return sum(d // 9 * 4 + _DECIMAL_LEFTOVER_BYTES[d % 9] for d in ((ct.precision or 0) - scale, scale))
    if kind is Kind.FLOAT:
        return 8
    if kind is Kind.BITS:
        return ((ct.length or 1) + 7) // 8
    if kind is Kind.DATE:
        return 3
    if kind is Kind.TIME:
        return 3 + (_fraction(ct.precision) + 1) // 2
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return 5 + (_fraction(ct.precision) + 1) // 2
    if kind is Kind.UUID:
        return 36
    return 0


def stage_expr(ct: ColumnType, var: str) -> str:
    """The SQL expression turning the LOAD DATA field in user variable ``var`` into the column's value."""
    if ct.kind is Kind.BYTES:
        return f"UNHEX({var})"
    if ct.kind is Kind.BITS and ct.length and ct.length <= MAX_BIT_LENGTH:
        return f"CAST(CONV({var}, 2, 10) AS UNSIGNED)"
    return var


def field_sql(ct: ColumnType) -> str:
    """A placeholder for one value in a multi-row INSERT (the fallback without LOAD DATA LOCAL)."""
    return stage_expr(ct, "%s")


# -- encoders ---------------------------------------------------------------------------


def _bool(value: bool) -> str:
    return "1" if value else "0"


def _int(value: int) -> str:
    return str(int(value))


def _decimal(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"MySQL DECIMAL cannot hold {value}")
        return format(value, "f")  # never exponent form; keeps the scale
    return str(value)


def _text_decimal(value: Any) -> str:
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"cartridge-warp keeps no non-finite decimal ({value}) at a MySQL destination")
    return plain_decimal(_decimal(value))


def plain_decimal(text: str) -> str:
    """A text-held decimal without negative zero (``-0.00`` is ``0.00``), as PostgreSQL's numeric holds it."""
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def _float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"MySQL DOUBLE cannot hold {value!r} (no NaN or infinity)")
    return repr(float(value))


def _text(value: str) -> str:
    return escape(value)


def _bytes(value: bytes) -> str:
    return bytes(value).hex()


def _date(value: Any) -> str:
    if isinstance(value, str):
        raise ValueError(f"MySQL DATE cannot hold {value!r}")
    return value.isoformat()


def _time(value: _dt.timedelta) -> str:
    if abs(value) > MAX_TIME:
        raise ValueError(f"MySQL TIME holds -838:59:59.999999 to 838:59:59.999999, not {value}")
    micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    seconds, micro = divmod(abs(micros), 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"{sign}{hours}:{minute:02d}:{second:02d}.{micro:06d}"


def _timestamp(value: Any) -> str:
    if isinstance(value, str):
        raise ValueError(f"MySQL DATETIME cannot hold {value!r}")
    return value.isoformat(" ")


def _timestamptz(value: Any) -> str:
    if isinstance(value, str):
        raise ValueError(f"MySQL DATETIME cannot hold {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone(_UTC)
    return value.replace(tzinfo=None).isoformat(" ")  # held as UTC wall-clock time


def _text_array(value: list[str | None]) -> str:
    return escape(json.dumps(list(value), ensure_ascii=False))


def _bits(value: str) -> str:
    return str(value)


_ENCODERS: dict[Kind, Encoder] = {
    Kind.BOOLEAN: _bool,
    Kind.INT: _int,
    Kind.DECIMAL: _decimal,
    Kind.FLOAT: _float,
    Kind.TEXT: _text,
    Kind.BYTES: _bytes,
    Kind.BITS: _bits,
    Kind.DATE: _date,
    Kind.TIME: _time,
    Kind.TIMESTAMP: _timestamp,
    Kind.TIMESTAMPTZ: _timestamptz,
    Kind.JSON: _text,
    Kind.UUID: str,
    Kind.TEXT_ARRAY: _text_array,
}


def field_encoder(ct: ColumnType) -> Encoder:
    """The function rendering one canonical value of ``ct`` as a LOAD DATA field (``\\N`` for None).

    Raises ValueError for a value MySQL cannot hold (NaN, infinite dates, TIME beyond ±838 h).
    """
    encode = _text_decimal if ct.kind is Kind.DECIMAL and text_decimal(ct) else _ENCODERS[ct.kind]

    def encode_field(value: Any) -> str:
        return NULL_FIELD if value is None else encode(value)

    return encode_field


# -- reading back --------------------------------------------------------------------------


def canonical(ct: ColumnType, value: Any) -> Any:
    """A value read from a column of ``ct``'s MySQL type, in its canonical form (JSON parsed)."""
    if value is None:
        return None
    kind = ct.kind
    if kind is Kind.BOOLEAN:
        return bool(value)
    if kind is Kind.DECIMAL:
        return Decimal(value.decode() if isinstance(value, bytes) else value)
    if kind is Kind.FLOAT:
        return float(value)
    if kind is Kind.BYTES:
        return bytes(value)
    if kind is Kind.BITS:
        if isinstance(value, (bytes, bytearray)):
            return format(int.from_bytes(value, "big"), f"0{ct.length}b")
        return str(value)
    if kind is Kind.TIMESTAMPTZ:
        return value.replace(tzinfo=_UTC)
    if kind in (Kind.JSON, Kind.TEXT_ARRAY):
        return json.loads(value)
    if kind in (Kind.TEXT, Kind.UUID) and isinstance(value, bytes):
        return value.decode("utf-8")
    return value
