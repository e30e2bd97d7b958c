"""What a source and a destination must provide, and the events between them.

A source produces, in source order, :class:`RowChange`, :class:`Truncate` and
:class:`SchemaChange` events, each carrying the source :data:`Position`
*after* which it is safe to resume.  The engine batches them, applies them to
a destination, and stores the position of the last applied event as the
checkpoint.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from warpd.types import Column, TableSchema

Position = Mapping[str, Any]
"""A JSON-serialisable source position, opaque to everything but its source."""

Row = dict[str, Any]


class Op(enum.StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    SNAPSHOT = "snapshot"  # a row read by the initial snapshot


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


@dataclass
class SnapshotChunk:
    """Rows of one table read by the initial snapshot, in key order."""

    table: str
    rows: list[Row]
    resume_after: Mapping[str, Any] | None  # key of the last row, None when keyless
    done: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What the core needs to know about a destination without checking its class."""

    max_identifier_bytes: int
    transactional_ddl: bool
    supports_soft_delete: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)


class Source(abc.ABC):
    """A database whose changes are captured."""

    @abc.abstractmethod
    def check_prerequisites(self) -> None:
        """Raise :class:`~warpd.errors.FatalError` naming the fix if capture cannot work."""

    @abc.abstractmethod
    def list_tables(self) -> list[str]:
        """Names of every table in the source namespace."""

    @abc.abstractmethod
    def describe(self, table: str, key_columns: tuple[str, ...] | None = None) -> TableSchema:
        """The table's current shape; ``key_columns`` overrides the primary key."""

    @abc.abstractmethod
    def current_position(self) -> Position:
        """The position of the change log's end, captured before a snapshot."""

    @abc.abstractmethod
    def estimate_rows(self, table: str) -> int:
        """A cheap row-count estimate for progress display."""

    @abc.abstractmethod
    def snapshot(self, schema: TableSchema, resume_after: Mapping[str, Any] | None,
                 chunk_size: int) -> Iterator[SnapshotChunk]:
        """Read the table in key order, starting after ``resume_after``."""

    @abc.abstractmethod
    def stream(self, start: Position, tables: Iterable[str]) -> Iterator[Event]:
        """Yield events from ``start`` onwards until :meth:`close` is called.

        Must yield :class:`Heartbeat` at least every second or so when quiet,
        so the engine can flush, checkpoint and notice a stop request.
        """

    @abc.abstractmethod
    def close(self) -> None:
        ...


class Destination(abc.ABC):
    """A database that receives the changes."""

    capabilities: Capabilities

    @abc.abstractmethod
    def prepare(self, schema: TableSchema) -> list[str]:
        """Create the target schema and table if missing (or reconcile it); return the DDL run."""

    @abc.abstractmethod
    def plan_ddl(self, schema: TableSchema) -> list[str]:
        """The DDL :meth:`prepare` would run, without running it (for ``--dry-run``)."""

    @abc.abstractmethod
    def apply(self, schema: TableSchema, upserts: list[tuple[Row, RowChange | None]],
              deletes: list[Row], source_ts: float | None) -> None:
        """Apply final row states in one transaction: upsert full rows, delete by key."""

    @abc.abstractmethod
    def truncate(self, schema: TableSchema) -> None:
        ...

    @abc.abstractmethod
    def apply_schema_change(self, change: SchemaChange, old: TableSchema | None,
                            new: TableSchema | None) -> list[str]:
        """Apply one structural change; return the DDL run."""

    @abc.abstractmethod
    def close(self) -> None:
        ...
