"""BigQuery column types read by the BigQuery source, mapped to the shared type set (docs/bigquery.md).

Each column gets one :class:`ReadColumn`: its shared :class:`~warpd.types.Column`, the SQL that
selects it (most as they are; JSON, STRUCT, ARRAY and GEOGRAPHY rendered as text by BigQuery
itself) and the function turning what the client returns into the canonical value.

================================  ===================  =========================================
BigQuery                          shared kind          value
================================  ===================  =========================================
INT64                             INT (64 bits)        ``int``
NUMERIC(P, S)                     DECIMAL(P, S)        ``Decimal``; NUMERIC is DECIMAL(38, 9)
BIGNUMERIC(P, S)                  DECIMAL(P, S)        ``Decimal``; BIGNUMERIC is DECIMAL(77, 38):
                                                       BigQuery's "76.76 digits" reach 39 integer
                                                       digits, so 77 hold every value
FLOAT64                           FLOAT (64 bits)      ``float`` (NaN and infinities too)
BOOL                              BOOLEAN              ``bool``
STRING(L)                         TEXT (length L)      ``str``
BYTES(L)                          BYTES (length L)     ``bytes``
DATE                              DATE                 ``date``
DATETIME                          TIMESTAMP (6)        naive ``datetime`` (wall-clock)
TIMESTAMP                         TIMESTAMPTZ (6)      aware ``datetime`` in UTC
TIME                              TIME (6)             ``timedelta`` since midnight
JSON                              JSON                 the JSON text (``TO_JSON_STRING``)
STRUCT / RECORD                   JSON                 ``TO_JSON_STRING`` of the struct
ARRAY (REPEATED)                  JSON                 ``TO_JSON_STRING`` of the array
GEOGRAPHY                         TEXT                 WKT (``ST_ASTEXT``)
INTERVAL                          TEXT                 ISO 8601 duration, each part with its own
                                                       sign: ``P1Y2M3DT4H5M6.5S``, ``P-1M``, ``PT0S``,
                                                       as the client library reads it: months over
                                                       11 carried into years, hours over 23 into
                                                       days (equal intervals to BigQuery)
RANGE<T>                          JSON                 ``{"start": ..., "end": ...}``, an unbounded
                                                       end as null, dates and times in ISO 8601
================================  ===================  =========================================

Any other type stops the run with the table, the column and the type named.

Through the Storage Read API (``read_api``) the values arrive as Arrow values instead of the REST
API's JSON; :func:`storage_value` turns each into what the client library makes of the JSON (NUMERIC
without the trailing zeros of its fixed scale, INTERVAL and RANGE in the client's shapes), so that
``convert`` gives the same canonical value on both paths.  An Arrow value of another shape stops
the read, naming the column.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from warpd.errors import FatalError
from warpd.types import Column, ColumnType, Kind

NUMERIC_DEFAULT = (38, 9)
BIGNUMERIC_DEFAULT = (77, 38)
# the API's older names (tables.get answers INTEGER for INT64...) to the SQL ones
_SQL_NAMES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}
# types a cursor_column may have: ordered, and comparable with a query parameter of the type
CURSOR_TYPES = ("INT64", "NUMERIC", "BIGNUMERIC", "FLOAT64", "STRING", "DATE", "DATETIME", "TIMESTAMP")


@dataclass(frozen=True)
class ReadColumn:
    """How the source reads one column: its shared shape, its SELECT expression and value converter."""

    column: Column
    sql_type: str  # INT64, STRUCT, ... ("ARRAY" for a REPEATED field)
    select: Callable[[str], str]  # the quoted column name -> the expression selected
    convert: Callable[[Any], Any]  # the client's value (not None) -> the canonical value


def _same(value: Any) -> Any:
    return value


def _as_is(quoted: str) -> str:
    return quoted


def json_text(quoted: str) -> str:
    # SQL NULL stays NULL (TO_JSON_STRING would give the JSON text 'null'); a JSON null value is not NULL
    return f"IF({quoted} IS NULL, NULL, TO_JSON_STRING({quoted}))"


def _wkt(quoted: str) -> str:
    return f"ST_ASTEXT({quoted})"


def _time(value: Any) -> _dt.timedelta:
    if isinstance(value, _dt.timedelta):
        return value
    return _dt.timedelta(
        hours=value.hour, minutes=value.minute, seconds=value.second, microseconds=value.microsecond
    )


def time_param(value: _dt.timedelta) -> _dt.time:
    """A canonical TIME value back as the ``datetime.time`` a query parameter takes."""
    whole = int(value.total_seconds())
    return _dt.time(whole // 3600, whole // 60 % 60, whole % 60, value.microseconds)


def _seconds_text(seconds: int, micros: int) -> str:
    if not micros:
        return str(seconds)
    total = Decimal(seconds) + Decimal(micros) / Decimal(1_000_000)
    return format(total.normalize(), "f")


def interval_text(value: Any) -> str:
    """An INTERVAL (the client's ``relativedelta``) as an ISO 8601 duration, each part signed."""
    years, months, days = int(value.years), int(value.months), int(value.days)
    hours, minutes = int(value.hours), int(value.minutes)
    total = int(value.seconds) * 1_000_000 + int(value.microseconds)  # one sign for seconds and fraction
    date = "".join(f"{n}{unit}" for n, unit in ((years, "Y"), (months, "M"), (days, "D")) if n)
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    if total:
        whole, micros = divmod(abs(total), 1_000_000)
        time += f"{'-' if total < 0 else ''}{_seconds_text(whole, micros)}S"
    if not date and not time:
        return "PT0S"
    return "P" + date + (f"T{time}" if time else "")


def _range_bound(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value.astimezone(_dt.UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    return str(value)


def range_json(value: Any) -> str:
    """A RANGE (the client's ``{"start": ..., "end": ...}``) as JSON text."""
    return json.dumps(
        {"start": _range_bound(value.get("start")), "end": _range_bound(value.get("end"))},
        separators=(",", ":"),
    )


def _decimal(defaults: tuple[int, int], field: Any) -> ColumnType:
    precision = field.precision if field.precision is not None else defaults[0]
    scale = field.scale if field.scale is not None else (0 if field.precision is not None else defaults[1])
    return ColumnType(Kind.DECIMAL, precision=int(precision), scale=int(scale))


def _to_decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def read_column(table: str, field: Any) -> ReadColumn:
    """The :class:`ReadColumn` of a ``SchemaField``; FatalError naming table, column and type for a type
    with no exact mapping."""
    sql_type = _SQL_NAMES.get(field.field_type, field.field_type)
    nullable = field.mode != "REQUIRED"

    def make(
        ct: ColumnType, select: Callable[[str], str] = _as_is, convert: Callable[[Any], Any] = _same
    ) -> ReadColumn:
        col = Column(field.name, ct, nullable=nullable, source_type=spelled)
        return ReadColumn(col, sql_type, select, convert)

    spelled = _spelling(field, sql_type)
    if field.mode == "REPEATED":  # an array is never NULL (it may be empty)
        return ReadColumn(
            Column(field.name, ColumnType(Kind.JSON), False, spelled), "ARRAY", json_text, _same
        )
    length = int(field.max_length) if getattr(field, "max_length", None) else None
    if sql_type == "INT64":
        return make(ColumnType(Kind.INT, bits=64), convert=int)
    if sql_type == "NUMERIC":
        return make(_decimal(NUMERIC_DEFAULT, field), convert=_to_decimal)
    if sql_type == "BIGNUMERIC":
        return make(_decimal(BIGNUMERIC_DEFAULT, field), convert=_to_decimal)
    if sql_type == "FLOAT64":
        return make(ColumnType(Kind.FLOAT, bits=64), convert=float)
    if sql_type == "BOOL":
        return make(ColumnType(Kind.BOOLEAN), convert=bool)
    if sql_type == "STRING":
        return make(ColumnType(Kind.TEXT, length=length))
    if sql_type == "BYTES":
        return make(ColumnType(Kind.BYTES, length=length), convert=bytes)
    if sql_type == "DATE":
        return make(ColumnType(Kind.DATE))
    if sql_type == "DATETIME":
        return make(ColumnType(Kind.TIMESTAMP, precision=6))
    if sql_type == "TIMESTAMP":
        return make(ColumnType(Kind.TIMESTAMPTZ, precision=6), convert=lambda v: v.astimezone(_dt.UTC))
    if sql_type == "TIME":
        return make(ColumnType(Kind.TIME, precision=6), convert=_time)
    if sql_type in ("JSON", "STRUCT"):
        return make(ColumnType(Kind.JSON), select=json_text)
    if sql_type == "GEOGRAPHY":
        return make(ColumnType(Kind.TEXT), select=_wkt)
    if sql_type == "INTERVAL":
        return make(ColumnType(Kind.TEXT), convert=interval_text)
    if sql_type == "RANGE":
        return make(ColumnType(Kind.JSON), convert=range_json)
    raise FatalError(
        f"BigQuery source: table {table!r}, column {field.name!r} is of type {spelled}, which cartridge-warp "
        'cannot map exactly to a destination type (docs/bigquery.md, "Reading from BigQuery"); exclude the '
        "table with table_blacklist, or read it through a view that casts the column"
    )


def _spelling(field: Any, sql_type: str) -> str:
    """The column's type as BigQuery's DDL writes it, for messages and the state file."""
    text = sql_type
    if sql_type in ("NUMERIC", "BIGNUMERIC") and field.precision is not None:
        text += f"({field.precision}" + (f", {field.scale})" if field.scale is not None else ")")
    elif sql_type in ("STRING", "BYTES") and getattr(field, "max_length", None):
        text += f"({field.max_length})"
    elif sql_type == "RANGE":
        element = getattr(field, "range_element_type", None)
        inner = getattr(element, "element_type", None) if element is not None else None
        text += f"<{inner}>" if inner else ""
    if field.mode == "REPEATED":
        text = f"ARRAY<{text}>"
    return text


# BigQuery's canonical INTERVAL text, "[sign]Y-M [sign]D [sign]H:M:S[.F]", as the REST API sends it
_INTERVAL = re.compile(
    r"^(?P<cs>-?)(?P<y>\d+)-(?P<mo>\d+) (?P<d>-?\d+) (?P<ts>-?)(?P<h>\d+):(?P<mi>\d+):(?P<s>\d+)(?:\.(?P<f>\d{1,6}))?$"
)


def _interval(value: Any) -> Any:
    """An Arrow INTERVAL (month_day_nano, or the canonical text) as the client's ``relativedelta``."""
    from dateutil.relativedelta import relativedelta

    if isinstance(value, str) and (m := _INTERVAL.match(value)):
        cs, ts = (-1 if m[k] == "-" else 1 for k in ("cs", "ts"))
        return relativedelta(
            years=cs * int(m["y"]),
            months=cs * int(m["mo"]),
            days=int(m["d"]),
            hours=ts * int(m["h"]),
            minutes=ts * int(m["mi"]),
            seconds=ts * int(m["s"]),
            microseconds=ts * int((m["f"] or "").ljust(6, "0")),
        )
    months, days, nanos = (getattr(value, k, None) for k in ("months", "days", "nanoseconds"))
    if isinstance(months, int) and isinstance(days, int) and isinstance(nanos, int) and nanos % 1000 == 0:
        # relativedelta carries microseconds up to days and months over 11 into years, as for the text
        return relativedelta(months=months, days=days, microseconds=nanos // 1000)
    return None


def _range(value: Any) -> Any:
    """An Arrow RANGE (a struct of its start and end, in that order) as the client's dict."""
    if isinstance(value, dict) and len(value) == 2:
        (first, start), (second, end) = value.items()
        if first.endswith("start") and second.endswith("end"):
            return {"start": start, "end": end}
    return None


def _plain_decimal(value: Any) -> Any:
    """A Decimal of Arrow's fixed scale (``5.000000000``) as the REST API writes it (``5``)."""
    if not isinstance(value, Decimal):
        return None
    text = format(value, "f")
    return Decimal(text.rstrip("0").rstrip(".") if "." in text else text)


def _aware(value: Any) -> Any:
    return value if isinstance(value, _dt.datetime) and value.tzinfo is not None else None


def _naive(value: Any) -> Any:
    return value if isinstance(value, _dt.datetime) and value.tzinfo is None else None


def _of(*kinds: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        # bool is an int, and datetime a date: neither passes for the other
        exact = type(value) in kinds or (
            not isinstance(value, bool | _dt.datetime) and isinstance(value, kinds)
        )
        return value if exact else None

    return check


# sql_type -> the Arrow value (not None) as the client library's value of the REST JSON, or None when
# the value has a shape the source does not know; JSON, STRUCT, ARRAY and GEOGRAPHY are selected as text
_FROM_ARROW: dict[str, Callable[[Any], Any]] = {
    "INT64": _of(int),
    "NUMERIC": _plain_decimal,
    "BIGNUMERIC": _plain_decimal,
    "FLOAT64": _of(float),
    "BOOL": _of(bool),
    "STRING": _of(str),
    "BYTES": _of(bytes),
    "DATE": _of(_dt.date),
    "DATETIME": _naive,
    "TIMESTAMP": _aware,
    "TIME": _of(_dt.time),
    "JSON": _of(str),
    "STRUCT": _of(str),
    "ARRAY": _of(str),
    "GEOGRAPHY": _of(str),
    "INTERVAL": _interval,
    "RANGE": _range,
}


def storage_value(table: str, read: ReadColumn, value: Any) -> Any:
    """A Storage Read API (Arrow) value of this column, not None, as the client library gives the same
    value read through the REST API; FatalError naming the column for a value of another shape."""
    found = _FROM_ARROW[read.sql_type](value)
    if found is None:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise FatalError(
            f"BigQuery source: table {table!r}, column {read.column.name!r} ({read.column.source_type}): the "
            f"Storage Read API returned {type(value).__name__} {shown}, which cartridge-warp cannot read "
            "exactly; set read_api: rest for this source (docs/bigquery.md)"
        )
    return found


def param_value(read: ReadColumn, canonical: Any) -> Any:
    """A canonical value of this column as the query parameter value that compares with it."""
    if canonical is not None and read.sql_type == "TIME":
        return time_param(canonical)
    return canonical
