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
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from warpd.errors import FatalError
from warpd.state.migrations import MIGRATIONS
from warpd.state.permissions import prepare_state_dir
from warpd.types import Column, ColumnType, Kind, TableSchema, skip_counts

STATE_FILE_NAME = "state.db"


@dataclass(frozen=True)
class SnapshotProgress:
    table: str
    status: str
    resume_after: dict[str, Any] | None
    rows_copied: int
    rows_estimated: int


@dataclass(frozen=True)
class ControlRequest:
    """Something warpctl asked a schema process to do (see warpd/engine/control.py)."""

    id: int
    schema: str
    kind: str
    args: dict[str, Any]
    status: str
    result: dict[str, Any] | None
    created_at: float
    done_at: float | None


@dataclass(frozen=True)
class BatchTable:
    """A batch-mode table's state: its high-water mark and its last (or current) run."""

    table: str
    sync: str
    mark: dict[str, Any] | None
    run_started: float | None
    run_finished: float | None
    run_status: str | None
    run_error: str | None
    rows_moved: int
    deleted: int
    duration: float | None
    last_success: float | None


@dataclass(frozen=True)
class BatchSchedule:
    run_started: float | None
    run_finished: float | None
    run_status: str | None
    next_run: float | None


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

    def __init__(self, state_dir: str, *, read_only: bool = False):
        """``read_only`` reads the file of a stopped daemon (warpctl): no directory, no migration, no writes."""
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE_NAME)
        self._local = threading.local()
        self.read_only = read_only
        if read_only:
            self._check_readable()
            return
        prepare_state_dir(state_dir, self.path)
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
            if self.read_only:
                conn = self._connect_read_only()
                self._local.conn, self._local.pid = conn, os.getpid()
                return conn
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

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            conn.execute("PRAGMA user_version").fetchone()
            return conn
        except sqlite3.OperationalError:
            # a reader who may not create the WAL index (no write access to the directory): the
            # daemon is down and checkpointed its WAL when it stopped, so read the file as it is
            conn.close()
            return sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)

    def _check_readable(self) -> None:
        if not os.path.exists(self.path):
            raise FatalError(f"there is no state file at {self.path}")
        try:
            version = self._conn().execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise FatalError(f"cannot read the state file {self.path}: {exc}") from exc
        if version != len(MIGRATIONS):
            raise FatalError(
                f"the state file {self.path} has schema version {version}, this cartridge-warp reads "
                f"{len(MIGRATIONS)}; start warpd (or cartridge-warp) once to bring it up to date"
            )

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

    def checkpoint_mark(self, schema: str) -> tuple[int, dict[str, int]]:
        """(seq, skip) of ``schema``'s checkpoint: the last streaming batch it covers, and how many row
        changes of each table after its position are applied already (``{"": n}``: n of any table, as
        recorded before the counts were kept per table); (0, {}) when there is none."""
        row = (
            self._conn()
            .execute("SELECT seq, skip, skip_tables FROM checkpoints WHERE schema_name = ?", (schema,))
            .fetchone()
        )
        return (int(row[0]), skip_counts(int(row[1]), row[2])) if row else (0, {})

    def save_checkpoint(
        self,
        schema: str,
        position: Mapping[str, Any],
        source_ts: float | None = None,
        *,
        seq: int | None = None,
        skip: Mapping[str, int] | None = None,
    ) -> None:
        """Store ``position`` (and ``skip``: row changes of each table after it already applied);
        ``seq``: the last streaming batch it covers (None keeps the stored one)."""
        counts = {t: n for t, n in (skip or {}).items() if n}
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO checkpoints (schema_name, position, source_ts, updated_at, seq, skip, skip_tables) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (schema_name) DO UPDATE SET position = excluded.position, "
                "source_ts = COALESCE(excluded.source_ts, checkpoints.source_ts), updated_at = excluded.updated_at, "
                "seq = COALESCE(?, checkpoints.seq), skip = excluded.skip, skip_tables = excluded.skip_tables",
                (
                    schema,
                    _dumps(dict(position)),
                    source_ts,
                    time.time(),
                    seq or 0,
                    sum(counts.values()),
                    _dumps(counts) if counts else None,
                    seq,
                ),
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
                "UNION SELECT schema_name FROM batch_schedule ORDER BY 1"
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
                # a copy that starts over no longer holds what its former start position says
                "copied_from = CASE WHEN excluded.status = 'pending' THEN NULL "
                "ELSE snapshot_progress.copied_from END, "
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

    def set_copied_from(self, schema: str, table: str, position: Mapping[str, Any] | None) -> None:
        """Where the change log stood before ``table``'s copy read its shape and first chunk (None: unknown).

        Every change committed at or before it is in the copy, so the stream need not replay it.
        Set when a copy starts from an empty table, kept while it resumes; ``status = 'pending'``
        clears it.
        """
        with self._tx() as conn:
            conn.execute(
                "UPDATE snapshot_progress SET copied_from = ? WHERE schema_name = ? AND table_name = ?",
                (_dumps(dict(position)) if position is not None else None, schema, table),
            )

    def copied_from(self, schema: str) -> dict[str, dict[str, Any]]:
        """Per table whose copy is complete, the position its copy started from (see set_copied_from)."""
        rows = (
            self._conn()
            .execute(
                "SELECT table_name, copied_from FROM snapshot_progress WHERE schema_name = ? "
                "AND status = 'done' AND copied_from IS NOT NULL",
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
            return self._insert_version(
                conn, schema, table, (row[0] + 1) if row else 1, change, statement, position
            )

    def record_foreign_keys(
        self, schema: str, table: TableSchema, constraints: str, position: Mapping[str, Any] | None
    ) -> int | None:
        """Store ``table``'s foreign-key actions (``constraints``, as text) as a new schema version.

        The version (change ``foreign_keys``) repeats the table's shape, so the
        latest version stays its latest shape; nothing is stored when the
        description equals the table's last recorded one.
        """
        with self._tx() as conn:
            last = conn.execute(
                "SELECT statement FROM schema_versions WHERE schema_name = ? AND table_name = ? "
                "AND change = 'foreign_keys' ORDER BY version DESC LIMIT 1",
                (schema, table.name),
            ).fetchone()
            if (last[0] if last else "") == constraints:
                return None
            row = conn.execute(
                "SELECT MAX(version) FROM schema_versions WHERE schema_name = ? AND table_name = ?",
                (schema, table.name),
            ).fetchone()
            return self._insert_version(
                conn, schema, table, (row[0] or 0) + 1, "foreign_keys", constraints, position
            )

    @staticmethod
    def _insert_version(
        conn: sqlite3.Connection,
        schema: str,
        table: TableSchema,
        version: int,
        change: str,
        statement: str | None,
        position: Mapping[str, Any] | None,
    ) -> int:
        conn.execute(
            "INSERT INTO schema_versions (schema_name, table_name, version, columns, key_columns, change, "
            "statement, position, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                schema,
                table.name,
                version,
                _schema_to_json(table),
                _dumps(list(table.key)),
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

    def dead_letters(
        self, schema: str | None = None, table: str | None = None, ids: list[int] | None = None
    ) -> list[DeadLetter]:
        sql = (
            "SELECT id, schema_name, table_name, operation, row_data, reason, position, recorded_at "
            "FROM dead_letters WHERE 1 = 1"
        )
        args: tuple[Any, ...] = ()
        if schema is not None:
            sql += " AND schema_name = ?"
            args += (schema,)
        if table is not None:
            sql += " AND table_name = ?"
            args += (table,)
        if ids is not None:
            sql += f" AND id IN ({', '.join('?' * len(ids))})"  # placeholders only; values bound
            args += tuple(ids)
        return [
            DeadLetter(
                r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], json.loads(r[6]) if r[6] else None, r[7]
            )
            for r in self._conn().execute(sql + " ORDER BY id", args).fetchall()
        ]

    def dead_letter_counts(self, schema: str) -> dict[str, int]:
        rows = (
            self._conn()
            .execute(
                "SELECT table_name, COUNT(*) FROM dead_letters WHERE schema_name = ? GROUP BY table_name",
                (schema,),
            )
            .fetchall()
        )
        return {r[0]: r[1] for r in rows}

    def remove_dead_letter(self, letter_id: int) -> None:
        """Forget a dead letter that was replayed successfully."""
        with self._tx() as conn:
            conn.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))

    def update_dead_letter(self, letter_id: int, reason: str) -> None:
        """Keep a dead letter whose replay failed, with the new reason."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE dead_letters SET reason = ?, recorded_at = ? WHERE id = ?",
                (reason, time.time(), letter_id),
            )

    # -- checkpoints of every schema (warpctl checkpoints) -----------------------
    def checkpoints(self) -> list[dict[str, Any]]:
        rows = (
            self._conn()
            .execute(
                "SELECT schema_name, position, source_ts, updated_at, seq, skip, skip_tables FROM checkpoints "
                "ORDER BY 1"
            )
            .fetchall()
        )
        return [
            {
                "schema": r[0],
                "position": json.loads(r[1]),
                "source_ts": r[2],
                "updated_at": r[3],
                "batch": int(r[4]),  # the last streamed batch it covers (the destination fence names it)
                "skip": skip_counts(int(r[5]), r[6]),  # row changes of each table after position applied
            }
            for r in rows
        ]

    # -- paused schemas and tables (warpctl pause/resume) ----------------------
    def paused(self, schema: str | None = None) -> dict[str, set[str]]:
        """Paused tables by schema; the table name ``""`` means the whole schema is paused."""
        sql = "SELECT schema_name, table_name FROM paused"
        args: tuple[str, ...] = ()
        if schema is not None:
            sql, args = sql + " WHERE schema_name = ?", (schema,)
        out: dict[str, set[str]] = {}
        for name, table in self._conn().execute(sql, args).fetchall():
            out.setdefault(name, set()).add(table)
        return out

    def set_paused(self, schema: str, table: str = "") -> bool:
        """Pause a schema (``table=""``) or one of its tables; False if it already was."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO paused (schema_name, table_name, paused_at) VALUES (?, ?, ?) "
                "ON CONFLICT (schema_name, table_name) DO NOTHING",
                (schema, table, time.time()),
            )
            return cur.rowcount > 0

    def clear_paused(self, schema: str, table: str = "", resync: bool = False) -> int | None:
        """Resume a schema or table; with ``resync``, queue a re-copy of the table in the same transaction.

        Returns the id of the queued resync request, or None when nothing was paused.
        """
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM paused WHERE schema_name = ? AND table_name = ?", (schema, table))
            if cur.rowcount == 0 or not resync:
                return None
            return self._add_request(conn, schema, "resync", {"table": table, "why": "resumed"})

    def move_paused(self, schema: str, table: str, to: str | None) -> bool:
        """A paused table was renamed to ``to`` (the pause follows it) or dropped (``to`` None: it goes).

        False when ``table`` was not paused.
        """
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM paused WHERE schema_name = ? AND table_name = ?", (schema, table))
            if cur.rowcount == 0:
                return False
            if to:
                conn.execute(
                    "INSERT INTO paused (schema_name, table_name, paused_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (schema_name, table_name) DO NOTHING",
                    (schema, to, time.time()),
                )
            return True

    # -- mode: batch (engine/batch_mode.py) ------------------------------------------
    def batch_tables(self, schema: str) -> dict[str, BatchTable]:
        rows = (
            self._conn()
            .execute(
                "SELECT table_name, sync, mark, run_started, run_finished, run_status, run_error, rows_moved, "
                "deleted, duration, last_success FROM batch_tables WHERE schema_name = ?",
                (schema,),
            )
            .fetchall()
        )
        return {r[0]: BatchTable(r[0], r[1], json.loads(r[2]) if r[2] else None, *r[3:]) for r in rows}

    def start_batch_table(self, schema: str, table: str, sync: str, started: float) -> None:
        """A run of ``table`` starts: its counters restart; its mark stays until a chunk moves it."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO batch_tables (schema_name, table_name, sync, run_started, run_status, rows_moved, "
                "deleted) VALUES (?, ?, ?, ?, 'running', 0, 0) ON CONFLICT (schema_name, table_name) DO UPDATE "
                "SET sync = excluded.sync, run_started = excluded.run_started, run_status = 'running', "
                "run_error = NULL, rows_moved = 0, deleted = 0, "
                # a table that changed sync (full refresh -> incremental) starts from no mark
                "mark = CASE WHEN batch_tables.sync = excluded.sync THEN batch_tables.mark END",
                (schema, table, sync, started),
            )

    def advance_batch_table(
        self, schema: str, table: str, mark: Mapping[str, Any] | None, rows: int, deleted: int = 0
    ) -> None:
        """Rows up to ``mark`` are committed at the destination (call only after its commit)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE batch_tables SET mark = COALESCE(?, mark), rows_moved = rows_moved + ?, "
                "deleted = deleted + ? WHERE schema_name = ? AND table_name = ?",
                (_dumps(dict(mark)) if mark is not None else None, rows, deleted, schema, table),
            )

    def finish_batch_table(self, schema: str, table: str, error: str | None, finished: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE batch_tables SET run_finished = ?, run_status = ?, run_error = ?, "
                "duration = ? - run_started, last_success = CASE WHEN ? IS NULL THEN ? ELSE last_success END "
                "WHERE schema_name = ? AND table_name = ?",
                (finished, "failed" if error else "ok", error, finished, error, finished, schema, table),
            )

    def reset_batch_mark(self, schema: str, table: str) -> None:
        """The next incremental run of ``table`` reads every row (its copy was made anew)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE batch_tables SET mark = NULL WHERE schema_name = ? AND table_name = ?",
                (schema, table),
            )

    def forget_batch_table(self, schema: str, table: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM batch_tables WHERE schema_name = ? AND table_name = ?", (schema, table))

    def batch_schedule(self, schema: str) -> BatchSchedule | None:
        row = (
            self._conn()
            .execute(
                "SELECT run_started, run_finished, run_status, next_run FROM batch_schedule WHERE schema_name = ?",
                (schema,),
            )
            .fetchone()
        )
        return BatchSchedule(*row) if row else None

    def start_batch_run(self, schema: str, started: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO batch_schedule (schema_name, run_started, run_status) VALUES (?, ?, 'running') "
                "ON CONFLICT (schema_name) DO UPDATE SET run_started = excluded.run_started, "
                "run_status = 'running'",
                (schema, started),
            )

    def finish_batch_run(self, schema: str, ok: bool, finished: float, next_run: float | None) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE batch_schedule SET run_finished = ?, run_status = ?, next_run = ? WHERE schema_name = ?",
                (finished, "ok" if ok else "failed", next_run, schema),
            )

    def set_next_batch_run(self, schema: str, next_run: float) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO batch_schedule (schema_name, next_run) VALUES (?, ?) "
                "ON CONFLICT (schema_name) DO UPDATE SET next_run = excluded.next_run",
                (schema, next_run),
            )

    # -- requests a schema process carries out (warpctl resync, dlq replay) ----
    def add_request(self, schema: str, kind: str, args: Mapping[str, Any]) -> int:
        with self._tx() as conn:
            return self._add_request(conn, schema, kind, args)

    def _add_request(self, conn: sqlite3.Connection, schema: str, kind: str, args: Mapping[str, Any]) -> int:
        cur = conn.execute(
            "INSERT INTO control_requests (schema_name, kind, args, created_at) VALUES (?, ?, ?, ?)",
            (schema, kind, _dumps(dict(args)), time.time()),
        )
        return int(cur.lastrowid or 0)

    def pending_requests(self, schema: str) -> list[ControlRequest]:
        return self._requests("schema_name = ? AND status = 'pending'", (schema,))

    def request(self, request_id: int) -> ControlRequest | None:
        found = self._requests("id = ?", (request_id,))
        return found[0] if found else None

    def _requests(self, where: str, args: tuple[Any, ...]) -> list[ControlRequest]:
        rows = (
            self._conn()
            .execute(
                "SELECT id, schema_name, kind, args, status, result, created_at, done_at "  # noqa: S608
                f"FROM control_requests WHERE {where} ORDER BY id",
                args,
            )
            .fetchall()
        )
        return [
            ControlRequest(
                r[0], r[1], r[2], json.loads(r[3]), r[4], json.loads(r[5]) if r[5] else None, r[6], r[7]
            )
            for r in rows
        ]

    def finish_request(self, request_id: int, ok: bool, result: Mapping[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE control_requests SET status = ?, result = ?, done_at = ? WHERE id = ?",
                ("done" if ok else "failed", _dumps(dict(result)), time.time(), request_id),
            )
            # keep the last few hundred for the record; they are small
            conn.execute(
                "DELETE FROM control_requests WHERE status != 'pending' AND id <= "
                "(SELECT MAX(id) FROM control_requests) - 500"
            )
