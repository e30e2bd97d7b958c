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

Columns of the kinds no SQL renders alike in both databases (FLOAT, JSON,
SET: ``VERIFY_VALUE_KINDS``; but a DOUBLE, which both sides hash in SQL when
both declare ``verify_exact_doubles``: ``base.exact_double``) are fetched
(``range_values``) with their keys and rendered here: each row's rendering, key included, is hashed (:func:`values_hash`)
and the hash is added to the range's checksum (and joined to the row hash when a
range is listed).

Beside a live stream, the keys found different are re-checked once the stream
has passed the position the check read them at (:class:`StreamWatch`).

Database-free: it talks to the connectors only through the optional members
of :mod:`warpd.connectors.base`.
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import islice
from typing import Any

import msgspec

from warpd.connectors.base import VERIFY_KINDS, VERIFY_VALUE_KINDS, RangeBound, TablePlan, exact_double
from warpd.connectors.rowhash import PackedValues
from warpd.errors import ConfigError, FatalError
from warpd.types import Column, Kind

RANGE_ROWS = 10_000
LEAF_ROWS = 256
SPLIT = 8
AHEAD = 3
"""Ranges each database reads ahead of the one being compared (verify's first pass)."""
CUT_BATCH = 8
"""Ranges a source that can (base.RangeBounds ``limit``) cuts at a time in verify's first pass."""

HELD_KEYS = 100_000
"""Keys listed at one side only are held (to match a key two ranges listed) up to this many; past
it they are counted at once, so memory stays bounded however many rows differ."""

MISSING, EXTRA, DIFFERENT, UNSETTLED = "missing", "extra", "different", "unsettled"
"""Kinds of difference: a source key absent at the destination, a destination key absent at the
source, a key present on both sides with different values; a key whose difference could not be told
from a change in flight (the stream did not pass the position it was read at, or it kept changing)."""

CONFIRM = 2
"""Re-checks in a row that must find a key different for it to be reported different."""

RECHECK_BATCH = 16
"""Listed ranges re-checked after one wait for the stream."""


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
    unsettled_after_repair: int = 0  # of those, the ones left unsettled beside the live stream

    @property
    def equal_now(self) -> bool:
        """Equal, or made equal by a repair."""
        return self.equal or (self.repaired is not None and self.differing_after_repair == 0)

    rechecked: bool = False  # the differing keys were re-checked after the stream passed them
    note: str = ""  # how the check went beside the stream, when worth saying

    @property
    def unsettled(self) -> int:
        return self.counts.get(UNSETTLED, 0)

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
            "unsettled_keys": self.unsettled,
            "rechecked": self.rechecked,
            "note": self.note,
            "seconds": round(self.seconds, 3),
            **(
                {"repaired_keys": self.repaired, "differing_after_repair": self.differing_after_repair}
                if self.repaired is not None
                else {}
            ),
        }

    def describe(self) -> str:
        """Lines for a terminal."""
        verdict = (
            "equal"
            if self.equal
            else f"DIFFERENT: {self.differing} key(s)"
            if self.differing > self.unsettled
            else f"UNSETTLED: {self.unsettled} key(s)"
        )
        lines = [
            f"table {self.table} -> {self.destination}: {verdict} "
            f"({self.source_rows} source rows, {self.destination_rows} destination rows, "
            f"{self.ranges} ranges, {self.seconds:.2f}s)"
        ]
        if not self.equal:
            lines.append("  " + ", ".join(f"{kind}: {n}" for kind, n in self.counts.items()))
        for kind, key in self.keys:
            where = {
                MISSING: "missing at the destination",
                EXTRA: "extra at the destination",
                UNSETTLED: "unsettled (changing while checked)",
            }.get(kind, "different values")
            lines.append(f"  {', '.join(f'{k}={v}' for k, v in key.items())}: {where}")
        if len(self.keys) < self.differing:
            lines.append(f"  ... and {self.differing - len(self.keys)} more (--max-keys)")
        for column, why in self.not_compared.items():
            lines.append(f"  column {column} not compared: {why}")
        if self.note:
            lines.append(f"  {self.note}")
        if self.repaired is not None:
            after = (
                "equal now"
                if self.differing_after_repair == 0
                else f"still DIFFERENT: {self.differing_after_repair} key(s)"
            )
            lines.append(f"  repaired {self.repaired} key(s); checked again: {after}")
        return "\n".join(lines)


_F32 = struct.Struct("<f")


def _float_text(value: Any, bits: int | None) -> str:
    """A float as the shortest decimal that reads back as the same value at the precision the
    destination holds (a 32-bit FLOAT as an IEEE single: MariaDB's FLOAT, PostgreSQL's real, or a
    double holding a single's value); ``NaN``, ``Infinity``, ``-Infinity``; -0 as 0."""
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    if bits == 32:
        try:
            single = _F32.unpack(_F32.pack(number))[0]
        except OverflowError:  # not a single's value: shown as it is, so it differs from any single
            return repr(number)
        for digits in range(1, 10):
            text = f"{single:.{digits}g}"
            if _F32.unpack(_F32.pack(float(text)))[0] == single:
                return text
    return repr(number)


_DOUBLE_WORDS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "0.0": "0", "-0.0": "0"}


def _double_text(value: Any) -> str:
    """:func:`_float_text` of a 64-bit float, in one ``repr`` and one look-up."""
    text = repr(float(value))
    return _DOUBLE_WORDS.get(text, text)


_JSON = json.JSONDecoder(parse_float=Decimal, parse_constant=Decimal)  # ints stay int: C speed
_JSON_STRING = json.encoder.encode_basestring  # (C) a JSON string, non-ASCII kept
_JSON_LITERALS = {True: "true", False: "false", None: "null"}
_INT_DIGITS = 4300
"""Digits of the longest integer Python parses from JSON (its default int/str conversion limit)."""


class _NotIntegral(Exception):
    """A JSON document holds a number with a fraction or exponent, or NaN/Infinity."""


def _refuse(_text: str) -> Any:
    raise _NotIntegral


# (C) a document of strings, integers, literals, arrays and objects: parsed and dumped at C speed, in
# exactly the text _json_dump gives it (keys sorted, no whitespace, integers in decimal).  The
# scanner and the encoder are called directly: JSONDecoder.decode and JSONEncoder.encode cost more
# than the work itself on a small document.
_SCAN_INTEGRAL = json.JSONDecoder(parse_float=_refuse, parse_constant=_refuse).scan_once  # type: ignore[attr-defined]
_MAKE_ENCODER = json.encoder.c_make_encoder  # type: ignore[attr-defined]
_ENCODE: Callable[[Any, int], Sequence[str]] | None = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(  # markers, default, encoder, indent, separators, sort_keys, skipkeys, allow_nan
        None, None, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )
)


# (C, msgspec) the same documents parsed and dumped in the same text as _ENCODE's, about five times
# faster: its decoder calls _refuse for every number with a fraction or exponent (NaN and Infinity
# are not JSON to it), its encoder sorts keys by code point and escapes exactly as
# encode_basestring (tests/test_verify_render.py holds it to that)
_MS_DECODE: Callable[[str], Any] | None = msgspec.json.Decoder(float_hook=_refuse).decode
_MS_ENCODE: Callable[[Any], bytes] = msgspec.json.Encoder(order="sorted").encode
_MS_FAILED = (_NotIntegral, ValueError, msgspec.MsgspecError)


def _json_number(number: int | Decimal) -> str:
    """A JSON number by value, exactly, whatever its size or spelling: an integer in decimal
    (``100``, ``1e2`` and ``100.0`` are all ``100``, as Python writes the int), any other number as
    ``<digits>e<exponent>`` with trailing zeros moved into the exponent (``2.50`` is ``25e-1``); an
    integer of more digits than Python parses as ``<digits>e<exponent>`` too (no int equals it)."""
    if isinstance(number, int):
        return str(number)
    if not number.is_finite():
        return str(number)
    shape = number.as_tuple()  # (finite: an int exponent)
    sign, digits, exponent = "-" if shape.sign else "", "".join(map(str, shape.digits)), int(shape.exponent)
    kept = digits.rstrip("0")
    if not kept:
        return "0"
    exponent += len(digits) - len(kept)
    if 0 <= exponent and len(kept) + exponent <= _INT_DIGITS:
        return f"{sign}{kept}{'0' * exponent}"
    return f"{sign}{kept}e{exponent}"


def _json_dump(doc: Any) -> str:
    """A parsed document (floats as Decimal) as text: keys sorted, no whitespace, numbers by value."""
    if isinstance(doc, str):
        return _JSON_STRING(doc)
    if isinstance(doc, dict):
        return "{" + ",".join(f"{_JSON_STRING(k)}:{_json_dump(v)}" for k, v in sorted(doc.items())) + "}"
    if isinstance(doc, list):
        return "[" + ",".join([_json_dump(v) for v in doc]) + "]"
    if isinstance(doc, bool) or doc is None:
        return _JSON_LITERALS[doc]
    return _json_number(doc)


def _json_text(value: Any) -> str:
    """A JSON document, parsed: keys sorted, no whitespace, numbers by value (``1.0`` is ``1``).

    A document holding only integers (most) is parsed and dumped by C code (msgspec's, else the json
    module's); one holding another number goes through :func:`_json_dump`, which gives the same text
    for the same values (``1.0`` and ``1`` are both ``1``)."""
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str):
        value = json.dumps(value)
    if _MS_DECODE is not None and len(value) < _INT_DIGITS:
        # (shorter than the longest integer Python writes: none of its integers is past that limit)
        try:
            return _MS_ENCODE(_MS_DECODE(value)).decode()
        except _MS_FAILED:  # (a fraction or exponent, not JSON, a lone surrogate: parsed below)
            pass
    if _ENCODE is not None:
        try:
            doc, end = _SCAN_INTEGRAL(value, 0)
            if end == len(value):  # (else: spaces around it, or not JSON: parsed below)
                return "".join(_ENCODE(doc, 0))
        except (_NotIntegral, StopIteration, ValueError):  # (StopIteration: a space at 0; ValueError:
            pass  # not JSON, or an integer too long: the full parse below says so)
    return _json_dump(_JSON.decode(value))


def _members_text(value: Any) -> str:
    """A SET (text array) as the sorted set of its members."""
    members = value.split(",") if isinstance(value, str) else list(value)
    if members == [""]:
        members = []
    return json.dumps(sorted(set(members)), ensure_ascii=False)


def renderer(column: Column) -> Callable[[Any], str]:
    """The canonical text of a value of a :data:`VERIFY_VALUE_KINDS` column (``N`` for NULL)."""
    kind, bits = column.type.kind, column.type.bits
    if kind is Kind.FLOAT and bits != 32:
        return lambda v: "N" if v is None else _double_text(v)
    if kind is Kind.FLOAT:
        return lambda v: "N" if v is None else _float_text(v, bits)
    if kind is Kind.JSON:
        return _render_json
    return lambda v: "N" if v is None else "T" + _members_text(v)  # (a float's text never starts with T)


def _render_json(value: Any) -> str:
    return "N" if value is None else "T" + _json_text(value)


def _json_bytes(value: Any) -> bytes:
    """:func:`_json_text`'s text as UTF-8: msgspec's output as it is, without decoding it (the hot
    path of a range's checksum)."""
    if isinstance(value, str) and _MS_DECODE is not None and len(value) < _INT_DIGITS:
        try:
            return _MS_ENCODE(_MS_DECODE(value))
        except _MS_FAILED:
            pass
    return _json_text(value).encode()


def values_hash(
    render: Sequence[Callable[[Any], str]], key: Sequence[str | None], values: Sequence[Any]
) -> int:
    """A 60-bit hash of a row's key and its Python-rendered values: bound to the key, so values moved
    between rows change a range's checksum.  Both sides' rows are hashed in this process, so Python's
    own (keyed SipHash) hash of the tuple serves, at a fraction of MD5's cost."""
    return hash((*key, *[r(v) for r, v in zip(render, values, strict=True)])) & _BITS60


_BITS60 = (1 << 60) - 1


def values_total(render: Sequence[Callable[[Any], str]], rows: Any) -> int:
    """The sum of :func:`values_hash` over ``range_values`` rows (one loop: the hot path of a table
    with JSON columns)."""
    if len(render) == 1:
        (one,) = render
        if one is _render_json and isinstance(rows, PackedValues) and len(rows.keys) == 1:
            # (the same hashes as below, read from the columns: no tuple a row is built to be split)
            ((keys,), (docs,)) = rows.keys, rows.values
            return sum(
                [
                    hash((key, None if doc is None else _json_bytes(doc))) & _BITS60
                    for key, doc in zip(keys, docs, strict=True)
                ]
            )
        if one is _render_json:  # (the same value hashed as values_hash does not: sums compare alike)
            return sum(
                [
                    hash((*key, None if value is None else _json_bytes(value))) & _BITS60
                    for key, (value,) in rows
                ]
            )
        return sum([hash((*key, one(value))) & _BITS60 for key, (value,) in rows])
    return sum([values_hash(render, key, row) for key, row in rows])


@dataclass
class StreamWatch:
    """How verify tells a difference in flight from a real one beside a live stream.

    ``position`` reads the source's current position; ``passed`` says whether the stream's stored
    checkpoint is at or past a position (None: no checkpoint to wait for).  Keys found different are
    read again at the source, then the position is read, then verify waits (at most ``timeout``
    seconds) for the checkpoint to pass it, reads the destination, and reads the source once more:
    a key whose source rows were the same both times and whose destination row is the same is
    equal; one whose destination row differs in :data:`CONFIRM` such re-checks in a row is really
    different; a key whose source row changed in between was in flight; those are checked again (at
    most ``rounds`` re-checks in all); what is left is *unsettled*.
    """

    position: Callable[[], Any]
    passed: Callable[[Any], bool | None]
    timeout: float = 60.0
    poll: float = 0.2
    rounds: int = 5

    def wait(self, position: Any) -> bool:
        deadline = time.monotonic() + self.timeout
        while not self.passed(position):
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll)
        return True


def _hook(connector: Any, name: str, side: str) -> Any:
    found = getattr(connector, name, None)
    if found is None:
        raise ConfigError(
            f"verify: the {side} ({type(connector).__name__}) cannot compute key-range checksums"
        )
    return found


Key = tuple[str | None, ...]


class TableVerifier:
    """Compares one table (``plan``) between ``source`` and ``dest``; see the module docstring.

    ``readers``: more connectors to the source, of its kind, among which (and the source) the first
    pass deals its ranges, each read in a thread of its own: the source database computes that many
    ranges' checksums at once (verify's command gives one; the scheduled verify, beside the stream
    in the schema's process, none)."""

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
        watch: StreamWatch | None = None,
        readers: Sequence[Any] = (),
    ):
        if plan.keyless:
            raise ConfigError(
                f"verify: table {plan.source.name!r} has no primary key (nor key_columns): key ranges "
                "need a key. Set key_columns for it (docs/configuration.md) to verify it"
            )
        self.plan = plan
        self.bounds = _hook(source, "verify_bounds", "source")
        self.dest_bounds = getattr(dest, "verify_bounds", None)
        self.source_sum = _hook(source, "range_checksum", "source")
        self.source_rows = _hook(source, "range_rows", "source")
        self.dest_sum = _hook(dest, "range_checksum", "destination")
        self.dest_rows = _hook(dest, "range_rows", "destination")
        source_values = getattr(source, "range_values", None)
        dest_values = getattr(dest, "range_values", None)
        # both in one scan, where a side can (base.RangeChecksums.range_checksum_values)
        self.source_both = getattr(source, "range_checksum_values", None)
        self.dest_both = getattr(dest, "range_checksum_values", None)
        self.max_keys = max_keys
        self.collect = collect
        self.range_rows = max(2, range_rows)
        self.leaf_rows = max(1, leaf_rows)
        self.watch = watch
        self.readers = readers
        self.cut_lazily = bool(getattr(source, "verify_bounds_limit", False))
        # the first pass asks each side for one digest a range (its rows' renderings joined in key
        # order, hashed once) where both can compute it (base.RangeChecksums): cheaper than a hash a
        # row; a range whose digests differ, or that a side could not digest, is cut down by sums
        self.digest = bool(
            getattr(source, "verify_range_digest", False)
            and getattr(dest, "verify_range_digest", False)
            and all(getattr(r, "verify_range_digest", False) for r in readers)
        )
        cols = plan.source.columns
        self.columns = [c.name for c in cols if c.type.kind in VERIFY_KINDS]
        by_value = source_values is not None and dest_values is not None
        # a DOUBLE is rendered in SQL when both sides can (base.exact_double), else fetched as a value
        in_sql = [
            c.name
            for c in cols
            if exact_double(c)
            and getattr(source, "verify_exact_doubles", False)
            and getattr(dest, "verify_exact_doubles", False)
        ]
        self.columns += in_sql
        self.value_columns = [
            c for c in cols if by_value and c.type.kind in VERIFY_VALUE_KINDS and c.name not in in_sql
        ]
        self.render = [renderer(c) for c in self.value_columns]
        self.source_values, self.dest_values = source_values, dest_values
        lacking = " and ".join(
            f"the {side} ({type(c).__name__})"
            for side, c, found in (("source", source, source_values), ("destination", dest, dest_values))
            if found is None
        )
        self.report = TableReport(
            plan.source.name,
            plan.where,
            self.columns + [c.name for c in self.value_columns],
            {
                c.name: f"{c.type.kind.value} values are compared in Python, and {lacking} cannot read "
                "them for it (no range_values; docs/verify.md)"
                for c in cols
                if c.type.kind not in VERIFY_KINDS and c not in self.value_columns and c.name not in in_sql
            },
        )
        self._missing: dict[Key, str] = {}
        self._extra: dict[Key, str] = {}
        self._leaves: list[tuple[RangeBound, RangeBound]] = []  # listed ranges that held a difference
        self._first: set[Key] = set()  # the keys found different (re-checked beside a live stream)
        self._settled: set[Key] = set()  # keys a re-check found equal or really different

    def run(self, ranges: Sequence[tuple[RangeBound, RangeBound]] | None = None) -> TableReport:
        """Compare the whole table, or only ``ranges`` (a report's ``differing_ranges``: a re-check)."""
        started = time.monotonic()
        # one thread asks the destination while this one asks the source (each connector is used by
        # one thread at a time: Destination in base.py)
        with ThreadPoolExecutor(1, thread_name_prefix="verify-destination") as self._helper:
            return self._run(started, ranges)

    def _run(self, started: float, ranges: Sequence[tuple[RangeBound, RangeBound]] | None) -> TableReport:
        if ranges is None and not self.cut_lazily:
            cuts: Sequence[RangeBound] = self.bounds(self.plan, None, None, self.range_rows)
            edges: list[RangeBound] = [None, *cuts, None]
            ranges = list(zip(edges, edges[1:], strict=False))
        differing = []
        for (lower, upper), source, dest in self._pass(ranges):
            self.report.source_rows += source[0]
            self.report.destination_rows += dest[0]
            if source != dest or source[1] is None or dest[1] is None:  # (None: no digest, see _pass)
                differing.append((lower, upper, source[0], dest[0]))
        for lower, upper, source_count, dest_count in differing:
            self._narrow(lower, upper, source_count, dest_count)
        if self._settle() and self.watch is not None:
            self._recheck()
        self.report.seconds = time.monotonic() - started
        return self.report

    # -- checksums ---------------------------------------------------------------------------------
    def _pass(
        self, ranges: Sequence[tuple[RangeBound, RangeBound]] | None
    ) -> Iterator[tuple[tuple[RangeBound, RangeBound], tuple[int, int | None], tuple[int, int | None]]]:
        """Both sides' ``(rows, checksum)`` of each range, in order, pipelined: each database works
        on the next ranges (up to :data:`AHEAD` a source connector) while this thread hashes the
        values of the last one, rather than every database waiting for the hashing of every range."""
        # the source and its readers (connectors of the same kind, base.RangeChecksums), ranges dealt
        # to each in turn, each in one thread of its own (a connector is used by one thread at a time)
        sources = [(self.source_sum, self.source_values, self.source_both)] + [
            (
                _hook(reader, "range_checksum", "source"),
                getattr(reader, "range_values", None),
                getattr(reader, "range_checksum_values", None),
            )
            for reader in self.readers
        ]
        threads = [ThreadPoolExecutor(1, thread_name_prefix="verify-source") for _ in sources]
        pending: deque[tuple[tuple[RangeBound, RangeBound], Future[Any], Future[Any]]] = deque()
        # the whole table (ranges None): cut a few ranges at a time while the first ones are read
        todo = enumerate(ranges if ranges is not None else self._cut(threads[0]))
        try:
            while True:
                for n, (lower, upper) in islice(todo, AHEAD * len(sources) - len(pending)):
                    turn = n % len(sources)
                    source_read = threads[turn].submit(
                        self._side_raw, *sources[turn], lower, upper, self.digest
                    )
                    dest_read = self._helper.submit(self._dest_raw, lower, upper, self.digest)
                    pending.append(((lower, upper), source_read, dest_read))
                if not pending:
                    return
                bounds, source, dest = pending[0]
                found = source.result(), dest.result()
                pending.popleft()
                if found[0][1] is None or found[1][1] is None:
                    # a side could not join the range whole (wide rows: MariaDB cuts a GROUP_CONCAT
                    # at max_allowed_packet); the ranges still to ask for are compared by sums
                    self.digest = False
                self.report.ranges += 1
                yield bounds, self._total(*found[0]), self._total(*found[1])
        finally:  # (an error: no further range is read; the reads under way finish first, as run's
            # executor waits for the destination's, so no connection is left busy)
            for _bounds, *futures in pending:
                for future in futures:
                    future.cancel()
            for thread in threads:
                thread.shutdown(wait=True)

    def _cut(self, thread: ThreadPoolExecutor) -> Iterator[tuple[RangeBound, RangeBound]]:
        """The table's ranges, cut :data:`CUT_BATCH` at a time by the source (base.RangeBounds,
        ``limit``) in ``thread``, its own: the next batch is asked for as soon as one arrives."""

        def ask(after: RangeBound) -> Future[list[tuple[Any, ...]]]:
            return thread.submit(self.bounds, self.plan, after, None, self.range_rows, limit=CUT_BATCH)

        lower: RangeBound = None
        batch = ask(None)
        while True:
            cuts = batch.result()
            if len(cuts) == CUT_BATCH:
                batch = ask(cuts[-1])
            for cut in cuts:
                yield lower, cut
                lower = cut
            if len(cuts) < CUT_BATCH:
                yield lower, None
                return

    def _side_raw(
        self,
        checksum: Any,
        values: Any,
        both: Any,
        lower: RangeBound,
        upper: RangeBound,
        digest: bool = False,
    ) -> tuple[int, int | None, Any]:
        """A side's count, checksum of its SQL-rendered columns (``digest``: see :attr:`digest`),
        and rows of values to hash here."""
        extra = {"digest": True} if digest else {}
        if not self.value_columns:
            return (*checksum(self.plan, self.columns, lower, upper, **extra), ())
        names = [c.name for c in self.value_columns]
        if both is not None:
            count, total, rows = both(self.plan, self.columns, names, lower, upper, **extra)
            return count, total, rows
        count, total = checksum(self.plan, self.columns, lower, upper, **extra)
        return count, total, values(self.plan, names, lower, upper)

    def _source_raw(self, lower: RangeBound, upper: RangeBound) -> tuple[int, int | None, Any]:
        return self._side_raw(self.source_sum, self.source_values, self.source_both, lower, upper)

    def _dest_raw(
        self, lower: RangeBound, upper: RangeBound, digest: bool = False
    ) -> tuple[int, int | None, Any]:
        return self._side_raw(self.dest_sum, self.dest_values, self.dest_both, lower, upper, digest)

    def _total(self, count: int, total: int | None, rows: Any) -> tuple[int, int | None]:
        if total is None or not self.value_columns:
            return count, total
        return count, total + values_total(self.render, rows)

    def _side_rows(self, rows: Any, values: Any, lower: RangeBound, upper: RangeBound) -> dict[Key, str]:
        listed = dict(rows(self.plan, self.columns, lower, upper))
        if self.value_columns:
            names = [c.name for c in self.value_columns]
            for key, row in values(self.plan, names, lower, upper):
                if key in listed:
                    listed[key] += f"/{values_hash(self.render, key, row):015x}"
        return listed

    def _both(self, source: Callable[[], Any], dest: Callable[[], Any]) -> tuple[Any, Any]:
        """Both sides at once: each database works while the other does."""
        pending = self._helper.submit(dest)
        try:
            first = source()
        finally:
            found = pending.result()  # never leave the destination's connection busy behind an error
        return first, found

    def _sums(self, lower: RangeBound, upper: RangeBound) -> tuple[tuple[int, int], tuple[int, int]]:
        """Both sides' ``(rows, checksum)``."""
        self.report.ranges += 1
        return self._both(
            lambda: self._total(*self._source_raw(lower, upper)),
            lambda: self._total(*self._dest_raw(lower, upper)),
        )

    def _source_listing(self, lower: RangeBound, upper: RangeBound) -> dict[Key, str]:
        return self._side_rows(self.source_rows, self.source_values, lower, upper)

    def _dest_listing(self, lower: RangeBound, upper: RangeBound) -> dict[Key, str]:
        return self._side_rows(self.dest_rows, self.dest_values, lower, upper)

    # -- narrowing ---------------------------------------------------------------------------------
    def _narrow(self, lower: RangeBound, upper: RangeBound, source_count: int, dest_count: int) -> None:
        """Cut a range whose checksums differ until its parts are small enough to list.

        It is cut by the keys of the side holding more rows: a range of few source rows and many
        destination rows (the source emptied, a block of extra rows past its last key) is cut by the
        destination's keys, so no listing holds more than about ``leaf_rows`` rows a side.
        """
        if source_count <= self.leaf_rows and dest_count <= self.leaf_rows:
            self._compare_rows(lower, upper)
            return
        by_dest = dest_count > source_count and self.dest_bounds is not None
        if not by_dest and source_count <= 1:
            self._compare_rows(lower, upper)  # (a destination that cannot cut: listed whole)
            return
        bounds: Any = self.dest_bounds if by_dest else self.bounds
        every = max(1, (dest_count if by_dest else source_count) // SPLIT)
        cuts = [c for c in bounds(self.plan, lower, upper, every) if c != upper]
        edges: list[RangeBound] = [lower, *cuts, upper]
        for low, high in zip(edges, edges[1:], strict=False):
            source, dest = self._sums(low, high)
            if source != dest:
                self._narrow(low, high, source[0], dest[0])

    def _compare_rows(self, lower: RangeBound, upper: RangeBound) -> None:
        source, dest = self._both(
            lambda: self._source_listing(lower, upper), lambda: self._dest_listing(lower, upper)
        )
        differs = False
        for key, digest in source.items():
            other = dest.get(key)
            if other is None:
                self._hold(self._missing, MISSING, key, digest)
                differs = True
            elif other != digest:
                self._note(DIFFERENT, key)
                differs = True
        for key, digest in dest.items():
            if key not in source:
                self._hold(self._extra, EXTRA, key, digest)
                differs = True
        if differs:
            self._leaves.append((lower, upper))
            if len(self.report.differing_ranges) < self.collect:
                self.report.differing_ranges.append((lower, upper))

    def _hold(self, held: dict[Key, str], kind: str, key: Key, digest: str) -> None:
        if len(self._missing) + len(self._extra) < HELD_KEYS:
            held[key] = digest
        else:
            self._note(kind, key)

    def _settle(self) -> int:
        """Count the keys only one side listed (a key listed by both, in two ranges, is compared)."""
        for key, digest in self._missing.items():
            other = self._extra.pop(key, None)
            if other is None:
                self._note(MISSING, key)
            elif other != digest:
                self._note(DIFFERENT, key)
        for key in self._extra:
            self._note(EXTRA, key)
        self._missing.clear()
        self._extra.clear()
        return self.report.differing

    def _note(self, kind: str, key: Key) -> None:
        if self.watch is not None and len(self._first) < HELD_KEYS:
            self._first.add(key)
        self.report.counts[kind] += 1
        if len(self.report.keys) < self.max_keys:
            self.report.keys.append((kind, dict(zip(self.plan.source.key, key, strict=True))))
        if len(self.report.collected) < self.collect:
            self.report.collected.append((kind, key))

    # -- re-checking beside a live stream ----------------------------------------------------------
    def _recheck(self) -> None:
        """Check the listed ranges that held a difference again, each time after the stream has
        passed the position read after the source was (:class:`StreamWatch`)."""
        watch = self.watch
        assert watch is not None
        try:
            position = watch.position()
        except FatalError as exc:  # e.g. MySQL's FLUSH TABLES WITH READ LOCK without RELOAD
            self.report.note = (
                f"single check: the source's position could not be read ({exc}), so a difference "
                "may be a change in flight: run verify again"
            )
            return
        if watch.passed(position) is None:
            self.report.note = (
                "single check: no process is replicating this schema from the state directory (or "
                "it has no checkpoint yet), so the differences are as of now: a stopped schema's "
                "destination lags its source until it runs again"
            )
            return
        # per listed range, the keys still to settle (None: every key the range holds)
        todo: list[tuple[tuple[RangeBound, RangeBound], set[Key] | None]] = [
            (leaf, None) for leaf in self._leaves
        ]
        found: dict[Key, str] = {}
        moving: dict[Key, str] = {}
        seen: dict[Key, int] = {}  # re-checks in a row that found the key different
        for _ in range(watch.rounds):
            pending: list[tuple[tuple[RangeBound, RangeBound], set[Key] | None]] = []
            for at in range(0, len(todo), RECHECK_BATCH):
                batch = todo[at : at + RECHECK_BATCH]
                before = [self._source_listing(lo, hi) for (lo, hi), _keys in batch]
                if not watch.wait(watch.position()):
                    self._finish(found, moving, timed_out=True)
                    return
                dest = [self._dest_listing(lo, hi) for (lo, hi), _keys in batch]
                after = [self._source_listing(lo, hi) for (lo, hi), _keys in batch]
                for (leaf, keys), was, held, now in zip(batch, before, dest, after, strict=True):
                    still: set[Key] = set()
                    for key in keys if keys is not None else was.keys() | now.keys() | held.keys():
                        moving.pop(key, None)
                        there, here = held.get(key), now.get(key)
                        if was.get(key) != here:  # changed at the source meanwhile: in flight
                            still.add(key)
                            moving[key] = UNSETTLED
                        elif there == here:
                            self._settled.add(key)
                            seen.pop(key, None)
                        else:
                            # a difference: real once seen in CONFIRM re-checks in a row (a row changed
                            # and changed back between the two source reads looks unchanged once)
                            seen[key] = seen.get(key, 0) + 1
                            if seen[key] >= CONFIRM:
                                self._settled.add(key)
                                found[key] = (
                                    MISSING if there is None else EXTRA if here is None else DIFFERENT
                                )
                            else:
                                still.add(key)
                                moving[key] = UNSETTLED
                    if still:
                        pending.append((leaf, still))
            todo = pending
            if not todo:
                break
        self._finish(found, moving, timed_out=False)

    def _finish(self, found: dict[Key, str], moving: dict[Key, str], *, timed_out: bool) -> None:
        """Report the re-check's keys instead of the first check's."""
        self.report.counts = {MISSING: 0, EXTRA: 0, DIFFERENT: 0}
        self.report.keys = []
        self.report.collected = []  # a repair takes the keys the re-check confirmed (or left unsettled)
        self.report.rechecked = True
        if timed_out:  # the first check's keys that no re-check settled stay unsettled
            for key in self._first - self._settled:
                moving[key] = UNSETTLED
        for key in sorted(found, key=_order):
            self._note(found[key], key)
        if moving:
            self.report.counts[UNSETTLED] = 0
            for key in sorted(moving, key=_order):
                self._note(UNSETTLED, key)
            assert self.watch is not None
            self.report.note = (
                f"unsettled: the stream did not pass the position the check read within "
                f"{self.watch.timeout:g}s (--settle-timeout); check that warpd is running this schema "
                "and is not lagging (warpctl status), then run verify again"
                if timed_out
                else f"unsettled: these rows kept changing at the source through {self.watch.rounds} "
                "re-checks; run verify again when they are quieter"
            )


def _order(key: Key) -> tuple[str, ...]:
    return tuple(v or "" for v in key)
