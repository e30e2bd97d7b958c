"""Replaying dead letters (``warpctl dlq replay``) through the normal applier path.

A dead letter keeps the row image as JSON, with the values that JSON cannot
hold as text (``str(Decimal)``, ``isoformat`` dates, ``\\x``-hex bytes; a
snapshot row holds some columns as the COPY text the source encoded).
:func:`revive` turns them back into the canonical values of the table's
current shape, then the row goes through a :class:`TableApplier` like any
streamed change: one final state, upserted or deleted by key.

A replay writes the image stored with the dead letter, so run it once the
cause is fixed (a constraint dropped, a column widened) and before the row
changes again at the source; ``warpctl resync`` is the exact alternative.
"""

from __future__ import annotations

import ast
import datetime as dt
import logging
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from warpd.connectors.registry import destination_factory
from warpd.engine.applier import DestinationPool, TableApplier
from warpd.engine.batch import FinalState
from warpd.redact import redact
from warpd.types import Kind, TableSchema

if TYPE_CHECKING:
    import threading

    from warpd.engine.runner import SchemaRunner
    from warpd.state.store import DeadLetter

log = logging.getLogger(__name__)

_INFINITE = ("infinity", "-infinity")
_TIMEDELTA = re.compile(
    r"^(?P<sign>-)?(?:(?P<days>-?\d+) days?,? ?)?(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)(?:\.(?P<f>\d{1,6}))?$"
)
_TRUE = {"t", "true", "1", "y", "yes", "on"}
_FALSE = {"f", "false", "0", "n", "no", "off"}


class _Captured:
    """The dead-letter sink while replaying: a row rejected again is reported, not re-stored."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self, _table: str, _op: str, _row: Any, reason: str, _pos: Any) -> None:
        self.reason = reason


def _timedelta(text: str) -> dt.timedelta:
    match = _TIMEDELTA.match(text.strip())
    if not match:
        raise ValueError(f"not a time: {text!r}")
    parts = match.groupdict()
    value = dt.timedelta(
        days=int(parts["days"] or 0),
        hours=int(parts["h"]),
        minutes=int(parts["m"]),
        seconds=int(parts["s"]),
        microseconds=int((parts["f"] or "0").ljust(6, "0")),
    )
    return -value if parts["sign"] else value


def _value(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind is Kind.BOOLEAN:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"not a boolean: {value!r}")
    if kind is Kind.INT:
        return int(value)
    if kind is Kind.DECIMAL:
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
    if kind is Kind.FLOAT:
        return float(value)
    if kind is Kind.BYTES:
        text = str(value).lstrip("\\")
        if not text.startswith("x"):
            raise ValueError("bytes were not stored as \\x hex")
        return bytes.fromhex(text[1:])
    if kind is Kind.DATE:
        return value if value in _INFINITE else dt.date.fromisoformat(str(value))
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        if value in _INFINITE:
            return value
        stamp = dt.datetime.fromisoformat(str(value))
        if kind is Kind.TIMESTAMPTZ:
            stamp = stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)
        return stamp
    if kind is Kind.TIME:
        return _timedelta(str(value))
    if kind is Kind.TEXT_ARRAY:
        items = value if isinstance(value, list) else ast.literal_eval(str(value))
        if not isinstance(items, list):
            raise ValueError(f"not a list: {value!r}")
        return [None if item is None else str(item) for item in items]
    return value if isinstance(value, str) else str(value)  # TEXT, JSON, UUID, BITS


def revive(table: TableSchema, row: Mapping[str, Any], pg_names: Mapping[str, str]) -> dict[str, Any]:
    """Canonical values for ``table``'s columns from a stored row (ValueError naming a bad column)."""
    out: dict[str, Any] = {}
    for column in table.columns:
        if column.name in row:
            stored = row[column.name]
        elif pg_names.get(column.name) in row:  # a snapshot row keeps COPY fields by destination name
            stored = row[pg_names[column.name]]
        else:
            continue
        try:
            out[column.name] = _value(column.type.kind, stored)
        except (ValueError, TypeError, SyntaxError, OverflowError) as exc:
            raise ValueError(f"column {column.name!r}: {exc}") from None
    return out


def replay(
    runner: SchemaRunner, letters: list[DeadLetter], lock_for: Any, should_stop: Any
) -> dict[str, list[int]]:
    """Apply each dead letter through a TableApplier; remove it when written, keep it with the new reason.

    ``lock_for(table)`` gives the table's lock, held around each write so a
    replay never interleaves with a streaming batch of the same table.
    """
    done: list[int] = []
    failed: list[int] = []
    dst = runner.config.destination
    make_dest = destination_factory(dst.type)
    pool = DestinationPool(
        lambda: make_dest(dst.connection_string, f"cartridge-warp {runner.name} replay"[:63])
    )
    appliers: dict[str, tuple[TableApplier, _Captured]] = {}
    try:
        for letter in letters:
            reason = _replay_one(runner, letter, appliers, pool, lock_for, should_stop)
            if reason is None:
                runner.store.remove_dead_letter(letter.id)
                done.append(letter.id)
                log.info("dead letter %d (%s.%s) replayed", letter.id, letter.schema, letter.table)
            else:
                runner.store.update_dead_letter(letter.id, f"replay failed: {reason}")
                failed.append(letter.id)
                log.warning("dead letter %d (%s.%s) kept: %s", letter.id, letter.schema, letter.table, reason)
    finally:
        for applier, _capture in appliers.values():
            applier.close()
        pool.close()
    return {"replayed": done, "failed": failed}


def _replay_one(
    runner: SchemaRunner,
    letter: DeadLetter,
    appliers: dict[str, tuple[TableApplier, _Captured]],
    pool: DestinationPool,
    lock_for: Any,
    should_stop: Any,
) -> str | None:
    lock: threading.RLock = lock_for(letter.table)
    with lock:
        plan = runner.plans.get(letter.table)
        if plan is None:
            return f"table {letter.table!r} is not replicated by schema {runner.name!r} any more"
        try:
            row = revive(plan.source, letter.row, plan.columns)
        except ValueError as exc:
            return f"cannot read the stored row back: {exc}"
        entry = appliers.get(letter.table)
        if entry is None or entry[0].plan is not plan:
            if entry is not None:
                entry[0].close()
            capture = _Captured()
            settings = runner.schema.table_settings(letter.table)
            applier = TableApplier(runner.name, plan, settings, pool, capture, should_stop)
            applier.guard = runner.guard  # a process another one took the schema over from writes nothing
            entry = appliers[letter.table] = (applier, capture)
        applier, capture = entry
        capture.reason = None
        state = FinalState(row, letter.operation == "delete", letter.operation, None, letter.position)
        try:
            applier.apply([state])
        except Exception as exc:  # noqa: BLE001 - kept with the reason; the stream is not affected
            return redact(str(exc).strip() or type(exc).__name__)
        return capture.reason
