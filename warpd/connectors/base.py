"""What a source and a destination must provide, and the events between them.

A source produces, in source order, :class:`RowChange`, :class:`Truncate` and
:class:`SchemaChange` events, each carrying the source :data:`Position`
*after* which it is safe to resume.  The engine batches them, applies them to
a destination, and stores the position of the last applied event as the
checkpoint.

Sources and destinations meet only here and in :mod:`warpd.types`: a source
emits canonical values, a :class:`Destination` encodes them.  What a
destination can hold or do is declared in its :class:`Capabilities`, which
the engine reads instead of guessing (docs/how-it-works.md, "Connectors").
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from warpd.errors import ConfigError, SupersededError
from warpd.types import Column, Kind, TableSchema

Position = Mapping[str, Any]
"""A JSON-serialisable source position, opaque to everything but its source."""

Row = dict[str, Any]


class Op(enum.StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class RowChange:
    """One row changed at the source.

    ``before`` is the old row image (UPDATE, DELETE), ``after`` the new one
    (INSERT, UPDATE).  Images hold canonical values (see :mod:`warpd.types`)
    keyed by source column name; they may lack columns the event did not carry,
    and an UPDATE's ``before`` may hold only the key (``update_before_keys_only``).
    """

    table: str
    op: Op
    before: Row | None
    after: Row | None
    position: Position
    source_ts: float | None = None  # seconds since the epoch, when the source says
    size: int = 0  # about how many bytes the images take, when the source knows (bounds a batch)
    # False when the source applied the change without checking foreign keys (MySQL
    # foreign_key_checks=0), so no ON DELETE/ON UPDATE action ran for it
    foreign_key_checks: bool = True
    # where the change itself lies in the change log, when ``position`` (a resume point) does not say
    # it exactly: ordered against a table's copy position by the source's ``precedes`` (see Source)
    at: Position | None = None


@dataclass(frozen=True)
class Truncate:
    table: str
    position: Position
    source_ts: float | None = None


class SchemaOpKind(enum.StrEnum):
    CREATE_TABLE = "create_table"
    DROP_TABLE = "drop_table"
    RENAME_TABLE = "rename_table"
    ADD_COLUMN = "add_column"
    DROP_COLUMN = "drop_column"
    MODIFY_COLUMN = "modify_column"  # type/nullability change, possibly a rename
    RENAME_COLUMN = "rename_column"
    RESYNC_TABLE = "resync_table"  # the change could not be followed exactly: re-copy the table
    EVOLVE = "evolve"  # columns added and/or widened; existing values convert by the shared rule
    FOREIGN_KEYS = "foreign_keys"  # foreign keys may have changed; the table's shape did not


@dataclass(frozen=True)
class SchemaChange:
    """A structural change to one table, in stream order.

    ``schema`` is the table's shape after the change, when the source knows
    it (CREATE TABLE, column changes); ``column`` is the column added or
    modified; ``old_name``/``new_name`` are table or column names for renames
    and drops.
    """

    table: str
    kind: SchemaOpKind
    position: Position
    statement: str = ""
    schema: TableSchema | None = None
    column: Column | None = None
    old_name: str | None = None
    new_name: str | None = None
    source_ts: float | None = None
    at: Position | None = None  # as RowChange.at: where the event that caused it lies, if not ``position``


@dataclass(frozen=True)
class Heartbeat:
    """No data, but the source has progressed to ``position`` (e.g. a quiet binlog)."""

    position: Position | None
    source_ts: float | None = None


Event = RowChange | Truncate | SchemaChange | Heartbeat

CASCADING_RULES = ("CASCADE", "SET NULL")


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key of the source whose ON DELETE / ON UPDATE actions the change log does not carry.

    ``table``/``columns`` are the child (the referencing table), ``parent``/
    ``parent_columns`` what it references; ``parent_database`` is None when
    the parent lives in the replicated namespace itself.  ``on_delete`` and
    ``on_update`` are SQL rules: ``CASCADE``, ``SET NULL``, ``RESTRICT``,
    ``NO ACTION`` or ``SET DEFAULT``.
    """

    name: str
    table: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    on_delete: str
    on_update: str
    parent_database: str | None = None
    # set when string values match under a collation (case-, accent- or trailing-space-insensitive),
    # which a destination comparing values exactly does not reproduce
    loose_collation: str | None = None

    @property
    def cascades(self) -> bool:
        """Whether a change of a parent row changes child rows (CASCADE or SET NULL)."""
        return self.on_delete in CASCADING_RULES or self.on_update in CASCADING_RULES

    def describe(self) -> str:
        """``parent (id) -> child (parent_id) [fk_name] ON DELETE CASCADE``, for messages."""
        parent = f"{self.parent_database}.{self.parent}" if self.parent_database else self.parent
        rules = [
            f"ON {what} {rule}"
            for what, rule in (("DELETE", self.on_delete), ("UPDATE", self.on_update))
            if rule in CASCADING_RULES
        ]
        return (
            f"{parent} ({', '.join(self.parent_columns)}) -> {self.table} ({', '.join(self.columns)}) "
            f"[{self.name}] {' '.join(rules)}"
        )


@dataclass
class SnapshotChunk:
    """Rows of one table read by the initial snapshot, in key order.

    When the source was asked for a bulk format the destination accepts (see
    :attr:`Capabilities.bulk_formats`: :data:`PG_COPY_TEXT`, :data:`MYSQL_LOAD_TEXT`),
    ``encoded[i]`` holds row ``i``'s ``encoded_columns`` already in that
    format (tab-separated fields) and ``rows[i]`` only the remaining columns,
    canonical.

    A source that infers shapes from the data (MongoDB) sets ``schema`` when
    the chunk's rows need columns added or widened first; the engine evolves
    the destination table (as for a :attr:`SchemaOpKind.EVOLVE` change) before
    copying the chunk.
    """

    table: str
    rows: list[Row]
    resume_after: Mapping[str, Any] | None  # key of the last row, None when keyless
    done: bool = False
    encoded: list[str] | None = None
    encoded_columns: tuple[str, ...] = ()
    schema: TableSchema | None = None  # set when the rows need a wider shape than the table has


class Source(Protocol):
    """What the engine needs from a source connector (see connectors/mysql/source.py).

    Register a factory with :func:`warpd.connectors.registry.register_source`.

    Optional members, looked up with ``getattr``: ``configure(table_settings)``
    hands the source its per-table settings (``SchemaConfig.table_settings``);
    ``infers_shapes = True`` says that table shapes come from the data
    (MongoDB): ``describe()`` is then a sample, shapes only ever widen (through
    :attr:`SchemaOpKind.EVOLVE` and :attr:`SnapshotChunk.schema`), and after a
    restart the stored shape is kept rather than re-described;
    ``unlogged_cascades() -> list[ForeignKey]`` lists the foreign keys with
    CASCADE / SET NULL actions whose child-row changes never reach the change
    log (MySQL InnoDB) and whose child table is in the source namespace; the
    engine refuses, emulates or ignores them (``foreign_key_cascades``) and
    lists them again after every :class:`SchemaChange` (a source emits
    :attr:`SchemaOpKind.FOREIGN_KEYS` for DDL that changes only constraints);
    ``positions_per_change = True`` says that every :class:`RowChange`'s
    position is a safe resume point once that change is applied (MongoDB
    resume tokens): the engine then checkpoints at the last applied change of
    each batch; otherwise only :class:`Heartbeat` positions move the checkpoint
    (a binlog row sits inside its transaction); ``precedes(at, mark) -> bool``
    says whether the change-log event at ``at`` (an event's ``at``, else its
    ``position``) was committed at or before ``mark``, a position read with
    :meth:`current_position`; with it the engine skips the replayed events of
    a table that its copy already holds (docs/how-it-works.md, "Replaying
    events older than a table's copy"), without it it re-copies as asked;
    ``bulk_formats`` (a set of
    format names such as :data:`PG_COPY_TEXT`) lists the encodings the
    source can produce server-side for a snapshot (``bulk_format``);
    ``update_before_keys_only`` (a callable the engine sets) says whether an
    UPDATE's ``before`` image may hold only the table's key columns (what the
    engine reads of it: the old key), which saves decoding the rest; the
    engine says no while it emulates foreign-key actions (they read the
    parent's referenced columns) and for keyless tables the source keeps the
    whole image anyway (their key is a hash of the row);
    ``order_key(change) -> str`` gives the text by which the source's changes sort in the order
    they happened, the same for a change and its replay and different for any two changes (MySQL:
    binlog file, event position, row index); the engine hands it to a destination with
    ``capabilities.ordered_writes``, which then refuses to take a row back to an older change
    (BigQuery: a replay after a crash changes nothing);
    ``pipelined_apply = True`` asks the engine to apply a full batch on a
    thread of its own while the stream reads the next (a gain where reading is
    light and the destination's work long: MySQL binlog rows, +7 % on two
    cores; a loss where reading is heavy Python: MongoDB documents, -16 %,
    as the two contend for the GIL; docs/performance.md);
    ``read_since(schema, cursor_column, mark, lag, chunk_size, bulk_format=None)
    -> Iterator[SnapshotChunk]`` (``mode: batch``, sync ``incremental``;
    docs/batch-mode.md) reads the rows whose ``cursor_column`` is at or after
    ``mark["cursor"]`` minus ``lag`` (``mark`` None: every row), in (cursor,
    key) order, so that rows sharing the mark's cursor value are read again;
    ``lag`` is a :class:`datetime.timedelta` for a date/time cursor, a number
    of the cursor's type otherwise, or None; each chunk's ``resume_after`` is
    the next run's mark, ``{"cursor": <encoded value>, "key": [...]}``, and
    the engine stores it only after the destination committed the chunk; a
    chunk's ``schema`` (a source that infers shapes) widens the destination
    first, as in a snapshot. A
    source without it runs full refreshes only; register it with
    ``modes=("stream", "batch")`` (or ``("batch",)``) so validation accepts
    ``mode: batch`` for it;
    ``cursor_column(schema, name) -> Column`` (``mode: batch``) checks the
    cursor itself and returns the column whose type says what ``safety_lag``
    counts in (a date/time kind: a duration); the engine then skips its own
    refusal of nullable and unordered columns, and the source must refuse, at
    each :meth:`read_since`, rows whose cursor it could not read (MongoDB,
    where any field may be missing: warpd/connectors/mongodb/cursor.py);
    ``verify_bounds``, ``range_checksum`` and ``range_rows`` (:class:`RangeBounds`,
    :class:`RangeChecksums`) let ``cartridge-warp verify`` compare its tables (docs/verify.md);
    ``rows_by_key(schema, keys) -> list[Row]`` (``verify --repair``) reads the current rows of
    ``keys`` (tuples of canonical key values, in ``schema.key`` order) as :meth:`snapshot` reads
    rows; a key it does not hold is left out, and a row of another key its comparison matches
    (a collation's ``'A'`` for ``'a'``) may be returned: the engine keeps the exact ones.
    """

    def check_prerequisites(self) -> None:
        """Raise :class:`~warpd.errors.FatalError` naming the fix if capture cannot work."""

    def check_position(self, position: Position) -> None:
        """Raise :class:`~warpd.errors.PositionLostError` if ``position`` can no longer be replayed."""

    def current_position(self) -> Position:
        """The change log's current end, captured before a snapshot starts."""

    def list_tables(self) -> list[str]:
        """Names of every table in the source namespace."""

    def table_exists(self, table: str) -> bool: ...

    def describe(self, table: str, key_columns: tuple[str, ...] | None = None) -> TableSchema:
        """The table's current shape; ``key_columns`` overrides (or supplies) the key."""

    def estimate_rows(self, table: str) -> int:
        """A cheap row-count estimate for progress display."""

    def snapshot(
        self,
        schema: TableSchema,
        resume_after: Mapping[str, Any] | None,
        chunk_size: int,
        bulk_format: str | None = None,
    ) -> Iterator[SnapshotChunk]:
        """Read the table in key order, starting after ``resume_after``.

        ``bulk_format`` (one of the source's ``bulk_formats``) asks for
        server-encoded fields in that format where the source can produce them
        exactly (see :class:`SnapshotChunk`); the engine passes it only when the
        destination lists that format in its capabilities and the source lists
        it in ``bulk_formats``, and otherwise calls without it.
        """

    def table_copied(self, table: str, position: Position | None = None) -> Position:
        """Note that ``table`` was copied (snapshot or resync) with its shape as of ``position``.

        ``position`` defaults to the change log's current end; it is returned so
        the engine can store it and hand it back after a restart.  The change
        log from before the copy is still replayed; schema changes to ``table``
        logged before ``position`` are already in the copied shape, so the
        stream re-copies the table instead of applying them a second time.
        """

    def stream(
        self,
        start: Position,
        tables: Mapping[str, TableSchema],
        included: Callable[[str], bool],
        key_override: Callable[[str], tuple[str, ...] | None],
        skipped: Callable[[str], bool] = ...,
    ) -> Iterator[Event]:
        """Yield events from ``start`` on, with a :class:`Heartbeat` at least every second or so.

        ``tables`` is the engine's map of replicated shapes, read-only to the
        source: the source reports each shape change as a :class:`SchemaChange`
        (with ``schema`` when it knows the new shape), and the engine applies it
        to the map before it asks for the next event.  ``skipped(table)`` is true while
        the engine skips a table's changes (paused): a source must not stop on
        one of them it cannot decode.  Raises
        :class:`~warpd.errors.TransientError` when the stream breaks; the engine
        then reopens it from the last safe position.
        """

    def is_transient(self, exc: BaseException) -> bool:
        """Whether a driver exception is worth retrying."""

    def reset(self) -> None:
        """Drop connections after an error; the next call reconnects."""

    def close(self) -> None: ...


# -- destinations -------------------------------------------------------------

PG_COPY_TEXT = "postgresql-copy-text"
"""PostgreSQL's COPY text format: tab-separated fields, ``\\N`` for NULL, backslash escapes."""

MYSQL_LOAD_TEXT = "mysql-load-data-text"
"""The text ``LOAD DATA ... FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\'`` reads, as the MySQL
destination loads it: tab-separated fields, ``\\N`` for NULL, backslash escapes; bytes as hex
digits, timestamps with a time zone as UTC wall-clock time without an offset, bits as ``0``/``1``
digits (warpd/connectors/mysql/dest_types.py)."""

# Columns a destination adds to every table (names shared by every destination, so a
# user's queries read the same everywhere; see docs/configuration.md, metadata_columns).
ROW_KEY = "_warp_row_key"  # key of tables without a primary key (hash of the row)
OP_COLUMN = "_warp_op"
SOURCE_TS_COLUMN = "_warp_source_ts"
SYNCED_AT_COLUMN = "_warp_synced_at"
DELETED_AT_COLUMN = "_warp_deleted_at"
RESERVED_COLUMNS = (ROW_KEY, OP_COLUMN, SOURCE_TS_COLUMN, SYNCED_AT_COLUMN, DELETED_AT_COLUMN)
CASCADE_ACTIONS = ("delete", "set_null", "update")


@dataclass(frozen=True)
class Capabilities:
    """What a destination can hold and do, declared once; the engine reads it instead of guessing."""

    name: str  # "PostgreSQL", for messages ("rejected by PostgreSQL: ...")
    max_identifier_length: int  # longer source names get a deterministic rename (docs/type-mapping.md)
    identifier_unit: str  # "bytes" or "characters": what max_identifier_length counts
    max_columns: int  # columns per table, metadata columns included
    json: str  # how JSON is held: "jsonb", "json" (validated text), ...
    max_decimal_precision: int | None  # widest DECIMAL kept exactly as a number; None: unbounded
    transactional_ddl: bool  # DDL and data commit together (False: each DDL statement commits)
    bulk_formats: frozenset[str] = frozenset()  # formats of SnapshotChunk.encoded it loads as they are
    # can run emulated ON DELETE / ON UPDATE actions (``foreign_key_cascades: emulate``)
    foreign_key_actions: bool = False
    # converts existing values in place when a column widens into JSON (SchemaOpKind.EVOLVE), each
    # rendered by the shared rule of warpd.types; False: the engine copies such a table again
    json_widening: bool = False
    # seconds between two writes to one table: the engine coalesces changes up to it (a destination
    # whose every write is a billed job with per-table limits: BigQuery's MERGE); 0: no minimum
    min_flush_interval: float = 0.0
    # most connections writing one table at once (0: as many as max_parallel_streams asks)
    writers_per_table: int = 0
    # stores each row's source order (Source.order_key) and applies a change only over an older one:
    # the engine then calls ``encode(..., order=key)`` for the changes of sources that give one
    ordered_writes: bool = False
    # writes a :class:`Fence` row in the transaction of each streaming write (``write(..., fence=)``)
    # and implements ``read_fence``/``clear_fence``: replays after a crash are then skipped
    # (exactly-once effect; docs/how-it-works.md, "Delivery guarantees")
    fenced_writes: bool = False
    notes: tuple[str, ...] = ()  # said once at start-up (e.g. which load path was chosen and why)


@dataclass(frozen=True)
class TablePlan:
    """Where and how one source table version is written, computed once by :meth:`Destination.plan`.

    ``columns`` maps each source column to its destination name; ``key`` names
    the destination key columns (:data:`ROW_KEY` for a keyless table);
    ``encoders`` turn each source column's canonical value into the
    destination's text field for it (one per source column, in order; they
    raise ``ValueError``, ``TypeError`` or ``OverflowError`` on a value the
    destination cannot hold exactly).  ``extra`` is the destination's own.
    """

    source: TableSchema
    dest_schema: str
    dest_table: str
    columns: Mapping[str, str]
    key: tuple[str, ...]
    soft_delete: bool
    metadata: bool
    encoders: tuple[Callable[[Any], str], ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def keyless(self) -> bool:
        return not self.source.key

    @property
    def where(self) -> str:
        """``schema.table`` at the destination, for messages."""
        return f"{self.dest_schema}.{self.dest_table}"

    def data_columns(self) -> list[str]:
        return [self.columns[c.name] for c in self.source.columns]

    def encode(self, row: Mapping[str, Any]) -> list[str]:
        """Text fields for ``row``'s source columns (raises on a value the destination cannot hold)."""
        return [enc(row.get(col.name)) for col, enc in zip(self.source.columns, self.encoders, strict=True)]

    def row_key(self, fields: list[str]) -> str:
        """The :data:`ROW_KEY` of a keyless table's row, from its encoded fields."""
        return hashlib.md5("\t".join(fields).encode("utf-8")).hexdigest()

    def key_of(self, row: Mapping[str, Any]) -> Any:
        """What identifies ``row``: its key values, or the row hash of a keyless table."""
        if self.keyless:
            return self.row_key(self.encode(row))
        return tuple(row.get(k) for k in self.source.key)


# -- verify: key-range checksums computed by each database (docs/verify.md) ------------------------

VERIFY_KINDS = frozenset(
    {
        Kind.BOOLEAN,
        Kind.INT,
        Kind.DECIMAL,
        Kind.TEXT,
        Kind.BYTES,
        Kind.BITS,
        Kind.DATE,
        Kind.TIME,
        Kind.TIMESTAMP,
        Kind.TIMESTAMPTZ,
        Kind.UUID,
    }
)
"""Kinds whose values every database renders the same canonical text for (docs/verify.md); the
columns of other kinds (FLOAT, JSON, TEXT_ARRAY) are compared in Python (:data:`VERIFY_VALUE_KINDS`)."""

VERIFY_VALUE_KINDS = frozenset({Kind.FLOAT, Kind.JSON, Kind.TEXT_ARRAY})
"""Kinds no SQL renders alike in every database: ``range_values`` returns their values, and verify
renders them in Python (floats at the precision the destination holds, JSON as parsed documents,
SET/text arrays as sets of members; docs/verify.md), but a DOUBLE where both sides render it
exactly in SQL (:func:`exact_double`)."""


def exact_double(column: Column) -> bool:
    """A 64-bit FLOAT (``DOUBLE``, ``double precision``): the one :data:`VERIFY_VALUE_KINDS` column
    that connectors declaring ``verify_exact_doubles`` render in SQL, exactly, when both sides of a
    verify declare it (``range_checksum`` and ``range_rows`` then take it among their ``columns``).

    The rendering (docs/verify.md): ``0`` for zero (either sign), ``NaN``, ``Infinity`` and
    ``-Infinity``, otherwise ``[-]<m>p<e>`` for the value ``m * 2**(e - 52)``: ``m`` the 53-bit integer
    significand (2**52 <= m < 2**53, subnormals normalised) and ``e`` the binary exponent, computed
    with arithmetic that is exact in IEEE doubles (multiplying by powers of two).  A 32-bit FLOAT stays
    rendered in Python: its destination may hold the single's value in a double."""
    return column.type.kind is Kind.FLOAT and column.type.bits != 32


VERIFY_KEY_KINDS = frozenset(
    {
        Kind.INT,
        Kind.DECIMAL,
        Kind.TEXT,
        Kind.UUID,
        Kind.BYTES,
        Kind.DATE,
        Kind.TIME,
        Kind.TIMESTAMP,
        Kind.TIMESTAMPTZ,
    }
)
"""Key kinds that order, and compare with a bound, identically at the source and the destination."""

RangeBound = tuple[Any, ...] | None
"""A key in the verify order, as the source's ``verify_bounds`` returned it; None: no bound."""

RangeRows = list[tuple[tuple[str | None, ...], str]]
"""``(key rendered as text, row hash)`` for each row of a range, in no particular order."""

RangeValues = Iterable[tuple[tuple[str | None, ...], tuple[Any, ...]]]
"""``(key rendered as text, values)`` for each row of a range (``range_values``): a FLOAT as a Python
float (NaN and infinities included), JSON as its document's text, a TEXT_ARRAY (MySQL ``SET``) as a
list of its members, None for NULL."""


def verify_key_kind(plan: TablePlan, column: Column) -> None:
    """Refuse (ConfigError: bad usage) a key column whose kind cannot bound a range on both sides."""
    if column.type.kind not in VERIFY_KEY_KINDS:
        raise ConfigError(
            f"verify: table {plan.source.name!r}: key column {column.name!r} is {column.type.describe()}, "
            "which cannot bound a key range the same way at the source and the destination; "
            "verify supports keys of integers, decimals, text, UUIDs, bytes, dates, times and timestamps"
        )


class RangeChecksums(Protocol):
    """Optional members of a source and a destination that ``verify`` needs (docs/verify.md).

    Looked up with ``getattr``: a connector without them cannot be verified
    (``verify`` says so).  ``columns`` are the source column names compared
    (kinds in :data:`VERIFY_KINDS`); a range is the keys after ``lower`` up to
    and including ``upper`` in the verify order (text keys by their UTF-8
    bytes), either bound None for an open end.  A destination counts only its
    live rows (soft-deleted rows are absent) and ignores its own columns.

    A connector may declare ``verify_range_digest = True``: its ``range_checksum``
    and ``range_checksum_values`` then take ``digest=True`` (asked only when both
    sides declare it), and their checksum is the first 60 bits of the MD5 of the
    range's row renderings joined by ``,`` in the verify order, one hash a range
    instead of one a row; None when the database could not join them whole (a
    length limit): verify then compares that range by the rows' hashes.
    """

    def range_checksum(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> tuple[int, int]:
        """``(rows, checksum)`` of the range, computed by the database: the sum of the first 60
        bits of each row's hash (docs/verify.md)."""

    def range_rows(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> RangeRows:
        """Each row of the range as ``(rendered key, row hash)``, for a range small enough to list."""

    def range_values(
        self, plan: TablePlan, columns: Sequence[str], lower: RangeBound, upper: RangeBound
    ) -> RangeValues:
        """Each row of the range as ``(rendered key, values of columns)``, for ``columns`` of the
        kinds in :data:`VERIFY_VALUE_KINDS`, which verify renders and hashes itself.  Optional: without
        it such columns are not compared (the report says so)."""

    def range_checksum_values(
        self,
        plan: TablePlan,
        columns: Sequence[str],
        value_columns: Sequence[str],
        lower: RangeBound,
        upper: RangeBound,
    ) -> tuple[int, int, RangeValues]:
        """``range_checksum(columns)`` and ``range_values(value_columns)`` of the range together
        (``(rows, checksum, values)``), where the database can read both in one scan.  Optional."""

    def verify_bounds(
        self, plan: TablePlan, lower: RangeBound, upper: RangeBound, every: int
    ) -> list[tuple[Any, ...]]:
        """As :meth:`RangeBounds.verify_bounds`, over this side's rows.  Optional at a destination:
        verify cuts by the destination's keys a range holding many more rows there than at the
        source (e.g. a block of extra rows past the source's last key), so no listing is large."""


class RangeBounds(Protocol):
    """The source's part of ``verify``: where to cut a key range (with :class:`RangeChecksums`).

    A source declaring ``verify_bounds_limit = True`` takes ``limit=N`` too (only the first N keys):
    verify then cuts the table a few ranges at a time while it reads the first ones, instead of
    cutting the whole table before reading any."""

    def verify_bounds(
        self, plan: TablePlan, lower: RangeBound, upper: RangeBound, every: int
    ) -> list[tuple[Any, ...]]:
        """The key of every ``every``-th row of the range, in the verify order."""


BESIDE_PREFIX = "_warp_new_"


def beside_plan(plan: TablePlan) -> TablePlan:
    """``plan`` writing into a table beside the live one, swapped in when its copy is complete."""
    if is_beside(plan):
        return plan
    digest = hashlib.sha1(f"{plan.dest_schema}.{plan.dest_table}".encode()).hexdigest()[:16]
    return replace(plan, dest_table=BESIDE_PREFIX + digest)


def is_beside(plan: TablePlan) -> bool:
    return plan.dest_table.startswith(BESIDE_PREFIX)


@dataclass
class EncodedChunk:
    """A snapshot chunk turned into destination records by :meth:`Destination.encode_chunk`.

    ``records`` pairs each row (canonical values, for dead letters) with its
    record; ``failed`` holds the rows that could not be encoded, with why;
    ``layout`` is the destination's note of how the records are laid out,
    handed back to :meth:`Destination.write` and :meth:`Destination.record_values`.
    """

    records: list[tuple[Row, Any]]
    failed: list[tuple[Row, str]] = field(default_factory=list)
    layout: Any = None


FENCE_TABLE = "_warp_checkpoints"
"""The destination table that fences streaming batches (one row per schema, table and part)."""


@dataclass(frozen=True)
class FenceRow:
    """One row of :data:`FENCE_TABLE` (a schema's table and part), as ``read_fence`` returns it.

    ``seq`` numbers the engine's batches, ``position`` and ``skip_tables`` say where the batch ends in
    the change stream (``skip_tables``: how many row changes of each table after ``position`` it holds;
    ``skip`` is their sum; a fence row written before per-table counts has ``{"": skip}``: that many
    row changes of any table), ``parts`` is how many parts the table's rows were split into, and
    ``rows_done`` how many items of this part (in their deterministic order) are committed;
    ``epoch`` is the writer's.
    """

    table: str
    part: int
    seq: int
    position: Mapping[str, Any]
    skip: int
    parts: int
    rows_done: int
    epoch: int = 0
    skip_tables: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Fence(FenceRow):
    """What a streaming write records in the destination, in its own transaction (``fenced_writes``):
    the row of ``schema``'s table and part, in ``where`` (the schema, database or dataset that holds
    :data:`FENCE_TABLE`).  A negative ``part`` is a guard (:meth:`guard`): the transaction checks the
    writer's epoch and records nothing (snapshot chunks and copies beside the stream)."""

    @classmethod
    def guard(cls, where: str, schema: str, epoch: int) -> Fence:
        """The fence of writes outside streamed batches: only the epoch is checked."""
        return cls("", -1, 0, {}, 0, 0, 0, epoch, {}, where=where, schema=schema)

    @property
    def records(self) -> bool:
        """Whether the transaction writes this fence's row (a guard only checks the epoch)."""
        return self.part >= 0

    where: str = ""
    schema: str = ""

    def values(self) -> tuple[Any, ...]:
        """(schema_name, table_name, part, seq, position as JSON, skip, parts, rows_done, epoch,
        skip_tables as JSON)."""
        position = json.dumps(dict(self.position), sort_keys=True, default=str)
        return (
            self.schema,
            self.table,
            self.part,
            self.seq,
            position,
            self.skip,
            self.parts,
            self.rows_done,
            self.epoch,
            json.dumps(dict(self.skip_tables), sort_keys=True),
        )

    def check_epoch(self, stored: tuple[Any, Any] | None) -> None:
        """Raise :class:`SupersededError` when ``stored`` (the schema's epoch row: epoch, when it was
        taken, read under a shared lock) is not this writer's epoch: another one took over since."""
        if stored is not None and int(stored[0]) != self.epoch:
            raise SupersededError(
                f"another writer took over schema {self.schema!r} at {stored[1]} (epoch {stored[0]}, this "
                f"process has {self.epoch}, in {self.where}.{FENCE_TABLE}); this process stops. Two "
                "cartridge-warp processes must not replicate one schema into one destination"
            )


class Destination(Protocol):
    """What the engine needs from a destination connector (see connectors/postgresql/destination.py).

    Register a factory ``(uri, application_name) -> Destination`` with
    :func:`warpd.connectors.registry.register_destination`.  One instance
    holds one connection and is used by one thread at a time; the engine
    makes one per writing thread.  Every method that talks to the database
    may raise the driver's exceptions: the engine asks :meth:`is_transient`
    whether to retry and :meth:`rejects_rows` whether the rows written are at
    fault (they are then split until the offending row goes to the dead
    letters).  DDL methods must be idempotent: a change replayed after a
    crash (applied, not yet checkpointed) is a no-op.

    The foreign-key methods (:meth:`ensure_index`, :meth:`transaction`,
    :meth:`cascade`) are called only when ``capabilities.foreign_key_actions``.

    A destination with ``capabilities.fenced_writes`` also takes ``fence=`` (a :class:`Fence`) in
    :meth:`write` and upserts it into :data:`FENCE_TABLE` in the same transaction as the rows, and
    provides ``read_fence(where, schema) -> list[FenceRow]`` (creating the table if missing; the
    schema's epoch row has table ""), ``clear_fence(where, schema)`` (forget a schema's batch rows:
    its state file starts afresh) and ``take_over(where, schema) -> int`` (increment the schema's
    writer epoch and return it).  Each fenced transaction reads the epoch row under a shared lock
    first and calls :meth:`Fence.check_epoch` with it.  Such a destination also takes ``fence=`` (a
    guard, :meth:`Fence.guard`) in :meth:`prepare`, :meth:`swap_in`, :meth:`truncate`,
    :meth:`soft_delete_all`, :meth:`schema_change`, :meth:`evolve` and :meth:`drop`, and checks the epoch before each statement they run: in the
    statement's own transaction where the database's DDL is transactional (PostgreSQL), just before
    it otherwise (MySQL/MariaDB commit DDL implicitly; a row update still shares the transaction).
    """

    capabilities: Capabilities

    # -- connection -----------------------------------------------------------
    def connect(self) -> None:
        """Connect now (start-up checks reachability); raise FatalError for what no retry fixes."""

    def reset(self) -> None:
        """Drop the connection after an error; the next call reconnects."""

    def close(self) -> None: ...

    def is_transient(self, exc: BaseException) -> bool:
        """Whether an exception of this destination is worth retrying (connection lost, deadlock...)."""

    def rejects_rows(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the data written was refused (a value, a constraint), not the connection."""

    def is_duplicate(self, exc: BaseException) -> bool:
        """Whether a ``direct`` write failed only because some of its keys were already there."""

    # -- tables ---------------------------------------------------------------
    def plan(self, schema: TableSchema, dest_schema: str, *, soft_delete: bool, metadata: bool) -> TablePlan:
        """Destination names, key and encoders for ``schema`` (pure: no I/O)."""

    def plan_ddl(self, plan: TablePlan) -> list[str]:
        """The statements :meth:`prepare` would run now, rendered (``--dry-run``)."""

    def prepare(self, plan: TablePlan, *, fence: Fence | None = None) -> list[str]:
        """Create the table, or add the columns it lacks; return the statements run."""

    def table_exists(self, plan: TablePlan) -> bool: ...

    def misfit(self, plan: TablePlan) -> str | None:
        """Why the live table cannot take ``plan``'s rows in place (another key, other column types)."""

    def swap_in(self, beside: TablePlan, plan: TablePlan, *, fence: Fence | None = None) -> list[str]:
        """Replace ``plan``'s live table by the complete copy ``beside``."""

    def drop(self, plan: TablePlan, *, fence: Fence | None = None) -> list[str]: ...

    def truncate(self, plan: TablePlan, *, fence: Fence | None = None) -> None: ...

    def soft_delete_all(self, plan: TablePlan, *, fence: Fence | None = None) -> None:
        """Mark every live row deleted (a TRUNCATE under soft deletes)."""

    def schema_change(
        self,
        kind: SchemaOpKind,
        old: TablePlan,
        new: TablePlan,
        old_column: str | None = None,
        new_column: str | None = None,
        *,
        fence: Fence | None = None,
    ) -> list[str]:
        """Turn ``old`` into ``new`` for one source change; return the statements run.

        Raises (not transient) when the change cannot be followed in place:
        the engine then copies the table again.
        """

    def evolve(self, old: TablePlan, new: TablePlan, *, fence: Fence | None = None) -> list[str]:
        """Add ``new``'s missing columns and widen those whose type changed (:attr:`SchemaOpKind.EVOLVE`).

        Existing values convert by the shared rule (:func:`warpd.types.is_widening`;
        into JSON as :mod:`warpd.types` says); replaying it is harmless.
        """

    # -- rows -----------------------------------------------------------------
    def encode(self, plan: TablePlan, row: Row, op: str, source_ts: float | None) -> Any:
        """One record for ``row`` (raises ValueError/TypeError/OverflowError on a value it cannot hold).

        A destination with ``capabilities.ordered_writes`` also takes ``order``, the change's
        :meth:`Source.order_key` (None for snapshot rows and sources without one)."""

    def encode_chunk(self, plan: TablePlan, chunk: SnapshotChunk) -> EncodedChunk:
        """Records for a snapshot chunk (which may hold :attr:`SnapshotChunk.encoded` lines)."""

    def write(
        self,
        plan: TablePlan,
        upserts: Sequence[Any],
        deletes: Sequence[Any] = (),
        *,
        direct: bool = False,
        keep_existing: bool = False,
        layout: Any = None,
    ) -> None:
        """Apply records in one transaction: deletes first, then upserts (one final state per key).

        ``direct`` inserts ``upserts`` as they are (snapshot rows that cannot be
        there yet; :meth:`is_duplicate` says when they partly are, and the engine
        retries without ``direct``); ``keep_existing`` inserts only the keys not
        there yet (a copy beside the stream never overwrites a streamed change).
        """

    def record_values(self, plan: TablePlan, record: Any, layout: Any = None) -> dict[str, Any]:
        """A record's values by destination column name, printable (for a dead letter)."""

    def read_rows(self, plan: TablePlan) -> Iterator[Row] | None:
        """The live rows of ``plan``'s table as canonical values by source column name (JSON parsed,
        not as text), soft-deleted rows left out; None when the table does not exist (verification)."""

    # -- foreign-key actions (capabilities.foreign_key_actions) -----------------
    def ensure_index(self, plan: TablePlan, columns: Sequence[str]) -> list[str]: ...

    def transaction(self) -> AbstractContextManager[Any]: ...

    def cascade(
        self,
        cur: Any,
        plan: TablePlan,
        action: str,
        columns: Sequence[str],
        keys: Sequence[Sequence[str]],
        returning: Sequence[str] = (),
        source_ts: float | None = None,
    ) -> list[tuple[list[str], list[str] | None]]: ...
