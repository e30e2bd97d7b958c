"""Re-copying the keys ``verify`` found different (``cartridge-warp verify --repair``, docs/verify.md).

Each differing key is read again at the source (the source's optional
``rows_by_key``) and written through a :class:`TableApplier` as a streamed
change would be: a key the source holds is upserted (the destination's row
overwritten with the source's), a key it does not hold is deleted (soft-
deleted under ``deletes: soft``, as the stream deletes).

Beside a running stream the read and the write of a batch of keys happen
under the table's lock (:meth:`ChildControl.lock`), which the stream holds
while it applies a batch of that table.  So while the repair reads a row, the
destination holds no change newer than the source's current state; every
change committed after the read is still ahead of the stream and will be
applied after the repair's write: a repaired row never overwrites a newer
streamed change, and the destination ends equal to the source.

Database-free: keys arrive rendered as ``verify`` renders them (docs/verify.md)
and are parsed back into canonical values here.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Hashable, Sequence
from decimal import Decimal
from typing import Any

from warpd.config.model import TableSettings
from warpd.connectors.base import Fence, TablePlan
from warpd.engine.applier import DestinationPool, TableApplier
from warpd.engine.batch import FinalState
from warpd.errors import ConfigError, FatalError
from warpd.types import Kind

RenderedKey = tuple[str | None, ...]
KEYS_PER_BATCH = 500
MAX_REPAIR_KEYS = 100_000
"""At most this many differing keys of one table are held (and repaired) per run: memory stays
bounded; a table with more differences is better copied again (``warpctl resync``)."""


def parse_key_value(kind: Kind, text: str | None) -> Any:
    """A key value back from ``verify``'s rendering (docs/verify.md, "How")."""
    if text is None:
        return None
    if kind is Kind.INT:
        return int(text)
    if kind is Kind.DECIMAL:
        return Decimal(text)
    if kind is Kind.BYTES:
        return bytes.fromhex(text)
    if kind is Kind.DATE:
        return dt.date.fromisoformat(text)
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        stamp = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f")
        return stamp.replace(tzinfo=dt.UTC) if kind is Kind.TIMESTAMPTZ else stamp
    if kind is Kind.TIME:
        return dt.timedelta(microseconds=int(text))
    return text  # TEXT, UUID


def parse_key(plan: TablePlan, key: RenderedKey) -> tuple[Any, ...]:
    kinds = {c.name: c.type.kind for c in plan.source.columns}
    return tuple(parse_key_value(kinds[name], text) for name, text in zip(plan.source.key, key, strict=True))


class _Rejected:
    """The dead-letter sink of a repair: a row the destination refuses fails the repair, loudly."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, _table: str, _op: str, _row: Any, reason: str, _pos: Any) -> None:
        self.reasons.append(reason)


def _match(
    plan: TablePlan, wanted: Sequence[tuple[Any, ...]], rows: Sequence[dict[str, Any]]
) -> dict[Hashable, dict[str, Any]]:
    """The source's rows by the wanted key they hold exactly.

    A row that holds none of them may come from a text key's collation (``'A'`` read for ``'a'``);
    for any other key it means the key was not read back as ``verify`` rendered it, and a key taken
    for absent would then be deleted although the source holds it: refuse instead.
    """
    asked = set(wanted)
    held: dict[Hashable, dict[str, Any]] = {}
    kinds = {c.name: c.type.kind for c in plan.source.columns}
    loose = any(kinds[k] is Kind.TEXT for k in plan.source.key)
    for row in rows:
        key = tuple(row.get(k) for k in plan.source.key)
        if key in asked:
            held[key] = row
        elif not loose:
            raise FatalError(
                f"verify --repair: table {plan.source.name!r}: the source returned key {key!r} for keys "
                "that verify rendered otherwise; nothing of this batch was written (please report it)"
            )
    return held


def repair_keys(
    schema_name: str,
    source: Any,
    pool: DestinationPool,
    plan: TablePlan,
    settings: TableSettings,
    keys: Sequence[RenderedKey],
    lock: threading.RLock | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    fence: Fence | None = None,
) -> int:
    """Make ``keys`` of ``plan``'s destination table equal to the source; return how many were written.

    ``lock`` is the table's lock when a stream writes the same table (see the module docstring);
    ``fence`` the running process's epoch check (``Fence.guard``): a process another one took the
    schema over from repairs nothing.
    """
    read = getattr(source, "rows_by_key", None)
    if read is None:
        raise ConfigError(f"verify --repair: the source ({type(source).__name__}) cannot read rows by key")
    rejected = _Rejected()
    applier = TableApplier(schema_name, plan, settings, pool, rejected, should_stop)
    applier.guard = fence
    written = 0
    guard = lock if lock is not None else threading.RLock()
    try:
        for start in range(0, len(keys), KEYS_PER_BATCH):
            wanted = [parse_key(plan, k) for k in keys[start : start + KEYS_PER_BATCH]]
            with guard:
                rows = read(plan.source, wanted)
                held = _match(plan, wanted, rows)
                states: dict[Hashable, FinalState] = {}
                for key in wanted:
                    row = held.get(key)
                    if row is None:  # gone at the source: delete (or soft-delete) it here
                        state = FinalState(
                            dict(zip(plan.source.key, key, strict=True)), True, "delete", None, None
                        )
                    else:
                        state = FinalState(row, False, "update", None, None)
                    states[plan.key_of(state.row)] = state
                written += applier.apply(states.values())
    finally:
        applier.close()
    if rejected.reasons:
        raise FatalError(
            f"verify --repair: the destination refused {len(rejected.reasons)} row(s) of "
            f"{plan.source.name!r}: {rejected.reasons[0]}"
        )
    return written
