"""Foreign keys with ON DELETE / ON UPDATE actions (issue 8, item 5).

InnoDB applies CASCADE and SET NULL to child rows without writing them to the
binlog. cartridge-warp refuses such a schema by default, emulates the actions
at the destination with ``foreign_key_cascades: emulate``, or replicates
without them (with a warning) under ``ignore``. Each test runs the real
``cartridge-warp --mode single`` against MariaDB and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import Databases, Warp, write_config
from test_replication import assert_converged, pg_select, start_streaming, stop_cleanly

from warpd.config import load_config
from warpd.errors import ConfigError
from warpd.state.store import StateStore

EXIT_USAGE = 2

FAMILY = [
    "CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB",
    "CREATE TABLE child (id INT PRIMARY KEY, parent_id INT, v VARCHAR(20), "
    "CONSTRAINT fk_child FOREIGN KEY (parent_id) REFERENCES parent (id) "
    "ON DELETE CASCADE ON UPDATE CASCADE) ENGINE=InnoDB",
    "CREATE TABLE grandchild (id INT PRIMARY KEY, child_id INT, "
    "CONSTRAINT fk_grandchild FOREIGN KEY (child_id) REFERENCES child (id) ON DELETE CASCADE) ENGINE=InnoDB",
    "CREATE TABLE note (id INT PRIMARY KEY, parent_id INT NULL, "
    "CONSTRAINT fk_note FOREIGN KEY (parent_id) REFERENCES parent (id) "
    "ON DELETE SET NULL ON UPDATE SET NULL) ENGINE=InnoDB",
]


def make_family(dbs: Databases) -> None:
    for statement in FAMILY:
        dbs.sql(statement)
    dbs.many("INSERT INTO parent VALUES (%s, %s)", [(i, f"p{i}") for i in range(1, 7)])
    # two children per parent: ids 10*p and 10*p+1
    dbs.many(
        "INSERT INTO child VALUES (%s, %s, %s)",
        [(10 * p + k, p, f"c{p}.{k}") for p in range(1, 7) for k in range(2)],
    )
    dbs.many("INSERT INTO grandchild VALUES (%s, %s)", [(100 * c, c) for c in (10, 11, 20, 30, 40)])
    dbs.many("INSERT INTO note VALUES (%s, %s)", [(p, p) for p in range(1, 7)])


def recreate_parent_2(dbs: Databases) -> None:
    """In one transaction (one batch): child 100 written before parent 2 is deleted, 101 after it is back."""
    dbs.sql("BEGIN")
    dbs.sql("INSERT INTO child VALUES (100, 2, 'early')")
    dbs.sql("DELETE FROM parent WHERE id = 2")
    dbs.sql("INSERT INTO parent VALUES (2, 'again')")
    dbs.sql("INSERT INTO child VALUES (101, 2, 'late')")
    dbs.sql("COMMIT")


def ids(dbs: Databases, table: str, columns: str = "id") -> list[tuple[Any, ...]]:
    return pg_select(dbs, table, columns)


def config(tmp_path: Any, dbs: Databases, extra: str = "") -> str:
    return write_config(tmp_path, f"schemas:\n  - name: {dbs.name}\n{extra}")


# -- the setting -------------------------------------------------------------------
def test_the_setting_resolves_table_over_schema_over_top_level(tmp_path: Any) -> None:
    path = write_config(
        tmp_path,
        "source: {connection_string: 'mysql://u@h/db'}\n"
        "destination: {connection_string: 'postgresql://u@h/d'}\n"
        "foreign_key_cascades: ignore\n"
        "schemas:\n"
        "  - name: a\n"
        "    foreign_key_cascades: emulate\n"
        "    tables: [{name: t, foreign_key_cascades: refuse}]\n"
        "  - name: b\n",
    )
    config = load_config(path, environ={})
    assert config.schema("a").table_settings("t").foreign_key_cascades == "refuse"
    assert config.schema("a").table_settings("other").foreign_key_cascades == "emulate"
    assert config.schema("b").table_settings("t").foreign_key_cascades == "ignore"
    default = load_config(path, environ={"CARTRIDGE_WARP_FOREIGN_KEY_CASCADES": "refuse"})
    assert default.schema("b").table_settings("t").foreign_key_cascades == "refuse"
    with open(path, "a", encoding="utf-8") as f:
        f.write("    foreign_key_cascades: cascade\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "schemas[1].foreign_key_cascades" in str(caught.value)


# -- refuse (the default) ----------------------------------------------------------
def test_default_refuses_cascading_foreign_keys_and_names_them(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    make_family(dbs)
    w = warp()
    rc = w.wait(120)
    out = w.output
    assert rc == EXIT_USAGE, out
    assert "parent (id) -> child (parent_id) [fk_child] ON DELETE CASCADE ON UPDATE CASCADE" in out, out
    assert "child (id) -> grandchild (child_id) [fk_grandchild] ON DELETE CASCADE" in out, out
    assert "parent (id) -> note (parent_id) [fk_note] ON DELETE SET NULL ON UPDATE SET NULL" in out, out
    for choice in ("foreign_key_cascades: emulate", "table_blacklist", "foreign_key_cascades: ignore"):
        assert choice in out, out
    assert "Traceback" not in out and "internal error" not in out, out
    # refused before anything was written
    assert dbs.pg_count("parent") is None


def test_dry_run_refuses_as_start_up_would(dbs: Databases, warp: Callable[..., Warp]) -> None:
    make_family(dbs)
    w = warp(extra=["--dry-run"])
    assert w.wait(120) == EXIT_USAGE, w.output
    assert "parent (id) -> child (parent_id) [fk_child]" in w.output, w.output


def test_emulate_refuses_a_child_whose_parent_is_excluded(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    make_family(dbs)
    w = warp(config(tmp_path, dbs, "    foreign_key_cascades: emulate\n    table_blacklist: [parent]\n"))
    assert w.wait(120) == EXIT_USAGE, w.output
    assert "parent table 'parent' is excluded" in w.output, w.output
    assert "[fk_child]" in w.output and "[fk_note]" in w.output, w.output


def test_a_cascading_foreign_key_added_while_streaming_stops_the_schema(
    dbs: Databases, warp: Callable[..., Warp]
) -> None:
    dbs.sql("CREATE TABLE parent (id INT PRIMARY KEY) ENGINE=InnoDB")
    dbs.sql("CREATE TABLE child (id INT PRIMARY KEY, parent_id INT) ENGINE=InnoDB")
    w = start_streaming(warp)
    dbs.sql(
        "ALTER TABLE child ADD CONSTRAINT fk_late FOREIGN KEY (parent_id) REFERENCES parent (id) "
        "ON DELETE CASCADE"
    )
    rc = w.wait(120)
    assert rc == EXIT_USAGE, w.output
    assert "parent (id) -> child (parent_id) [fk_late] ON DELETE CASCADE" in w.output, w.output


# -- ignore ------------------------------------------------------------------------
def test_ignore_warns_and_replicates_without_the_actions(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    make_family(dbs)
    w = start_streaming(warp, config(tmp_path, dbs, "    foreign_key_cascades: ignore\n"))
    out = w.output
    assert "foreign_key_cascades: ignore" in out and "NOT replicated" in out, out
    assert "parent (id) -> child (parent_id) [fk_child]" in out, out
    assert_converged(dbs, w)
    dbs.sql("DELETE FROM parent WHERE id = 1")
    assert_converged(dbs, w, tables=["parent"])
    # the divergence the user accepted: the destination keeps the children the source cascaded away
    assert (10,) in ids(dbs, "child") and dbs.source_count("child") == 10
    stop_cleanly(w)


# -- emulate -----------------------------------------------------------------------
def test_emulate_applies_cascades_set_null_and_key_updates(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    make_family(dbs)
    dbs.sql("CREATE TABLE ord (a INT, b VARCHAR(10), PRIMARY KEY (a, b)) ENGINE=InnoDB")
    dbs.sql(
        "CREATE TABLE ord_line (id INT PRIMARY KEY, a INT, b VARCHAR(10), CONSTRAINT fk_line "
        "FOREIGN KEY (a, b) REFERENCES ord (a, b) ON DELETE CASCADE ON UPDATE CASCADE) ENGINE=InnoDB"
    )
    # a grandchild of the composite key: ON UPDATE CASCADE goes on through ord_line's own (a, b)
    dbs.sql(
        "CREATE TABLE ord_tag (id INT PRIMARY KEY, a INT, b VARCHAR(10), CONSTRAINT fk_tag "
        "FOREIGN KEY (a, b) REFERENCES ord_line (a, b) ON DELETE CASCADE ON UPDATE CASCADE) ENGINE=InnoDB"
    )
    dbs.many("INSERT INTO ord VALUES (%s, %s)", [(1, "x"), (2, "y"), (3, "tab\there")])
    dbs.many(
        "INSERT INTO ord_line VALUES (%s, %s, %s)",
        [(1, 1, "x"), (2, 1, "x"), (3, 2, "y"), (4, 3, "tab\there")],
    )
    dbs.many("INSERT INTO ord_tag VALUES (%s, %s, %s)", [(1, 1, "x"), (2, 2, "y"), (3, 3, "tab\there")])
    dbs.sql(
        "CREATE TABLE tree (id INT PRIMARY KEY, up INT NULL, CONSTRAINT fk_tree FOREIGN KEY (up) "
        "REFERENCES tree (id) ON DELETE CASCADE) ENGINE=InnoDB"
    )
    dbs.many("INSERT INTO tree VALUES (%s, %s)", [(1, None), (2, 1), (3, 2), (4, 3), (5, None), (6, 5)])
    # the batch may hold the whole test's changes: a long latency keeps them together
    w = start_streaming(
        warp, config(tmp_path, dbs, "    foreign_key_cascades: emulate\n    max_batch_latency_ms: 1500\n")
    )
    assert_converged(dbs, w)
    # string keys under a case-insensitive collation: said at start-up, since values match exactly here
    assert "[fk_line] ON DELETE CASCADE ON UPDATE CASCADE (collation utf8mb4_" in w.output, w.output
    assert "[fk_child] ON DELETE CASCADE ON UPDATE CASCADE (collation" not in w.output, w.output

    # delete: children, their grandchildren, and SET NULL on notes
    dbs.sql("DELETE FROM parent WHERE id = 1")
    # in one transaction (one batch): a child written before the parent's delete goes with it,
    # one written after the parent came back stays
    recreate_parent_2(dbs)
    # key update: ON UPDATE CASCADE rewrites the children, ON UPDATE SET NULL clears the note
    dbs.sql("UPDATE parent SET id = 30 WHERE id = 3")
    # composite keys, with a value COPY must escape
    dbs.sql("UPDATE ord SET b = 'z' WHERE a = 1")
    dbs.sql("DELETE FROM ord WHERE a = 3")
    # self-reference: the whole subtree goes
    dbs.sql("DELETE FROM tree WHERE id = 1")
    # foreign_key_checks=0: InnoDB runs no action, so the orphans stay at the source and the destination
    dbs.sql("SET SESSION foreign_key_checks = 0")
    try:
        dbs.sql("DELETE FROM parent WHERE id = 4")
    finally:
        dbs.sql("SET SESSION foreign_key_checks = 1")
    assert_converged(dbs, w)

    assert ids(dbs, "child", "id, parent_id") == [
        (30, 30),
        (31, 30),
        (40, 4),
        (41, 4),
        (50, 5),
        (51, 5),
        (60, 6),
        (61, 6),
        (101, 2),
    ]
    assert ids(dbs, "grandchild") == [(3000,), (4000,)]
    assert ids(dbs, "note", "id, parent_id") == [(1, None), (2, None), (3, None), (4, 4), (5, 5), (6, 6)]
    assert ids(dbs, "ord_line", "id, a, b") == [(1, 1, "z"), (2, 1, "z"), (3, 2, "y")]
    assert ids(dbs, "ord_tag", "id, a, b") == [(1, 1, "z"), (2, 2, "y")]
    assert ids(dbs, "tree") == [(5,), (6,)]

    # each emulated foreign key is indexed, so a cascade does not read the whole child table
    indexed = dbs.pg_rows(
        "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s AND indexname LIKE '\\_warp\\_fk\\_%%' "
        "ORDER BY 1",
        (dbs.name,),
    )
    assert [t for t, _d in indexed] == ["child", "grandchild", "note", "ord_line", "ord_tag", "tree"], indexed
    assert "(a, b)" in dict(indexed)["ord_line"]
    # the constraints were recorded with the child's schema version
    store = StateStore(w.cmd[w.cmd.index("--state-dir") + 1])
    try:
        recorded = [v for v in store.schema_history(dbs.name, "child") if v["change"] == "foreign_keys"]
    finally:
        store.close()
    assert recorded and "emulate: parent (id) -> child (parent_id) [fk_child]" in recorded[-1]["statement"]
    stop_cleanly(w)


def test_emulate_follows_a_foreign_key_added_while_streaming(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE parent (id INT PRIMARY KEY) ENGINE=InnoDB")
    dbs.sql("CREATE TABLE child (id INT PRIMARY KEY, parent_id INT) ENGINE=InnoDB")
    dbs.many("INSERT INTO parent VALUES (%s)", [(1,), (2,)])
    dbs.many("INSERT INTO child VALUES (%s, %s)", [(1, 1), (2, 1), (3, 2)])
    w = start_streaming(warp, config(tmp_path, dbs, "    foreign_key_cascades: emulate\n"))
    dbs.sql(
        "ALTER TABLE child ADD CONSTRAINT fk_late FOREIGN KEY (parent_id) REFERENCES parent (id) "
        "ON DELETE CASCADE"
    )
    dbs.sql("DELETE FROM parent WHERE id = 1")
    assert_converged(dbs, w)
    assert ids(dbs, "child") == [(3,)]
    stop_cleanly(w)


def test_emulate_with_soft_deletes_marks_the_children_deleted(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    make_family(dbs)
    w = start_streaming(
        warp,
        config(
            tmp_path,
            dbs,
            "    foreign_key_cascades: emulate\n    deletes: soft\n    metadata_columns: true\n",
        ),
    )
    assert_converged(dbs, w, soft_delete=True)
    dbs.sql("DELETE FROM parent WHERE id = 1")
    assert_converged(dbs, w, soft_delete=True)
    # the rows are kept and marked, as a delete of them would have
    marked = ids(dbs, "child", "id, _warp_deleted_at IS NOT NULL, _warp_op")
    assert marked[:3] == [(10, True, "delete"), (11, True, "delete"), (20, False, "snapshot")]
    assert ids(dbs, "grandchild", "id, _warp_deleted_at IS NOT NULL")[:3] == [
        (1000, True),
        (1100, True),
        (2000, False),
    ]
    # a child written again under the deleted parent's key comes back
    dbs.sql("INSERT INTO parent VALUES (1, 'back')")
    dbs.sql("INSERT INTO child VALUES (10, 1, 'back')")
    assert_converged(dbs, w, soft_delete=True)
    assert ids(dbs, "child", "id, _warp_deleted_at IS NULL, v")[0] == (10, True, "back")
    stop_cleanly(w)


def test_emulate_quotes_hostile_names(dbs: Databases, warp: Callable[..., Warp], tmp_path: Any) -> None:
    # no '%' in the MySQL names: the snapshot's query formatting does not take it yet (reported)
    dbs.sql('CREATE TABLE `pa"rent ?` (`i d` INT PRIMARY KEY) ENGINE=InnoDB')
    dbs.sql(
        'CREATE TABLE `chi``ld; DROP` (id INT PRIMARY KEY, `fk "col"` INT, CONSTRAINT `fk %s` '
        'FOREIGN KEY (`fk "col"`) REFERENCES `pa"rent ?` (`i d`) ON DELETE SET NULL) ENGINE=InnoDB'
    )
    dbs.many('INSERT INTO `pa"rent ?` VALUES (%s)', [(1,), (2,)])
    dbs.many("INSERT INTO `chi``ld; DROP` VALUES (%s, %s)", [(1, 1), (2, 2)])
    w = start_streaming(
        warp, config(tmp_path, dbs, "    foreign_key_cascades: emulate\n    metadata_columns: true\n")
    )
    dbs.sql('DELETE FROM `pa"rent ?` WHERE `i d` = 1')
    assert_converged(dbs, w)
    assert ids(dbs, "chi`ld; DROP", 'id, "fk ""col""", _warp_op') == [(1, None, "update"), (2, 2, "snapshot")]
    stop_cleanly(w)


def test_emulate_converges_when_the_changes_are_replayed(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """A crash before the checkpoint replays batches whose cascades were already applied."""
    make_family(dbs)
    path = config(tmp_path, dbs, "    foreign_key_cascades: emulate\n")
    w = start_streaming(warp, path)
    file, pos = dbs.sql("SHOW MASTER STATUS")[0][:2]
    recreate_parent_2(dbs)
    dbs.sql("DELETE FROM parent WHERE id = 1")
    dbs.sql("UPDATE parent SET id = 50 WHERE id = 5")
    assert_converged(dbs, w)
    stop_cleanly(w)
    store = StateStore(w.cmd[w.cmd.index("--state-dir") + 1])
    try:
        store.save_checkpoint(dbs.name, {"file": file, "pos": int(pos)})
    finally:
        store.close()
    dbs.sql("INSERT INTO child VALUES (102, 2, 'after restart')")
    w = start_streaming(warp, path)
    assert_converged(dbs, w)
    assert ids(dbs, "child", "id, parent_id")[-3:] == [(61, 6), (101, 2), (102, 2)]
    stop_cleanly(w)


def test_emulate_restarts_a_copy_of_the_child_beside_the_stream(
    dbs: Databases, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A resync of the child holds rows the cascade then deletes: it must not write them afterwards."""
    import threading

    from conftest import wait_converged, wait_until
    from test_warpctl import _HeldSource

    from warpd.config.model import build_config
    from warpd.engine.control import ChildControl
    from warpd.engine.resync import TableResync
    from warpd.engine.runner import SchemaRunner

    make_family(dbs)
    config = build_config(
        {
            "source": {"connection_string": dbs.source_uri},
            "destination": {"connection_string": dbs.dest_uri},
            "state_dir": str(tmp_path),
            "max_batch_latency_ms": 20,
            "foreign_key_cascades": "emulate",
            "schemas": [{"name": dbs.name}],
        }
    )
    store = StateStore(str(tmp_path))
    stop = threading.Event()
    control = ChildControl(dbs.name, store, stop.is_set)
    runner = SchemaRunner(config, config.schemas[0], store, should_stop=stop.is_set, hooks=control)
    control.attach(runner)
    control.start()  # carries out the resync the cascade asks for below
    engine = threading.Thread(target=runner.run, daemon=True)
    engine.start()
    try:
        wait_until(lambda: runner.phase == "streaming", 60, "the engine to stream")
        wait_converged(dbs, None, 60)
        resync = TableResync(runner, "child", control.lock("child"))
        held = resync._source = _HeldSource(resync._connections()[0])
        control._resyncs["child"] = resync
        resync.start()
        assert held.read.wait(30), "the copy read its chunk"
        # the copy holds children 10 and 11; their parent goes, and InnoDB deletes them unlogged
        dbs.sql("DELETE FROM parent WHERE id = 1")
        wait_until(lambda: (1,) not in ids(dbs, "parent"), 60, "the streamed delete")
        held.go.set()
        resync.join(60)
        assert resync.outcome == "done"
        assert (10,) not in ids(dbs, "child"), "a child deleted by the cascade came back with the copy"
        # the grandchildren of 10 and 11 could not be found from the emptied child: copied again
        wait_converged(dbs, None, 60)
        assert "copying 'grandchild' again so it matches the source" in caplog.text
    finally:
        stop.set()
        engine.join(60)
        control.close()
        store.close()
