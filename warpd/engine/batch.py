"""Reducing a run of row changes to one final state per row."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from warpd.connectors.base import Op, Row, RowChange


@dataclass
class FinalState:
    """What a row must look like after the batch: ``row`` upserted, or deleted."""

    row: Row
    deleted: bool
    op: str
    source_ts: float | None
    position: Any
    order: str | None = None  # the change's Source.order_key, for destinations with ordered_writes


def compact(
    changes: Iterable[RowChange],
    key_of: Callable[[Row], Hashable],
    order_of: Callable[[RowChange], str] | None = None,
) -> dict[Hashable, FinalState]:
    """Fold changes in source order into the last state of each key (``order_of``: each state's
    :attr:`FinalState.order`, from the change it comes from).

    An update that changes the key deletes the old key and writes the new one,
    so the result never holds two states for one key and the destination can
    apply deletes and upserts as two set operations.
    """
    out: dict[Hashable, FinalState] = {}
    for ch in changes:
        order = order_of(ch) if order_of is not None else None
        if ch.op is Op.DELETE:
            assert ch.before is not None
            out[key_of(ch.before)] = FinalState(ch.before, True, "delete", ch.source_ts, ch.position, order)
            continue
        assert ch.after is not None
        new_key = key_of(ch.after)
        if ch.op is Op.UPDATE and ch.before is not None:
            old_key = key_of(ch.before)
            if old_key != new_key:
                out[old_key] = FinalState(ch.before, True, "delete", ch.source_ts, ch.position, order)
        out[new_key] = FinalState(ch.after, False, ch.op.value, ch.source_ts, ch.position, order)
    return out
