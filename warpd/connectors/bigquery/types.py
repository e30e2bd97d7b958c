"""BigQuery column types for the shared type set, and the text each canonical value travels as.

Every value is loaded into the staging table as a STRING field (Parquet) and
turned into its column type by the MERGE (:func:`stage_expr`): one exact,
documented rendering per kind, checked here before anything is sent, so a
value BigQuery could only round is refused (the row goes to the dead
letters), never written changed.  See docs/bigquery.md, "Type mapping".

=============  =====================  =====================================
shared kind    BigQuery type          travels as
=============  =====================  =====================================
BOOLEAN        BOOL                   ``true`` / ``false``
INT            INT64                  decimal digits
DECIMAL        NUMERIC when it fits   plain notation; NUMERIC holds 29 integer and 9 fractional
               (29.9 digits),         digits, BIGNUMERIC 38 and 38; wider declared decimals are
               BIGNUMERIC when it     STRING (the exact text); an unbounded decimal is BIGNUMERIC
               fits (38.38), else     and a value beyond it is refused
               STRING
FLOAT          FLOAT64                the shortest text that reads back as the same double;
                                      ``NaN``, ``inf``, ``-inf``
TEXT, UUID     STRING                 the text (valid UTF-8)
BITS           STRING                 the ``0``/``1`` digits
BYTES          BYTES                  base64
DATE           DATE                   ``YYYY-MM-DD`` (years 1-9999; infinity is refused)
TIME           INTERVAL               microseconds (MySQL TIME may be negative or over 24 h)
TIMESTAMP      DATETIME               ``YYYY-MM-DD HH:MM:SS.ffffff`` (wall-clock)
TIMESTAMPTZ    TIMESTAMP              ``YYYY-MM-DD HH:MM:SS.ffffff+00:00`` (UTC)
JSON           JSON                   the JSON text (``PARSE_JSON``: a number JSON cannot hold
                                      exactly as a double or a 64-bit integer is refused; one
                                      other than a 64-bit integer goes as its double's shortest text)
TEXT_ARRAY     JSON                   a JSON array of strings (BigQuery arrays cannot hold NULL)
=============  =====================  =====================================

NULL travels as the field ``\\N``; a field that starts with a backslash has
one more in front (:func:`field_text` undoes both), so no value can be taken
for NULL.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from warpd.types import ColumnType, Kind

Encoder = Callable[[Any], str]

NULL_FIELD = "\\N"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NUMERIC_DIGITS = (29, 9)  # integer digits, fractional digits
BIGNUMERIC_DIGITS = (38, 38)


def decimal_type(ct: ColumnType) -> str:
    """NUMERIC, BIGNUMERIC or STRING for a DECIMAL column (by its declared precision and scale)."""
    if ct.precision is None:
        return "BIGNUMERIC"
    scale = ct.scale or 0
    whole = ct.precision - scale
    if whole <= NUMERIC_DIGITS[0] and scale <= NUMERIC_DIGITS[1]:
        return "NUMERIC"
    if whole <= BIGNUMERIC_DIGITS[0] and scale <= BIGNUMERIC_DIGITS[1]:
        return "BIGNUMERIC"
    return "STRING"


def bq_type(ct: ColumnType) -> str:
    """The BigQuery type (DDL spelling) for a shared type."""
    kind = ct.kind
    if kind is Kind.DECIMAL:
        return decimal_type(ct)
    return {
        Kind.BOOLEAN: "BOOL",
        Kind.INT: "INT64",
        Kind.FLOAT: "FLOAT64",
        Kind.TEXT: "STRING",
        Kind.UUID: "STRING",
        Kind.BITS: "STRING",
        Kind.BYTES: "BYTES",
        Kind.DATE: "DATE",
        Kind.TIME: "INTERVAL",
        Kind.TIMESTAMP: "DATETIME",
        Kind.TIMESTAMPTZ: "TIMESTAMP",
        Kind.JSON: "JSON",
        Kind.TEXT_ARRAY: "JSON",
    }[kind]


# the API's names for the DDL types (tables.get answers INTEGER for INT64...)
API_NAMES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}


def api_type(ddl_type: str) -> str:
    return API_NAMES.get(ddl_type, ddl_type)


# BigQuery's own coercions that keep every value: what ALTER COLUMN SET DATA TYPE may do in place
IN_PLACE_WIDENINGS = {("INT64", "NUMERIC"), ("INT64", "BIGNUMERIC"), ("NUMERIC", "BIGNUMERIC")}
CLUSTERABLE = {"INT64", "STRING", "DATE", "DATETIME", "TIMESTAMP", "BOOL", "NUMERIC", "BIGNUMERIC"}


def stage_expr(ct: ColumnType, field: str) -> str:
    """SQL turning the staged STRING ``field`` (a quoted name) into the column's type."""
    target = bq_type(ct)
    if target == "STRING":
        return field
    if target == "BYTES":
        return f"FROM_BASE64({field})"
    if target == "JSON":
        return f"PARSE_JSON({field})"
    if target == "INTERVAL":
        return f"INTERVAL CAST({field} AS INT64) MICROSECOND"
    return f"CAST({field} AS {target})"


def _strip_zeros(value: Decimal) -> Decimal:
    """``value`` without the trailing fractional zeros (exactly: no context rounding, unlike normalize)."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    while exponent < 0 and len(digits) > 1 and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    if exponent < 0 and digits == (0,):
        exponent = 0
    return Decimal((sign, digits, exponent))


def _digits(value: Decimal) -> tuple[int, int]:
    """(integer digits, fractional digits) of a finite decimal as plain notation writes it."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    frac = max(0, -exponent)
    whole = max(0, len(digits) + exponent) if any(digits) else 0
    return whole, frac


def _decimal(limits: tuple[int, int] | None) -> Encoder:
    def encode(value: Any) -> str:
        number = value if isinstance(value, Decimal) else Decimal(value)
        if not number.is_finite():
            raise ValueError(f"{number} has no BigQuery NUMERIC/BIGNUMERIC value")
        if limits is not None:
            number = _strip_zeros(number)  # 1.5000...0 fits where its zeros would not
            whole, frac = _digits(number)
            if whole > limits[0] or frac > limits[1]:
                raise ValueError(
                    f"{number} has {whole} integer and {frac} fractional digits; the column holds "
                    f"{limits[0]} and {limits[1]}"
                )
        return format(number, "f")

    return encode


def _int(value: Any) -> str:
    number = int(value)
    if not INT64_MIN <= number <= INT64_MAX:
        raise OverflowError(f"{number} is out of INT64's range")
    return str(number)


def _float(value: Any) -> str:
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return repr(number)


def _text(value: Any) -> str:
    text = str(value)
    text.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)
    return text


def _bool(value: Any) -> str:
    return "true" if value else "false"


def _bytes(value: Any) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


def _date(value: Any) -> str:
    if not isinstance(value, _dt.date):
        raise ValueError(f"{value!r} is not a date BigQuery's DATE holds (years 1 to 9999)")
    return value.isoformat()


def _time(value: Any) -> str:
    if not isinstance(value, _dt.timedelta):
        raise TypeError(f"{value!r} is not a time interval")
    return str((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds)


def _timestamp(value: Any) -> str:
    if not isinstance(value, _dt.datetime):
        raise ValueError(f"{value!r} is not a timestamp BigQuery holds (years 1 to 9999)")
    if value.tzinfo is not None:
        raise ValueError(f"{value!r} has a time zone; the column holds wall-clock time")
    return value.isoformat(sep=" ", timespec="microseconds")


def _timestamptz(value: Any) -> str:
    if not isinstance(value, _dt.datetime):
        raise ValueError(f"{value!r} is not a timestamp BigQuery holds (years 1 to 9999)")
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return value.astimezone(_dt.UTC).isoformat(sep=" ", timespec="microseconds")


def _exact_float(text: str) -> float:
    number = float(text)
    # held exactly: the double reads back as the same decimal (0.1 does; 3.141592653589793238462 does not)
    if not math.isfinite(number) or Decimal(repr(number)) != Decimal(text):
        raise ValueError(
            f"the JSON number {text} cannot be held exactly by BigQuery's JSON (a 64-bit integer or a double); "
            "it would be rounded"
        )
    return number


def _is_int64(text: str) -> bool:
    """Whether a JSON integer literal is one BigQuery's JSON keeps as an integer (INT64 or UINT64)."""
    return INT64_MIN <= int(text) < 2**64


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


# a JSON string (skipped whole, so no digit inside one is taken for a number) or a JSON number
_STRING_OR_NUMBER = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')


def _shortest(token: re.Match[str]) -> str:
    text = token.group()
    if text[0] == '"' or ("." not in text and "e" not in text and "E" not in text and _is_int64(text)):
        return text
    return repr(float(text))


def _json(value: Any) -> str:
    """JSON text for ``PARSE_JSON``, checked here: BigQuery's JSON holds numbers as 64-bit integers or
    doubles, and ``PARSE_JSON`` refuses (or, elsewhere, rounds) any other; refused here, the row goes
    to the dead letters with this reason, whatever the server does.

    A number that is not a 64-bit integer travels as the shortest text of its double (Python's
    ``repr``: ``1e+300``, ``5e-324``), which the check found to have the same decimal value as the
    text it replaces: nothing is rounded.  So a double written out in plain notation (``1``
    and 300 zeros, as the shared rule and PostgreSQL's ``jsonb`` write ``1e300``) is not read as an
    integer too wide to hold: the emulator refuses such a literal outright, and BigQuery accepts it
    only after comparing it with its double digit by digit, up to 1,500 characters.
    """
    text = value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)
    text.encode("utf-8")
    doubles: list[float] = []  # the numbers BigQuery holds as doubles

    def double(number: str) -> float:
        doubles.append(_exact_float(number))
        return doubles[-1]

    def integer(number: str) -> Any:
        # beyond 64 bits a double may still hold it exactly (10**300: a MongoDB double written out)
        return int(number) if _is_int64(number) else double(number)

    json.loads(text, parse_int=integer, parse_float=double, parse_constant=_no_constant)
    return _STRING_OR_NUMBER.sub(_shortest, text) if doubles else text


def _text_array(value: Any) -> str:
    text = json.dumps(list(value), ensure_ascii=False)
    text.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)
    return text


def value_encoder(ct: ColumnType) -> Encoder:
    """How one non-NULL canonical value of ``ct`` is written (raises on what the column cannot hold)."""
    kind = ct.kind
    if kind is Kind.DECIMAL:
        target = decimal_type(ct)
        return _decimal({"NUMERIC": NUMERIC_DIGITS, "BIGNUMERIC": BIGNUMERIC_DIGITS}.get(target))
    return {
        Kind.BOOLEAN: _bool,
        Kind.INT: _int,
        Kind.FLOAT: _float,
        Kind.TEXT: _text,
        Kind.UUID: _text,
        Kind.BITS: _text,
        Kind.BYTES: _bytes,
        Kind.DATE: _date,
        Kind.TIME: _time,
        Kind.TIMESTAMP: _timestamp,
        Kind.TIMESTAMPTZ: _timestamptz,
        Kind.JSON: _json,
        Kind.TEXT_ARRAY: _text_array,
    }[kind]


def field_encoder(ct: ColumnType) -> Encoder:
    """A plan encoder: one canonical value (or None) as one staged text field."""
    encode = value_encoder(ct)

    def encode_field(value: Any) -> str:
        if value is None:
            return NULL_FIELD
        text = encode(value)
        return "\\" + text if text[:1] == "\\" else text

    return encode_field


def field_text(field: str) -> str | None:
    """The staged value of an encoded field (None for NULL)."""
    if field[:1] != "\\":
        return field
    return None if field == NULL_FIELD else field[1:]


def _interval(value: Any) -> _dt.timedelta:
    if isinstance(value, _dt.timedelta):
        return value
    # dateutil's relativedelta, as the client returns INTERVAL values
    if getattr(value, "years", 0) or getattr(value, "months", 0):
        raise ValueError(f"{value!r} holds months, which no TIME value has")
    return _dt.timedelta(
        days=value.days,
        hours=value.hours,
        minutes=value.minutes,
        seconds=value.seconds,
        microseconds=value.microseconds,
    )


def canonical(ct: ColumnType, value: Any) -> Any:
    """A value read back through the client as the canonical value of ``ct`` (verification)."""
    if value is None:
        return None
    kind = ct.kind
    if kind is Kind.DECIMAL:
        return Decimal(value) if not isinstance(value, Decimal) else value
    if kind is Kind.TIME:
        return _interval(value)
    if kind is Kind.TIMESTAMPTZ:
        return value.astimezone(_dt.UTC)
    if kind is Kind.TEXT_ARRAY:
        return list(value) if not isinstance(value, str) else json.loads(value)
    if kind is Kind.JSON:
        return value  # parsed by the client (verify compares parsed JSON)
    if kind is Kind.FLOAT:
        return float(value)
    return value
