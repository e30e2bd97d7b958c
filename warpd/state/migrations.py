"""Numbered migrations of the state file's schema.

Append new migrations; never edit a released one.  Each runs in its own
transaction and bumps ``PRAGMA user_version``.
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: checkpoints, snapshot progress, schema versions, dead letters
    """
    CREATE TABLE checkpoints (
        schema_name TEXT PRIMARY KEY,
        position    TEXT NOT NULL,          -- JSON, opaque to everything but the source
        source_ts   REAL,                   -- source time of the last applied change
        updated_at  REAL NOT NULL
    );
    CREATE TABLE snapshot_progress (
        schema_name    TEXT NOT NULL,
        table_name     TEXT NOT NULL,
        status         TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done')),
        resume_after   TEXT,                -- JSON key of the last committed row
        rows_copied    INTEGER NOT NULL DEFAULT 0,
        rows_estimated INTEGER NOT NULL DEFAULT 0,
        started_at     REAL,
        updated_at     REAL NOT NULL,
        PRIMARY KEY (schema_name, table_name)
    );
    CREATE TABLE schema_versions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        schema_name TEXT NOT NULL,
        table_name  TEXT NOT NULL,
        version     INTEGER NOT NULL,
        columns     TEXT NOT NULL,          -- JSON list of {name, type, nullable, source_type}
        key_columns TEXT NOT NULL,          -- JSON list
        change      TEXT NOT NULL,          -- what happened: snapshot, add_column, ...
        statement   TEXT,                   -- the source DDL, when there was one
        position    TEXT,                   -- JSON source position of the change
        recorded_at REAL NOT NULL,
        UNIQUE (schema_name, table_name, version)
    );
    CREATE TABLE dead_letters (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        schema_name TEXT NOT NULL,
        table_name  TEXT NOT NULL,
        operation   TEXT NOT NULL,
        row_data    TEXT NOT NULL,          -- JSON of the row image, values as text
        reason      TEXT NOT NULL,
        position    TEXT,
        recorded_at REAL NOT NULL
    );
    CREATE INDEX dead_letters_by_table ON dead_letters (schema_name, table_name);
    """,
    # 2: where the change log stood right after a table's last copy (see Source.table_copied)
    """
    ALTER TABLE snapshot_progress ADD COLUMN copied_at TEXT;
    """,
    # 3: warpctl: paused schemas and tables (they stay paused across restarts), and requests
    #    (resync a table, replay dead letters) that a schema process carries out when it runs
    """
    CREATE TABLE paused (
        schema_name TEXT NOT NULL,
        table_name  TEXT NOT NULL,          -- '' pauses the whole schema
        paused_at   REAL NOT NULL,
        PRIMARY KEY (schema_name, table_name)
    );
    CREATE TABLE control_requests (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        schema_name TEXT NOT NULL,
        kind        TEXT NOT NULL,          -- resync | dlq_replay
        args        TEXT NOT NULL,          -- JSON
        status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
        result      TEXT,                   -- JSON, once carried out
        created_at  REAL NOT NULL,
        done_at     REAL
    );
    CREATE INDEX control_requests_pending ON control_requests (schema_name, status);
    """,
    # 4: where the change log stood before a table's copy started (its shape read, its first
    #    chunk not yet): replayed events at or before it are already in the copy (engine/runner.py)
    """
    ALTER TABLE snapshot_progress ADD COLUMN copied_from TEXT;
    """,
    # 5: mode: batch (engine/batch_mode.py): each table's high-water mark, committed only after the
    #    destination committed the rows it covers, and the last run of each table and schema
    """
    CREATE TABLE batch_tables (
        schema_name   TEXT NOT NULL,
        table_name    TEXT NOT NULL,
        sync          TEXT NOT NULL,        -- incremental | full_refresh
        mark          TEXT,                 -- JSON, the source's: where the next incremental run reads from
        run_started   REAL,                 -- the run in progress or last run
        run_finished  REAL,
        run_status    TEXT,                 -- running | ok | failed
        run_error     TEXT,
        rows_moved    INTEGER NOT NULL DEFAULT 0,
        deleted       INTEGER NOT NULL DEFAULT 0,
        duration      REAL,
        last_success  REAL,
        PRIMARY KEY (schema_name, table_name)
    );
    CREATE TABLE batch_schedule (
        schema_name   TEXT PRIMARY KEY,
        run_started   REAL,                 -- the scheduled run in progress or last started
        run_finished  REAL,
        run_status    TEXT,
        next_run      REAL
    );
    """,
    # 6: the batch sequence number of the checkpoint and the row changes after its position it covers
    #    (a batch cut inside a source transaction); the destination fence names batches by seq
    """
    ALTER TABLE checkpoints ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE checkpoints ADD COLUMN skip INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: those row changes counted per table (JSON {table: n}; NULL: ``skip`` is a total of any table),
    #    so a resume under other table filters skips exactly the changes of each table applied already
    """
    ALTER TABLE checkpoints ADD COLUMN skip_tables TEXT;
    """,
)
