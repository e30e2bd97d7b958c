"""A third-party destination installed as a plugin: the SQLite example of docs/examples/warp_sqlite.

The package is "installed" the way pip lays it out (the module plus a
``.dist-info`` with ``entry_points.txt``) into a directory put on PYTHONPATH,
so the test runs what a user who ran ``pip install docs/examples/warp_sqlite``
would: the entry point, the URI check, the engine writing through the plugin.
"""

from __future__ import annotations

import configparser
import datetime as dt
import importlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT, Databases, Warp, wait_matching, write_config

EXAMPLE = Path(ROOT) / "docs" / "examples" / "warp_sqlite"
MODULE = "warp_sqlite_destination"


def install(site: Path) -> None:
    """Lay the example package out in ``site`` as an installer would, entry points from its pyproject.toml."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    shutil.copy(EXAMPLE / f"{MODULE}.py", site / f"{MODULE}.py")
    info = site / f"warp_sqlite-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    entry_points = configparser.ConfigParser()
    entry_points.optionxform = str  # type: ignore[assignment, method-assign]
    entry_points.read_dict(project["entry-points"])
    with open(info / "entry_points.txt", "w") as f:
        entry_points.write(f)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "site"
    path.mkdir()
    install(path)
    yield path
    sys.modules.pop(MODULE, None)


def plugin(site: Path) -> ModuleType:
    """The installed plugin module, imported here to read the destination as warpd.verify does."""
    sys.path.insert(0, str(site))
    try:
        return importlib.import_module(MODULE)
    finally:
        sys.path.remove(str(site))


def differences(dbs: Databases, dest: Any, tables: list[str], soft_delete: bool = False) -> list[str]:
    from warpd.connectors.mysql.source import MySQLSource
    from warpd.verify import table_difference

    source = MySQLSource(dbs.source_uri, dbs.name, server_id=998)
    problems = []
    try:
        for table in tables:
            plan = dest.plan(source.describe(table), dbs.name, soft_delete=soft_delete, metadata=False)
            problem = table_difference(source, dest, plan)
            if problem:
                problems.append(problem)
    finally:
        source.close()
        dest.close()
    return problems


def start_into_sqlite(
    dbs: Databases, tmp_path: Path, site: Path, db_file: Path, config: str | None = None
) -> Warp:
    """``python -m warpd --mode single`` from the test's MariaDB database into ``db_file`` (the plugin's)."""
    state = tmp_path / "state"
    state.mkdir()
    w = Warp(dbs, str(state), config, [], {"PYTHONPATH": f"{ROOT}:{site}"})
    w.cmd[w.cmd.index(dbs.dest_uri)] = f"sqlite://{db_file}"
    return w.start()


def test_validate_config_accepts_the_installed_sqlite_plugin(tmp_path: Path, site: Path) -> None:
    config = write_config(
        tmp_path,
        "source:\n"
        '  connection_string: "mysql://warp:warp@127.0.0.1:3306/shop"\n'
        "destination:\n"
        "  type: sqlite\n"
        f'  connection_string: "sqlite://{tmp_path}/x.db"\n'
        "schemas:\n"
        "  - name: shop\n",
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{site}"}
    run = [sys.executable, "-m", "warpd", "--config", config, "--validate-config"]
    ok = subprocess.run(run, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the plugin's own URI check judges its connection string
    Path(config).write_text(Path(config).read_text().replace(f"sqlite://{tmp_path}/x.db", "sqlite://x.db"))
    bad = subprocess.run(run, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "sqlite:///path/to/file.db" in bad.stderr


def test_replicates_into_sqlite_through_the_plugin(dbs: Databases, tmp_path: Path, site: Path) -> None:
    dbs.sql(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(30,10), "
        "big BIGINT UNSIGNED, ratio DOUBLE, born DATE, seen DATETIME(6), took TIME(3), "
        "raw VARBINARY(16), doc JSON, flag BOOLEAN, at TIMESTAMP(3) NULL, bits BIT(5), tags SET('a', 'b'), "
        "small FLOAT, u CHAR(36))"
    )
    dbs.sql("CREATE TABLE notes (body TEXT, n INT)")  # no primary key: rows keyed by their hash
    row = "INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    dbs.many(
        row,
        [
            (
                i,
                f"name {i} \t'\"",
                Decimal("12345678901234567890.0123456789") + i,
                2**64 - 1 - i,
                1 / 3 + i,
                dt.date(1999, 12, 31),
                dt.datetime(2024, 2, 29, 23, 59, 59, 123456),
                dt.timedelta(hours=-838, minutes=-59),
                bytes([0, 255, i]),
                '{"a": [1, 2.5, "x"], "b": null}',
                i % 2,
                dt.datetime(2038, 1, 19, 3, 14, 7, 999000),
                i,
                "a,b" if i % 2 else "",
                1.5,
                "123e4567-e89b-12d3-a456-426614174000",
            )
            for i in range(1, 21)
        ],
    )
    dbs.many("INSERT INTO notes VALUES (%s, %s)", [("same", 1), ("same", 1), (None, 2)])
    db_file = tmp_path / "x.db"
    w = start_into_sqlite(dbs, tmp_path, site, db_file)
    try:
        module = plugin(site)

        def matching() -> list[str]:
            return differences(dbs, module.SQLiteDestination(str(db_file)), ["items", "notes"])

        wait_matching(matching, w, 90, passing=(sqlite3.OperationalError,))
        # changes while streaming
        dbs.sql("UPDATE items SET name = 'renamed', price = NULL, doc = '[]' WHERE id = 3")
        dbs.sql("DELETE FROM items WHERE id IN (4, 5)")
        dbs.many(
            row,
            [
                (
                    99,
                    "new",
                    Decimal("-0.0000000001"),
                    0,
                    -0.0,
                    None,
                    None,
                    None,
                    b"",
                    "{}",
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                )
            ],
        )
        dbs.sql("DELETE FROM notes WHERE n = 2")
        dbs.sql("INSERT INTO notes VALUES ('later', 3)")
        wait_matching(matching, w, 90, passing=(sqlite3.OperationalError,))
        # schema changes followed in place
        dbs.sql("ALTER TABLE items ADD COLUMN note VARCHAR(20)")
        dbs.sql("ALTER TABLE items RENAME COLUMN name TO title")
        dbs.sql("UPDATE items SET note = 'added', title = 'again' WHERE id = 6")
        # INT -> DECIMAL widens, but SQLite would hold the values in another storage class:
        # the plugin refuses to convert in place and the engine copies the table again
        dbs.sql("ALTER TABLE notes MODIFY n DECIMAL(30,2)")
        dbs.sql("INSERT INTO notes VALUES ('after', 4.25)")
        wait_matching(matching, w, 90, passing=(sqlite3.OperationalError,))
        assert w.stop() == 0, w.output[-4000:]
        assert 'RENAME COLUMN "name" TO "title"' in w.output  # followed in place, not by a copy
        assert "could not apply modify_column to 'notes' in place" in w.output
    finally:
        if w.alive():
            w.kill()
    assert differences(dbs, module.SQLiteDestination(str(db_file)), ["items", "notes"]) == []
    with sqlite3.connect(db_file) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {f"{dbs.name}__items", f"{dbs.name}__notes"} <= names
        assert conn.execute(f'SELECT count(*) FROM "{dbs.name}__items"').fetchone()[0] == 19


def test_soft_deletes_and_metadata_columns_in_sqlite(dbs: Databases, tmp_path: Path, site: Path) -> None:
    dbs.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    dbs.many("INSERT INTO t VALUES (%s, %s)", [(1, "a"), (2, "b"), (3, "c")])
    db_file = tmp_path / "x.db"
    config = write_config(
        tmp_path, f"schemas:\n  - name: {dbs.name}\n    deletes: soft\n    metadata_columns: true\n"
    )
    w = start_into_sqlite(dbs, tmp_path, site, db_file, config)
    try:
        module = plugin(site)

        def matching() -> list[str]:
            return differences(dbs, module.SQLiteDestination(str(db_file)), ["t"], soft_delete=True)

        wait_matching(matching, w, 90, passing=(sqlite3.OperationalError,))
        dbs.sql("DELETE FROM t WHERE id IN (1, 2)")
        dbs.sql("INSERT INTO t VALUES (2, 'back')")
        dbs.sql("UPDATE t SET v = 'changed' WHERE id = 3")
        wait_matching(matching, w, 90, passing=(sqlite3.OperationalError,))
        assert w.stop() == 0, w.output[-4000:]
    finally:
        if w.alive():
            w.kill()
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute(
            "SELECT id, v, _warp_op, _warp_deleted_at IS NOT NULL, _warp_synced_at IS NOT NULL "
            f'FROM "{dbs.name}__t" ORDER BY id'
        ).fetchall()
    # the deleted row is kept and marked; the row inserted again is live
    assert rows == [(1, "a", "delete", 1, 1), (2, "back", "insert", 0, 1), (3, "changed", "update", 0, 1)]
