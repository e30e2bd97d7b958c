"""The lowest cursor value an incremental MongoDB batch run reads (warpd/connectors/mongodb/cursor.py
``floor``): never above the mark minus ``safety_lag``, whatever the cursor's BSON type, so a run never
reads less far back than configured (docs/batch-mode.md, "MongoDB")."""

from __future__ import annotations

import datetime as dt
import decimal
from fractions import Fraction
from typing import Any

import pytest
from bson import Decimal128, ObjectId
from bson.timestamp import Timestamp

from warpd.connectors.mongodb import cursor

FAMILY = {f.name: f for f in cursor.FAMILIES}
LAGS = [
    dt.timedelta(milliseconds=200),
    dt.timedelta(seconds=1),
    dt.timedelta(seconds=1.5),
    dt.timedelta(seconds=59, microseconds=999_999),
    dt.timedelta(hours=1),
]
MARK_SECOND = 1_767_268_800  # 2026-01-01 12:00:00 UTC


def floor(value: Any, family: str, lag: Any) -> Any:
    return cursor.floor({"column": "c", "cursor": cursor.encode(value)}, FAMILY[family], lag)


@pytest.mark.parametrize("lag", LAGS, ids=str)
def test_a_timestamp_floor_counts_back_the_lag_rounded_up_to_whole_seconds(lag: dt.timedelta) -> None:
    # a timestamp of second s was taken at a time within [s, s+1): the run reads from the first second
    # that may hold a time at or after the mark's earliest time minus the lag
    low = floor(Timestamp(MARK_SECOND, 7), "timestamp", lag)
    assert isinstance(low, Timestamp) and low.inc == 0
    assert low.time <= MARK_SECOND - lag.total_seconds() < low.time + 1


def test_a_fractional_lag_on_a_timestamp_reads_the_whole_second_it_reaches_into() -> None:
    low = floor(Timestamp(MARK_SECOND, 1), "timestamp", dt.timedelta(seconds=1.5))
    assert low == Timestamp(MARK_SECOND - 2, 0)


@pytest.mark.parametrize("lag", LAGS, ids=str)
def test_an_object_id_floor_counts_back_the_lag_rounded_up_to_whole_seconds(lag: dt.timedelta) -> None:
    mark = ObjectId(MARK_SECOND.to_bytes(4, "big") + bytes.fromhex("ffffffffffffffff"))
    low = floor(mark, "ObjectId", lag)
    second = int.from_bytes(low.binary[:4], "big")
    assert low.binary[4:] == bytes(8), "the lowest ObjectId of its second"
    assert second <= MARK_SECOND - lag.total_seconds() < second + 1


def test_second_resolution_floors_stop_at_the_epoch() -> None:
    lag = dt.timedelta(days=30)
    assert floor(Timestamp(100, 1), "timestamp", lag) == Timestamp(0, 0)
    assert floor(ObjectId(b"\x00\x00\x00\x64" + bytes(8)), "ObjectId", lag) == ObjectId(bytes(12))


def test_a_date_floor_is_the_mark_minus_the_lag() -> None:
    mark = dt.datetime(2026, 1, 1, 12, 0, 0, 123_000, tzinfo=dt.UTC)
    assert floor(mark, "date", dt.timedelta(seconds=1.5)) == mark - dt.timedelta(seconds=1.5)


@pytest.mark.parametrize(
    ("value", "lag"),
    [
        (1_000_000, 1000),
        (2**53 + 3, 0.25),  # int - float rounds the int to a double first: up here
        (1e16, 1.0),  # 1e16 - 1 is no double: the nearest one is 1e16 itself
        (0.3, 0.1),
        (0.3, decimal.Decimal("0.1")),  # a decimal lag: the double's exact value, not its shortest text
        (
            Decimal128("1234567890123456789012345678901234"),
            decimal.Decimal("0.5"),
        ),  # 35 digits: no Decimal128
        (Decimal128("1E+40"), decimal.Decimal("1")),
        (Decimal128("-7.25"), decimal.Decimal("1000")),
    ],
    ids=repr,
)
def test_a_number_floor_is_never_above_the_mark_minus_the_lag(value: Any, lag: Any) -> None:
    low = floor(value, "number", lag)
    exact = _fraction(value) - _fraction(lag)
    assert _fraction(low) <= exact
    if isinstance(value, int) and isinstance(lag, int):
        assert low == value - lag and isinstance(low, int)


def _fraction(value: Any) -> Fraction:
    if isinstance(value, Decimal128):
        return Fraction(value.to_decimal())
    return Fraction(value)
