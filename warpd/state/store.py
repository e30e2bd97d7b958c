"""The state file: one SQLite database (WAL) per state directory.

Only this module touches sqlite3.  Connections are per thread and opened
lazily, so a store created before ``fork()`` is safe to use after it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from warpd.errors import FatalError
from warpd.state.migrations import MIGRATIONS
from warpd.types import Column, ColumnType, Kind, TableSchema

STATE_FILE_NAME = "state.db"


@dataclass(frozen=True)
class SnapshotProgress:
    table: str
    status: str
    resume_after: dict[str, Any] | None
    rows_copied: int
    rows_estimated: int


@dataclass(frozen=True)
class DeadLetter:
    id: int
    schema: str
    table: str
    operation: str
    row: dict[str, Any]
    reason: str
    position: dict[str, Any] | None
    recorded_at: float


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _column_to_json(c: Column) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": c.name,
        "kind": c.type.kind.value,
        "bits": c.type.bits,
        "precision": c.type.precision,
        "scale": c.type.scale,
        "length": c.type.length,
        "nullable": c.nullable,
        "source_type": c.source_type,
        "generated": c.generated,
        "charset": c.charset,
    }
    if c.path is not None:
        # only when set: a shape without paths keeps its JSON, so no spurious new schema version
        out["path"] = list(c.path)
    return out


def _schema_to_json(schema: TableSchema) -> str:
    return _dumps([_column_to_json(c) for c in schema.columns])


def _schema_from_json(name: str, columns: str, key: str) -> TableSchema:
    cols = tuple(
        Column(
            name=c["name"],
            type=ColumnType(Kind(c["kind"]), c["bits"], c["precision"], c["scale"], c["length"]),
            nullable=c["nullable"],
            source_type=c["source_type"],
            generated=c["generated"],
            charset=c.get("charset"),
            path=tuple(c["path"]) if c.get("path") is not None else None,
        )
        for c in json.loads(columns)
    )
    return TableSchema(name=name, columns=cols, key=tuple(json.loads(key)))


class StateStore:
    """Checkpoints, snapshot progress, schema versions and dead letters of every schema."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE_NAME)
        self._local = threading.local()
        try:
            os.makedirs(state_dir, exist_ok=True)
        except OSError as exc:
            raise FatalError(
                f"cannot create the state directory {state_dir!r}: {exc.strerror}; "
                "set state_dir (or CARTRIDGE_WARP_STATE_DIR / --state-dir) to a writable "
                "directory"
            ) from exc
        if not os.access(state_dir, os.W_OK):
            raise FatalError(
                f"the state directory {state_dir!r} is not writable by this user; set "
                "state_dir (or CARTRIDGE_WARP_STATE_DIR / --state-dir) to a writable directory"
            )
        self._migrate()

    # -- connections ---------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a checkpoint must survive power loss
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        try:
            # Readers (tests, a status command) must not queue for the write lock a
            # running (or stopped) writer may hold: only migrate when there is work.
            if self._conn().execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
                return
            with self._tx() as conn:
                current = conn.execute("PRAGMA user_version").fetchone()[0]
                if current > len(MIGRATIONS):
                    raise FatalError(
                        f"the state file {self.path} was written by a newer cartridge-warp "
                        f"(schema version {current}); upgrade this installation"
                    )
                for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {number:d}")
        except sqlite3.DatabaseError as exc:
            raise FatalError(f"the state file {self.path} is unusable: {exc}") from exc

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- checkpoints ---------------------------------------------------------
    def checkpoint(self, schema: str) -> dict[str, Any] | None:
        row = (
            self._conn()
            .execute("SELECT position FROM checkpoints WHERE schema_name = ?", (schema,))
            .fetchone()
        )
        return json.loads(row[0]) if row else None

    def save_checkpoint(
        self, schema: str, position: Mapping[str, Any], source_ts: float | None = None
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO checkpoints (schema_name, position, source_ts, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (schema_name) DO UPDATE SET position = excluded.position, "
                "source_ts = COALESCE(excluded.source_ts, checkpoints.source_ts), updated_at = excluded.updated_at",
                (schema, _dumps(dict(position)), source_ts, time.time()),
            )

    def reset_schema(self, schema: str) -> None:
        """Forget checkpoint and snapshot progress (re-snapshot); schema history is kept."""
        with self._tx() as conn:
            conn.execute("DELETE FROM checkpoints WHERE schema_name = ?", (schema,))
            conn.execute("DELETE FROM snapshot_progress WHERE schema_name = ?", (schema,))

    def schemas(self) -> list[str]:
        rows = (
            self._conn()
            .execute(
                "SELECT schema_name FROM checkpoints UNION SELECT schema_name FROM snapshot_progress "
                "ORDER BY 1"
            )
            .fetchall()
        )
        return [r[0] for r in rows]

    # -- snapshot progress ---------------------------------------------------
    def snapshot_progress(self, schema: str) -> dict[str, SnapshotProgress]:
        rows = (
            self._conn()
            .execute(
                "SELECT table_name, status, resume_after, rows_copied, rows_estimated FROM snapshot_progress "
                "WHERE schema_name = ?",
                (schema,),
            )
            .fetchall()
        )
        return {
            r[0]: SnapshotProgress(r[0], r[1], json.loads(r[2]) if r[2] else None, r[3], r[4]) for r in rows
        }

    def set_snapshot_progress(
        self,
        schema: str,
        table: str,
        status: str,
        resume_after: Mapping[str, Any] | None,
        rows_copied: int,
        rows_estimated: int | None = None,
    ) -> None:
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO snapshot_progress (schema_name, table_name, status, resume_after, rows_copied, "
                "rows_estimated, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (schema_name, table_name) DO UPDATE SET status = excluded.status, "
                "resume_after = excluded.resume_after, rows_copied = excluded.rows_copied, "
                "rows_estimated = COALESCE(?, snapshot_progress.rows_estimated), "
                "updated_at = excluded.updated_at",
                (
                    schema,
                    table,
                    status,
                    _dumps(dict(resume_after)) if resume_after is not None else None,
                    rows_copied,
                    rows_estimated or 0,
                    now,
                    now,
                    rows_estimated,
                ),
            )

    def set_copied_at(self, schema: str, table: str, position: Mapping[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE snapshot_progress SET copied_at = ? WHERE schema_name = ? AND table_name = ?",
                (_dumps(dict(position)), schema, table),
            )

    def copied_at(self, schema: str) -> dict[str, dict[str, Any]]:
        """Per table, the source position read right after its last copy."""
        rows = (
            self._conn()
            .execute(
                "SELECT table_name, copied_at FROM snapshot_progress WHERE schema_name = ? "
                "AND copied_at IS NOT NULL",
                (schema,),
            )
            .fetchall()
        )
        return {r[0]: json.loads(r[1]) for r in rows}

    def forget_snapshot(self, schema: str, table: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "DELETE FROM snapshot_progress WHERE schema_name = ? AND table_name = ?", (schema, table)
            )

    # -- schema versions -----------------------------------------------------
    def record_schema_version(
        self,
        schema: str,
        table: TableSchema,
        change: str,
        statement: str | None = None,
        position: Mapping[str, Any] | None = None,
    ) -> int | None:
        """Store ``table`` as a new version if it differs from the latest; return the version number."""
        columns, key = _schema_to_json(table), _dumps(list(table.key))
        with self._tx() as conn:
            row = conn.execute(
                "SELECT version, columns, key_columns FROM schema_versions WHERE schema_name = ? "
                "AND table_name = ? ORDER BY version DESC LIMIT 1",
                (schema, table.name),
            ).fetchone()
            if row and row[1] == columns and row[2] == key and change not in ("drop_table",):
                return None
            version = (row[0] + 1) if row else 1
            conn.execute(
                "INSERT INTO schema_versions (schema_name, table_name, version, columns, key_columns, change, "
                "statement, position, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    schema,
                    table.name,
                    version,
                    columns,
                    key,
                    change,
                    statement,
                    _dumps(dict(position)) if position is not None else None,
                    time.time(),
                ),
            )
            return version

    def latest_schemas(self, schema: str) -> dict[str, TableSchema]:
        """The newest recorded shape of every table of ``schema`` that was not dropped."""
        rows = (
            self._conn()
            .execute(
                "SELECT table_name, columns, key_columns, change FROM schema_versions v WHERE schema_name = ? "
                "AND version = (SELECT MAX(version) FROM schema_versions w WHERE w.schema_name = v.schema_name "
                "AND w.table_name = v.table_name)",
                (schema,),
            )
            .fetchall()
        )
        return {r[0]: _schema_from_json(r[0], r[1], r[2]) for r in rows if r[3] != "drop_table"}

    def schema_history(self, schema: str, table: str | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT table_name, version, columns, key_columns, change, statement, position, recorded_at "
            "FROM schema_versions WHERE schema_name = ?"
        )
        args: tuple[Any, ...] = (schema,)
        if table is not None:
            sql += " AND table_name = ?"
            args += (table,)
        rows = self._conn().execute(sql + " ORDER BY id", args).fetchall()
        return [
            {
                "table": r[0],
                "version": r[1],
                "columns": json.loads(r[2]),
                "key": json.loads(r[3]),
                "change": r[4],
                "statement": r[5],
                "position": json.loads(r[6]) if r[6] else None,
                "recorded_at": r[7],
            }
            for r in rows
        ]

    # -- dead letters --------------------------------------------------------
    def add_dead_letter(
        self,
        schema: str,
        table: str,
        operation: str,
        row: Mapping[str, Any],
        reason: str,
        position: Mapping[str, Any] | None,
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO dead_letters (schema_name, table_name, operation, row_data, reason, position, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    schema,
                    table,
                    operation,
                    _dumps(dict(row)),
                    reason,
                    _dumps(dict(position)) if position is not None else None,
                    time.time(),
                ),
            )

    def dead_letters(self, schema: str | None = None) -> list[DeadLetter]:
        sql = (
            "SELECT id, schema_name, table_name, operation, row_data, reason, position, recorded_at "
            "FROM dead_letters"
        )
        args: tuple[Any, ...] = ()
        if schema is not None:
            sql += " WHERE schema_name = ?"
            args = (schema,)
        return [
            DeadLetter(
                r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], json.loads(r[6]) if r[6] else None, r[7]
            )
            for r in self._conn().execute(sql + " ORDER BY id", args).fetchall()
        ]
