"""Compare a source table with its destination copy without copying it: key-range checksums.

Each database computes, for a range of keys, the row count and a checksum of
its rows' hashes over one canonical rendering of the compared columns (the
connectors' ``range_checksum``; :class:`warpd.connectors.base.RangeChecksums`,
docs/verify.md).  Only the counts and checksums cross the network.  The key
space is cut into ranges of about ``range_rows`` source rows; a range whose
count or checksum differs is cut again (into eighths, by the source's keys)
until it holds at most ``leaf_rows`` rows on either side, and then the
``(key, row hash)`` pairs of both sides are listed and compared: keys missing
at the destination, extra at the destination, or holding different values.

Database-free: it talks to the connectors only through the optional members
of :mod:`warpd.connectors.base`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from warpd.connectors.base import VERIFY_KINDS, RangeBound, TablePlan
from warpd.errors import ConfigError

RANGE_ROWS = 10_000
LEAF_ROWS = 256
SPLIT = 8

MISSING, EXTRA, DIFFERENT = "missing", "extra", "different"
"""Kinds of difference: a source key absent at the destination, a destination key absent at the
source, a key present on both sides with different values."""


@dataclass
class TableReport:
    """What ``verify`` found for one table."""

    table: str
    destination: str
    compared: list[str]
    not_compared: dict[str, str]  # column -> why (its kind has no rendering both sides share)
    source_rows: int = 0
    destination_rows: int = 0
    ranges: int = 0  # ranges checksummed, the cut ones included
    counts: dict[str, int] = field(default_factory=lambda: {MISSING: 0, EXTRA: 0, DIFFERENT: 0})
    keys: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)  # first max_keys: (kind, key)
    seconds: float = 0.0
    # with ``collect``: the first ``collect`` differing keys as rendered tuples (kind, key), for a repair
    collected: list[tuple[str, tuple[str | None, ...]]] = field(default_factory=list)
    # with ``collect``: the listed ranges that held a difference, to check them again after a repair
    differing_ranges: list[tuple[RangeBound, RangeBound]] = field(default_factory=list)
    repaired: int | None = None  # keys a repair wrote (None: no repair ran)
    differing_after_repair: int = 0  # keys still differing when the repaired ranges were checked again

    @property
    def equal_now(self) -> bool:
        """Equal, or made equal by a repair."""
        return self.equal or (self.repaired is not None and self.differing_after_repair == 0)

    @property
    def differing(self) -> int:
        return sum(self.counts.values())

    @property
    def equal(self) -> bool:
        return self.differing == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "destination": self.destination,
            "equal": self.equal,
            "source_rows": self.source_rows,
            "destination_rows": self.destination_rows,
            "ranges": self.ranges,
            "differing_keys": self.differing,
            **{f"{kind}_keys": n for kind, n in self.counts.items()},
            "keys": [{"difference": kind, "key": key} for kind, key in self.keys],
            "compared_columns": self.compared,
            "not_compared": self.not_compared,
            "seconds": round(self.seconds, 3),
            **(
                {"repaired_keys": self.repaired, "differing_after_repair": self.differing_after_repair}
                if self.repaired is not None
                else {}
            ),
        }

    def describe(self) -> str:
        """Lines for a terminal."""
        verdict = "equal" if self.equal else f"DIFFERENT: {self.differing} key(s)"
        lines = [
            f"table {self.table} -> {self.destination}: {verdict} "
            f"({self.source_rows} source rows, {self.destination_rows} destination rows, "
            f"{self.ranges} ranges, {self.seconds:.2f}s)"
        ]
        if not self.equal:
            lines.append("  " + ", ".join(f"{kind}: {n}" for kind, n in self.counts.items()))
        for kind, key in self.keys:
            where = {MISSING: "missing at the destination", EXTRA: "extra at the destination"}.get(
                kind, "different values"
            )
            lines.append(f"  {', '.join(f'{k}={v}' for k, v in key.items())}: {where}")
        if len(self.keys) < self.differing:
            lines.append(f"  ... and {self.differing - len(self.keys)} more (--max-keys)")
        for column, why in self.not_compared.items():
            lines.append(f"  column {column} not compared: {why}")
        if self.repaired is not None:
            after = (
                "equal now"
                if self.differing_after_repair == 0
                else f"still DIFFERENT: {self.differing_after_repair} key(s)"
            )
            lines.append(f"  repaired {self.repaired} key(s); checked again: {after}")
        return "\n".join(lines)


def _hook(connector: Any, name: str, side: str) -> Any:
    found = getattr(connector, name, None)
    if found is None:
        raise ConfigError(
            f"verify: the {side} ({type(connector).__name__}) cannot compute key-range checksums"
        )
    return found


class TableVerifier:
    """Compares one table (``plan``) between ``source`` and ``dest``; see the module docstring."""

    def __init__(
        self,
        source: Any,
        dest: Any,
        plan: TablePlan,
        *,
        max_keys: int = 20,
        collect: int = 0,
        range_rows: int = RANGE_ROWS,
        leaf_rows: int = LEAF_ROWS,
    ):
        if plan.keyless:
            raise ConfigError(
                f"verify: table {plan.source.name!r} has no primary key (nor key_columns): key ranges "
                "need a key. Set key_columns for it (docs/configuration.md) to verify it"
            )
        self.plan = plan
        self.bounds = _hook(source, "verify_bounds", "source")
        self.source_sum = _hook(source, "range_checksum", "source")
        self.source_rows = _hook(source, "range_rows", "source")
        self.dest_sum = _hook(dest, "range_checksum", "destination")
        self.dest_rows = _hook(dest, "range_rows", "destination")
        self.max_keys = max_keys
        self.collect = collect
        self.range_rows = max(2, range_rows)
        self.leaf_rows = max(1, leaf_rows)
        cols = plan.source.columns
        self.columns = [c.name for c in cols if c.type.kind in VERIFY_KINDS]
        self.report = TableReport(
            plan.source.name,
            plan.where,
            self.columns,
            {
                c.name: f"{c.type.kind.value} values have no rendering both databases share (docs/verify.md)"
                for c in cols
                if c.type.kind not in VERIFY_KINDS
            },
        )
        self._missing: dict[tuple[str | None, ...], str] = {}
        self._extra: dict[tuple[str | None, ...], str] = {}

    def run(self, ranges: Sequence[tuple[RangeBound, RangeBound]] | None = None) -> TableReport:
        """Compare the whole table, or only ``ranges`` (a report's ``differing_ranges``: a re-check)."""
        started = time.monotonic()
        # one thread asks the destination while this one asks the source (each connector is used by
        # one thread at a time: Destination in base.py)
        with ThreadPoolExecutor(1, thread_name_prefix="verify-destination") as self._helper:
            return self._run(started, ranges)

    def _run(self, started: float, ranges: Sequence[tuple[RangeBound, RangeBound]] | None) -> TableReport:
        if ranges is None:
            cuts: Sequence[RangeBound] = self.bounds(self.plan, None, None, self.range_rows)
            edges: list[RangeBound] = [None, *cuts, None]
            ranges = list(zip(edges, edges[1:], strict=False))
        for lower, upper in ranges:
            source, dest = self._sums(lower, upper)
            self.report.source_rows += source[0]
            self.report.destination_rows += dest[0]
            if source != dest:
                self._narrow(lower, upper, source[0], dest[0])
        self._settle()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _sums(self, lower: RangeBound, upper: RangeBound) -> tuple[tuple[int, int], tuple[int, int]]:
        """Both sides' ``(rows, checksum)``, computed at once: each database works while the other does."""
        self.report.ranges += 1
        dest = self._helper.submit(self.dest_sum, self.plan, self.columns, lower, upper)
        try:
            source = self.source_sum(self.plan, self.columns, lower, upper)
        finally:
            found = dest.result()  # never leave the destination's connection busy behind an error
        return source, found

    def _narrow(self, lower: RangeBound, upper: RangeBound, source_count: int, dest_count: int) -> None:
        """Cut a range whose checksums differ until its parts are small enough to list."""
        if source_count <= self.leaf_rows and dest_count <= self.leaf_rows or source_count <= 1:
            # (a range of at most one source row holding many destination rows cannot be cut by the
            # source's keys: list it)
            self._compare_rows(lower, upper)
            return
        cuts = [c for c in self.bounds(self.plan, lower, upper, max(1, source_count // SPLIT)) if c != upper]
        edges: list[RangeBound] = [lower, *cuts, upper]
        for low, high in zip(edges, edges[1:], strict=False):
            source, dest = self._sums(low, high)
            if source != dest:
                self._narrow(low, high, source[0], dest[0])

    def _compare_rows(self, lower: RangeBound, upper: RangeBound) -> None:
        source = dict(self.source_rows(self.plan, self.columns, lower, upper))
        dest = dict(self.dest_rows(self.plan, self.columns, lower, upper))
        for key, digest in source.items():
            other = dest.get(key)
            if other is None:
                self._missing[key] = digest
            elif other != digest:
                self._note(DIFFERENT, key)
        for key, digest in dest.items():
            if key not in source:
                self._extra[key] = digest
        if source != dest and len(self.report.differing_ranges) < self.collect:
            self.report.differing_ranges.append((lower, upper))

    def _settle(self) -> None:
        """Count the keys only one side listed (a key listed by both, in two ranges, is compared)."""
        for key, digest in self._missing.items():
            other = self._extra.pop(key, None)
            if other is None:
                self._note(MISSING, key)
            elif other != digest:
                self._note(DIFFERENT, key)
        for key in self._extra:
            self._note(EXTRA, key)

    def _note(self, kind: str, key: tuple[str | None, ...]) -> None:
        self.report.counts[kind] += 1
        if len(self.report.keys) < self.max_keys:
            self.report.keys.append((kind, dict(zip(self.plan.source.key, key, strict=True))))
        if len(self.report.collected) < self.collect:
            self.report.collected.append((kind, key))
