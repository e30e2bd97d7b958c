"""JSON encoding of raw key values, for snapshot resume points and batch high-water marks.

A resume point must give back exactly the value the source compares against
(MySQL, BigQuery), so bytes, decimals and temporal values are tagged rather
than stringified; an aware datetime keeps its offset.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from typing import Any


def encode_value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray)):
        return {"$b64": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, decimal.Decimal):
        return {"$dec": str(v)}
    if isinstance(v, dt.datetime):
        return {"$dt": v.isoformat()}
    if isinstance(v, dt.date):
        return {"$d": v.isoformat()}
    if isinstance(v, dt.timedelta):
        return {"$td": [v.days, v.seconds, v.microseconds]}
    return {"$str": str(v)}


def decode_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    ((tag, payload),) = v.items()
    if tag == "$b64":
        return base64.b64decode(payload)
    if tag == "$dec":
        return decimal.Decimal(payload)
    if tag == "$dt":
        return dt.datetime.fromisoformat(payload)
    if tag == "$d":
        return dt.date.fromisoformat(payload)
    if tag == "$td":
        return dt.timedelta(days=payload[0], seconds=payload[1], microseconds=payload[2])
    return payload


def encode_key(values: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    return {"key": [encode_value(v) for v in values]}


def decode_key(stored: dict[str, Any]) -> list[Any]:
    return [decode_value(v) for v in stored["key"]]
