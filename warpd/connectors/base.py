"""What a source and a destination must provide, and the events between them.

A source produces, in source order, :class:`RowChange`, :class:`Truncate` and
:class:`SchemaChange` events, each carrying the source :data:`Position`
*after* which it is safe to resume.  The engine batches them, applies them to
a destination, and stores the position of the last applied event as the
checkpoint.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from warpd.types import Column, TableSchema

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
    keyed by source column name; they may lack columns the event did not carry.
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

    When the source was asked for server-encoded rows, ``encoded[i]`` holds
    row ``i``'s ``encoded_columns`` already as PostgreSQL COPY text fields
    (tab-separated) and ``rows[i]`` only the remaining columns, canonical.

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

    Four optional members, looked up with ``getattr``: ``configure(table_settings)``
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
    (a binlog row sits inside its transaction).
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
        copy_text: bool = False,
    ) -> Iterator[SnapshotChunk]:
        """Read the table in key order, starting after ``resume_after``.

        ``copy_text`` asks for server-encoded PostgreSQL COPY fields where the
        source can produce them exactly (see :class:`SnapshotChunk`).
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
        tables: MutableMapping[str, TableSchema],
        included: Callable[[str], bool],
        key_override: Callable[[str], tuple[str, ...] | None],
        skipped: Callable[[str], bool] = ...,
    ) -> Iterator[Event]:
        """Yield events from ``start`` on, with a :class:`Heartbeat` at least every second or so.

        ``tables`` is the engine's map of replicated shapes; the source keeps it
        current as schema changes stream by.  ``skipped(table)`` is true while
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
