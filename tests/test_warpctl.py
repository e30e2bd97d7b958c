"""warpctl against the real warpd, MariaDB and PostgreSQL: every command, and its exit codes.

Exit codes: 0 done, 1 refused or failed, 2 usage, 3 warpd not running, 4 not allowed.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
from conftest import wait_converged
from daemon_support import Daemon, Writer, config_text, make_items, pid_alive, run_warpctl

from warpd.state.store import StateStore
from warpd.supervisor.display import when


def warpctl_as_nobody(*args: str) -> tuple[int, str]:
    """warpctl's main() in a forked process that dropped to user and group nobody (65534)."""
    from warpd.supervisor import warpctl

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.close(read)
            sys.stderr = os.fdopen(write, "w", encoding="utf-8")
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = warpctl.main(list(args))
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, encoding="utf-8") as handle:
        err = handle.read()
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def wait_until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def pg_value(dbs, table: str, key: int):
    rows = dbs.pg_rows(f'SELECT v FROM "{dbs.name}"."{table}" WHERE id = %s', (key,))
    return rows[0][0] if rows else None


# ---------------------------------------------------------------------------
# no daemon: exit 3 for every command; status, checkpoints and dlq list still tell what they know


def test_without_a_daemon_every_command_exits_3_and_reads_the_state_file(daemon_home):
    state_dir = os.path.join(daemon_home, "state")
    store = StateStore(state_dir)
    # batch 12 was cut inside a source transaction: 3 changes of orders and 2 of users after the position
    store.save_checkpoint(
        "shop",
        {"file": "mysql-bin.000007", "pos": 4711},
        1_700_000_000.0,
        seq=12,
        skip={"orders": 3, "users": 2},
    )
    store.set_snapshot_progress("shop", "orders", "done", None, 10)
    store.set_snapshot_progress("shop", "users", "running", {"id": 5}, 5, 10)
    store.set_paused("shop", "users")
    store.add_dead_letter(
        "shop", "orders", "insert", {"id": 3, "note": "x"}, "rejected by PostgreSQL: nope", None
    )
    # a batch schema's last run (docs/batch-mode.md)
    store.start_batch_run("catalog", 1_700_000_000.0)
    store.start_batch_table("catalog", "products", "incremental", 1_700_000_000.0)
    store.advance_batch_table(
        "catalog", "products", {"cursor": 41_977, "key": [41_977], "column": "id"}, 1290
    )
    store.finish_batch_table("catalog", "products", None, 1_700_000_012.5)
    store.finish_batch_run("catalog", True, 1_700_000_012.5, 1_700_000_900.0)
    store.close()
    base = ["--state-dir", state_dir]

    status = run_warpctl(*base, "status")
    assert status.returncode == 3, status.stderr
    assert "warpd is not running" in status.stderr
    shop = next(line for line in status.stdout.splitlines() if line.startswith("shop "))
    assert "not running" in shop and "mysql-bin.000007:4711" in shop
    assert any(line.startswith("  users") and "paused" in line for line in status.stdout.splitlines())
    batch = status.stdout.split("BATCH SCHEMA / TABLE", 1)[1].splitlines()
    assert (
        next(line for line in batch if line.startswith("catalog")).split()[-2:]
        == when(1_700_000_900.0).split()
    )
    products = next(line for line in batch if line.startswith("  products"))
    assert products.split()[1] == "incremental" and "1,290" in products and "12.5s" in products
    assert products.split()[-1] == "41977"

    as_json = run_warpctl(*base, "status", "--json")
    assert as_json.returncode == 3
    by_name = {entry["name"]: entry for entry in json.loads(as_json.stdout)["schemas"]}
    assert by_name["shop"]["position"] == {"file": "mysql-bin.000007", "pos": 4711}
    assert by_name["catalog"]["batch"]["next_run"] == 1_700_000_900.0
    assert by_name["catalog"]["tables"]["products"]["last_run"]["rows"] == 1290

    checkpoints = run_warpctl(*base, "checkpoints")
    assert checkpoints.returncode == 3 and "mysql-bin.000007:4711" in checkpoints.stdout
    header, shop = checkpoints.stdout.splitlines()[:2]
    assert header.split()[:4] == ["SCHEMA", "POSITION", "BATCH", "APPLIED"]
    assert shop.split()[:6] == ["shop", "mysql-bin.000007:4711", "12", "orders", "3,", "users"]
    as_json = run_warpctl(*base, "checkpoints", "--json")
    shop_json = json.loads(as_json.stdout)[0]
    assert (shop_json["batch"], shop_json["skip"]) == (12, {"orders": 3, "users": 2})

    letters = run_warpctl(*base, "dlq", "list")
    assert letters.returncode == 3 and "rejected by PostgreSQL: nope" in letters.stdout

    for command in (["reload"], ["stop"], ["pause", "shop"], ["resume", "shop"], ["resync", "shop.orders"],
                    ["dlq", "replay", "--all"]):  # fmt: skip
        result = run_warpctl(*base, *command)
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        assert "warpd is not running" in result.stderr
        assert "Traceback" not in result.stderr

    usage = run_warpctl(*base, "dlq", "replay")
    assert usage.returncode == 2 and "IDs or --all" in usage.stderr


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "1e999", "abc"])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_a_usage_error(daemon_home, value):
    # "inf" and "1e999" ended in an OverflowError traceback, "-1", "0" and "nan" in "no answer from warpd"
    result = run_warpctl("--state-dir", os.path.join(daemon_home, "state"), "--timeout", value, "status")
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "--timeout" in result.stderr and "Traceback" not in result.stderr, result.stderr


# ---------------------------------------------------------------------------
# status, checkpoints, pause/resume of a table (persisted across restarts), reload and stop


def test_status_checkpoints_table_pause_across_restarts_reload_and_stop(daemon: Daemon, dbs):
    make_items(dbs, 100)
    make_items(dbs, 100, table="other")
    daemon.write_config([dbs.name])
    daemon.start()
    entry = daemon.streaming(dbs.name)
    assert daemon.warpctl("status").returncode == 0

    text = daemon.warpctl("status").stdout.splitlines()
    assert text[0].startswith("warpd ") and f"config {daemon.config_path}" in text[0]
    assert text[2].startswith("SCHEMA / TABLE") and "LAST ERROR" in text[2]
    row = next(line for line in text if line.startswith(dbs.name))
    assert "streaming" in row and str(entry["pid"]) in row
    assert any(line.startswith("  items") and "streaming" in line for line in text)

    checkpoints = daemon.warpctl("checkpoints", "--json")
    assert checkpoints.returncode == 0
    assert [c["schema"] for c in json.loads(checkpoints.stdout)] == [dbs.name]

    paused = daemon.warpctl("pause", f"{dbs.name}.items")
    assert paused.returncode == 0 and "paused" in paused.stdout
    daemon.wait_for(dbs.name, lambda s: s["tables"]["items"]["state"] == "paused")
    dbs.sql("UPDATE items SET v = 'while paused' WHERE id = 1")
    dbs.sql("UPDATE other SET v = 'applied' WHERE id = 1")
    # the other table's change comes later in the binlog: once it is applied, items' was skipped
    wait_until(lambda: pg_value(dbs, "other", 1) == "applied", "the other table's change")
    assert pg_value(dbs, "items", 1) == "v1", "a paused table's changes are not applied"
    assert daemon.warpctl("pause", f"{dbs.name}.nosuchtable").returncode == 1

    stopped = daemon.warpctl("stop")
    assert stopped.returncode == 0 and "stopping" in stopped.stdout
    assert daemon.wait(40) == 0

    daemon.start()
    daemon.streaming(dbs.name)
    daemon.wait_for(dbs.name, lambda s: s["tables"]["items"]["state"] == "paused")
    dbs.sql("DELETE FROM items WHERE id = 2")
    dbs.sql("UPDATE other SET v = 'applied again' WHERE id = 1")
    wait_until(lambda: pg_value(dbs, "other", 1) == "applied again", "the other table's change")
    assert pg_value(dbs, "items", 2) == "v2", "still paused after a restart of warpd"

    resumed = daemon.warpctl("resume", f"{dbs.name}.items")
    assert resumed.returncode == 0, resumed.stderr
    assert "resync" in resumed.stdout
    wait_converged(dbs, None, 60)  # the skipped changes arrive: the table was copied again
    assert daemon.warpctl("resume", f"{dbs.name}.items").returncode == 1, "no longer paused"

    reloaded = daemon.warpctl("reload")
    assert reloaded.returncode == 0 and f"unchanged {dbs.name}" in reloaded.stdout
    with open(daemon.config_path, "a", encoding="utf-8") as handle:
        handle.write("bogus_key: 1\n")
    refused = daemon.warpctl("reload")
    assert refused.returncode == 1 and "bogus_key: unknown key" in refused.stderr
    assert daemon.stop() == 0


# ---------------------------------------------------------------------------
# a table's pause follows it through RENAME TABLE and goes with it on DROP TABLE


def test_a_table_pause_follows_renames_and_goes_with_a_drop(daemon: Daemon, dbs):
    make_items(dbs, 100, table="r")
    make_items(dbs, 100, table="other")
    daemon.write_config([dbs.name])
    daemon.start()
    daemon.streaming(dbs.name)
    assert daemon.warpctl("pause", f"{dbs.name}.r").returncode == 0
    daemon.wait_for(dbs.name, lambda s: s["tables"]["r"]["state"] == "paused")
    dbs.sql("UPDATE r SET v = 'while paused' WHERE id = 1")
    dbs.sql("RENAME TABLE r TO r2")
    dbs.sql("UPDATE r2 SET v = 'renamed, still paused' WHERE id = 2")
    dbs.sql("UPDATE other SET v = 'applied' WHERE id = 1")
    wait_until(lambda: pg_value(dbs, "other", 1) == "applied", "the other table's change")
    state = daemon.wait_for(dbs.name, lambda s: "r2" in s["tables"] and "r" not in s["tables"])
    assert state["tables"]["r2"]["state"] == "paused", state["tables"]
    assert pg_value(dbs, "r2", 1) == "v1" and pg_value(dbs, "r2", 2) == "v2", "paused: nothing applied"

    stale = daemon.warpctl("resume", f"{dbs.name}.r")
    assert stale.returncode == 1 and "not paused" in stale.stderr
    resumed = daemon.warpctl("resume", f"{dbs.name}.r2")
    assert resumed.returncode == 0, resumed.stderr
    wait_converged(dbs, None, 60)  # both changes made during the pause arrive
    assert (pg_value(dbs, "r2", 1), pg_value(dbs, "r2", 2)) == ("while paused", "renamed, still paused")

    make_items(dbs, 10, table="r")  # a new table of the old name is not paused
    wait_converged(dbs, None, 60)
    daemon.wait_for(dbs.name, lambda s: s["tables"].get("r", {}).get("state") == "streaming")

    assert daemon.warpctl("pause", f"{dbs.name}.r").returncode == 0
    daemon.wait_for(dbs.name, lambda s: s["tables"]["r"]["state"] == "paused")
    dbs.sql("DROP TABLE r")
    daemon.wait_for(dbs.name, lambda s: "r" not in s["tables"])
    make_items(dbs, 5, table="r")  # created again after the drop: streams
    wait_converged(dbs, None, 60)
    assert daemon.wait_for(dbs.name, lambda s: s["tables"].get("r", {}).get("state") == "streaming")
    store = StateStore(daemon.state_dir)
    try:
        assert store.paused(dbs.name) == {}
    finally:
        store.close()
    assert daemon.stop() == 0


# ---------------------------------------------------------------------------
# pausing a whole schema stops its process; resuming loses nothing


def test_pause_and_resume_a_schema(daemon: Daemon, dbs):
    make_items(dbs, 50)
    daemon.write_config([dbs.name])
    daemon.start()
    pid = daemon.streaming(dbs.name)["pid"]
    result = daemon.warpctl("pause", dbs.name)
    assert result.returncode == 0, result.stderr
    daemon.wait_for(dbs.name, lambda s: s["display"] == "paused" and s["pid"] is None)
    assert not pid_alive(pid)
    dbs.many("INSERT INTO items (id, v) VALUES (%s, %s)", [(i, "while paused") for i in range(1000, 1020)])
    time.sleep(1.0)
    assert dbs.pg_count("items") == 50, "a paused schema applies nothing"
    resumed = daemon.warpctl("resume", dbs.name)
    assert resumed.returncode == 0, resumed.stderr
    daemon.streaming(dbs.name)
    wait_converged(dbs, None, 60)
    assert daemon.stop() == 0


# ---------------------------------------------------------------------------
# resync one table while the rest keeps streaming: nothing overwritten, nothing resurrected


def test_resync_a_table_while_changes_flow(daemon: Daemon, dbs):
    make_items(dbs, 3000)
    make_items(dbs, 100, table="other")
    daemon.write_config([dbs.name], extra="snapshot_chunk_size: 150\n")
    daemon.start()
    daemon.streaming(dbs.name)
    wait_converged(dbs, None, 60)
    # the destination drifted (say, someone edited it): a resync must repair it
    dbs.pg_rows(f'UPDATE "{dbs.name}".items SET v = %s WHERE id <= 50', ("drifted",))
    dbs.pg_rows(f'DELETE FROM "{dbs.name}".items WHERE id BETWEEN 60 AND 70')
    with Writer(dbs.name) as items_writer, Writer(dbs.name, table="other", start_id=500_000):
        time.sleep(0.3)
        result = daemon.warpctl("resync", f"{dbs.name}.items")
        assert result.returncode == 0, result.stderr
        assert "resync of" in result.stdout and "started" in result.stdout
        # deletes and updates of rows the copy has not reached yet, while it runs
        dbs.sql("DELETE FROM items WHERE id BETWEEN 2900 AND 2950")
        dbs.sql("UPDATE items SET v = 'changed during the resync' WHERE id BETWEEN 2800 AND 2850")
        daemon.wait_for(
            dbs.name, lambda s: s["tables"]["items"]["state"] == "streaming", what="the resync to end"
        )
        assert items_writer.count > 0
    wait_converged(dbs, None, 60)
    log = daemon.output
    assert "resync of" in log and "copying" in log and "done" in log
    bad = daemon.warpctl("resync", f"{dbs.name}.nosuchtable")
    assert bad.returncode == 1 and "does not replicate a table" in bad.stderr
    assert daemon.warpctl("resync", dbs.name).returncode == 1, "a table must be named"
    assert daemon.stop() == 0


# ---------------------------------------------------------------------------
# dead letters: list, replay that fails again (kept, new reason), replay that succeeds (removed)


def test_dlq_list_and_replay(daemon: Daemon, dbs):
    make_items(dbs, 10)
    daemon.write_config([dbs.name])
    daemon.start()
    daemon.streaming(dbs.name)
    wait_converged(dbs, None, 60)
    # the destination refuses some rows (a constraint someone added there)
    dbs.pg_rows(f'ALTER TABLE "{dbs.name}".items ADD CONSTRAINT short_v CHECK (length(v) < 20)')
    dbs.sql("INSERT INTO items (id, v) VALUES (50, 'far too long for the destination')")
    dbs.sql("INSERT INTO items (id, v) VALUES (51, 'fine')")
    wait_until(lambda: pg_value(dbs, "items", 51) == "fine", "the good row")
    listed = daemon.warpctl("dlq", "list", "--json")
    assert listed.returncode == 0
    letters = json.loads(listed.stdout)
    assert [(letter["table"], letter["row"]["id"]) for letter in letters] == [("items", 50)]
    assert "short_v" in letters[0]["reason"]
    text = daemon.warpctl("dlq", "list", "--schema", dbs.name, "--table", "items").stdout
    assert text.splitlines()[0].split() == ["ID", "SCHEMA", "TABLE", "OP", "RECORDED", "REASON"]

    again = daemon.warpctl("dlq", "replay", str(letters[0]["id"]))
    assert again.returncode == 1, again.stdout + again.stderr
    assert "0 replayed, 1 kept" in again.stderr
    kept = json.loads(daemon.warpctl("dlq", "list", "--json").stdout)
    assert (
        len(kept) == 1 and kept[0]["reason"].startswith("replay failed:") and "short_v" in kept[0]["reason"]
    )
    assert daemon.warpctl("dlq", "replay", "999999").returncode == 1

    dbs.pg_rows(f'ALTER TABLE "{dbs.name}".items DROP CONSTRAINT short_v')
    replayed = daemon.warpctl("dlq", "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr
    assert "1 replayed, 0 kept" in replayed.stdout
    assert pg_value(dbs, "items", 50) == "far too long for the destination"
    assert json.loads(daemon.warpctl("dlq", "list", "--json").stdout) == []
    wait_converged(dbs, None, 60)
    assert daemon.stop() == 0


# ---------------------------------------------------------------------------
# who may control the daemon: the socket's owner and group


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_the_socket_is_0660_in_a_0750_directory_and_others_are_refused(daemon: Daemon, dbs):
    make_items(dbs, 1)
    socket_path = os.path.join(daemon.home, "run", "warpd.sock")
    daemon.write_config([dbs.name], extra=f"  control_socket: {socket_path}\n")
    daemon.start()
    daemon.streaming(dbs.name)
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(os.path.dirname(socket_path)).st_mode) == 0o750
    os.chmod(daemon.home, 0o755)  # the way in is open; the socket's own directory and mode decide
    code, err = warpctl_as_nobody("--socket", socket_path, "status")
    assert code == 4, (code, err)
    assert "permission denied" in err
    assert daemon.stop() == 0
    assert not os.path.exists(socket_path), "warpd removes its socket when it stops"


def test_warpd_refuses_to_start_beside_a_running_one(daemon: Daemon, dbs):
    make_items(dbs, 1)
    daemon.write_config([dbs.name])
    daemon.start()
    child = daemon.streaming(dbs.name)["pid"]

    def second(config_path: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*daemon.launcher, "--config", config_path],
            capture_output=True,
            text=True,
            env=daemon.env,
            timeout=60,
        )

    # the same state directory: refused by its lock, exit 2 (systemd does not restart it), the holder named
    same = second(daemon.config_path)
    assert same.returncode == 2, same.stderr
    assert f"is already supervised by another warpd, process {daemon.proc.pid} " in same.stderr, same.stderr
    # another state directory, but the first one's control socket
    other = os.path.join(daemon.home, "other.yaml")
    with open(other, "w", encoding="utf-8") as handle:
        handle.write(
            config_text(
                os.path.join(daemon.home, "other-state"),
                [dbs.name],
                f"  control_socket: {os.path.join(daemon.state_dir, 'warpd.sock')}\n",
            )
        )
    beside = second(other)
    assert beside.returncode == 2, beside.stderr
    assert "another warpd already listens on" in beside.stderr
    assert daemon.warpctl("status").returncode == 0, "the first one is unharmed"
    assert daemon.streaming(dbs.name)["pid"] == child, "its schema process was not replaced"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(40) == 0


# ---------------------------------------------------------------------------
# the resync's guarantees, made deterministic: the copy is held between reading a chunk and
# writing it while the stream deletes one of its rows and updates another


class _HeldSource:
    """A real source whose snapshot waits after reading each chunk until the test lets it go on."""

    def __init__(self, source):
        self._source = source
        self.read = threading.Event()
        self.go = threading.Event()

    def __getattr__(self, name):
        return getattr(self._source, name)

    def snapshot(self, *args, **kwargs):
        for chunk in self._source.snapshot(*args, **kwargs):
            self.read.set()
            assert self.go.wait(60)
            yield chunk


def test_a_resync_never_resurrects_a_deleted_row_nor_overwrites_a_newer_change(dbs, tmp_path):
    from warpd.config.model import build_config
    from warpd.engine.control import ChildControl
    from warpd.engine.resync import TableResync
    from warpd.engine.runner import SchemaRunner

    make_items(dbs, 20)
    config = build_config(
        {
            "source": {"connection_string": dbs.source_uri},
            "destination": {"connection_string": dbs.dest_uri},
            "state_dir": str(tmp_path),
            "max_batch_latency_ms": 20,
            "schemas": [{"name": dbs.name}],
        }
    )
    store = StateStore(str(tmp_path))
    stop = threading.Event()
    control = ChildControl(dbs.name, store, stop.is_set)
    runner = SchemaRunner(config, config.schemas[0], store, should_stop=stop.is_set, hooks=control)
    control.attach(runner)
    engine = threading.Thread(target=runner.run, daemon=True)
    engine.start()
    try:
        wait_until(lambda: runner.phase == "streaming", "the engine to stream")
        wait_converged(dbs, None, 60)
        resync = TableResync(runner, "items", control.lock("items"))
        source = resync._connections()[0]
        held = resync._source = _HeldSource(source)
        control._resyncs["items"] = resync
        resync.start()
        assert held.read.wait(30), "the copy read its chunk"
        # the copy now holds rows 5 and 6 as they were; the source moves on and the stream applies it
        dbs.sql("DELETE FROM items WHERE id = 5")
        dbs.sql("UPDATE items SET v = 'newer than the copy' WHERE id = 6")
        wait_until(lambda: pg_value(dbs, "items", 6) == "newer than the copy", "the streamed update")
        wait_until(lambda: (5,) in resync.deleted, "the streamed delete")
        held.go.set()
        resync.join(60)
        assert resync.outcome == "done"
        assert pg_value(dbs, "items", 5) is None, "a row deleted during the copy came back"
        assert pg_value(dbs, "items", 6) == "newer than the copy", "the copy overwrote a newer change"
        wait_converged(dbs, None, 60)
    finally:
        stop.set()
        engine.join(60)
        control.close()
        store.close()


# ---------------------------------------------------------------------------
# single mode runs the same schema body as warpd's children: stored pauses and resyncs, the status file


@pytest.fixture
def wire_db(request: pytest.FixtureRequest):
    from tests.mongo_support import MongoDatabases, backend

    for wire in backend("wire", request):
        m = MongoDatabases(wire)
        try:
            yield m
        finally:
            m.drop()


@pytest.mark.mongodb
def test_single_mode_honours_a_stored_table_pause_and_resync_and_writes_its_status(wire_db, tmp_path):
    from conftest import Warp, wait_matching

    from tests.mongo_support import mongo_converged
    from warpd.engine.status import read_status, status_path

    m = wire_db
    state_dir = str(tmp_path / "state")
    os.makedirs(state_dir)
    status_file = status_path(state_dir, m.name)
    m.db["items"].insert_many([{"_id": i, "v": f"v{i}"} for i in range(1, 101)])
    m.db["other"].insert_many([{"_id": i, "v": f"v{i}"} for i in range(1, 101)])
    config = tmp_path / "config.yaml"
    config.write_text("source: {connection_string: 'mongodb://placeholder/x'}\nmax_batch_latency_ms: 50\n")

    def value(table: str, key: int):
        query = f'SELECT v FROM "{m.name}"."{table}" WHERE _id = %s'
        rows = m.pg_rows(query, (key,))
        return rows[0][0] if rows else None

    def run() -> Warp:
        return Warp(m, state_dir, str(config), [], {}).start()  # type: ignore[arg-type]  # same attributes

    first = run()
    try:
        wait_matching(lambda: mongo_converged(m, state_dir), first, 60, passing=(Exception,))
    finally:
        assert first.stop() == 0, first.output[-4000:]

    # a pause left by warpd (warpctl pause SCHEMA.TABLE) is the state file's, whoever runs the schema next
    store = StateStore(state_dir)
    try:
        store.set_paused(m.name, "items")
    finally:
        store.close()
    w = run()
    try:

        def status() -> dict:
            assert w.alive(), w.output[-4000:]
            doc = read_status(status_file) or {}
            return doc if doc.get("pid") == w.proc.pid else {}

        wait_until(lambda: status().get("phase") == "streaming", "single mode's status file to say streaming")
        assert status()["tables"]["items"]["state"] == "paused"
        m.db["items"].update_one({"_id": 1}, {"$set": {"v": "while paused"}})
        m.db["other"].update_one({"_id": 1}, {"$set": {"v": "applied"}})
        # the other collection's change comes later in the stream: once it is applied, items' was skipped
        wait_until(lambda: value("other", 1) == "applied", "the other collection's change")
        assert value("items", 1) == "v1", "a paused table's changes are not applied in single mode"

        # warpctl resume SCHEMA.TABLE clears the pause and queues a resync; single mode carries it out
        store = StateStore(state_dir)
        try:
            request = store.clear_paused(m.name, "items", resync=True)
            assert request is not None

            def taken() -> bool:
                req = store.request(request)
                return req is not None and req.status != "pending"

            wait_until(taken, "single mode to take the stored resync request")
            assert store.request(request).status == "done", store.request(request)
        finally:
            store.close()
        wait_until(lambda: value("items", 1) == "while paused", "the table copied again")
        wait_matching(lambda: mongo_converged(m, state_dir), w, 60, passing=(Exception,))
    finally:
        assert w.stop() == 0, w.output[-4000:]
    assert "stopped cleanly" in w.output
    final = read_status(status_file)
    assert final is not None and final["pid"] == w.proc.pid and final["phase"] == "stopped"


# ---------------------------------------------------------------------------
# mode: batch under warpd: warpctl sync runs one now, status shows the runs (docs/batch-mode.md)


def test_sync_runs_a_batch_schema_now_and_status_shows_its_runs(daemon: Daemon, dbs, databases):
    make_items(dbs, 50)
    make_items(dbs, 20, table="ref")
    streamed = databases()
    make_items(streamed, 5)
    stream_entry = f"  - name: {streamed.name}\n"
    batch_entry = (
        f"  - name: {dbs.name}\n    mode: batch\n    schedule: {{every: 1h}}\n    tables:\n"
        "      - name: items\n        cursor_column: id\n        safety_lag: 0\n"
        "      - name: ref\n        sync: full_refresh\n"
    )
    text = config_text(daemon.state_dir, []).removesuffix("schemas:\n") + "schemas:\n"
    daemon.write_config([], text=text + batch_entry + stream_entry)
    daemon.start()
    daemon.streaming(streamed.name)

    def first_run_done(s):
        return all(
            (s["tables"].get(t, {}).get("last_run") or {}).get("status") == "ok" for t in ("items", "ref")
        )

    # the first run is due at start-up (never ran); the next one only in an hour
    entry = daemon.wait_for(dbs.name, first_run_done, what="the first batch run")
    wait_until(lambda: dbs.pg_count("items") == 50 and dbs.pg_count("ref") == 20, "the first run's rows")
    assert entry["tables"]["items"]["high_water_mark"] is not None
    dbs.many("INSERT INTO items (id, v) VALUES (%s, %s)", [(i, f"v{i}") for i in range(51, 61)])
    dbs.sql("DELETE FROM ref WHERE id <= 5")
    time.sleep(1.5)
    assert dbs.pg_count("items") == 50, "no run before the schedule says so"

    synced = daemon.warpctl("sync", f"{dbs.name}.items")
    assert synced.returncode == 0, synced.stderr
    assert "synced" in synced.stdout, synced.stdout
    assert dbs.pg_count("items") == 60, "warpctl sync returns once the run committed"
    assert dbs.pg_count("ref") == 20, "a table sync runs that table only"
    synced = daemon.warpctl("sync", dbs.name)
    assert synced.returncode == 0, synced.stderr
    assert dbs.pg_count("ref") == 15, "a schema sync runs every table; the full refresh drops deleted rows"

    def ran_again(s):  # the status file follows the run a moment later: wait for the finished run
        last = s["tables"]["ref"]["last_run"]
        return (
            last["started_at"] > entry["tables"]["ref"]["last_run"]["started_at"] and last["status"] == "ok"
        )

    daemon.wait_for(dbs.name, ran_again, what="the status of the last run")  # written every second or so
    status = daemon.warpctl("status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("BATCH SCHEMA / TABLE"))
    assert "HIGH-WATER MARK" in lines[header] and "NEXT RUN" in lines[header]
    schema_row = next(line for line in lines[header:] if line.startswith(dbs.name))
    assert "every 1h" in schema_row
    items_row = next(line for line in lines[header:] if line.startswith("  items"))
    assert "incremental" in items_row and " ok " in items_row and "60" in items_row
    ref_row = next(line for line in lines[header:] if line.startswith("  ref"))
    assert "full refresh" in ref_row and "15" in ref_row, status.stdout
    doc = daemon.status()
    batch_doc = next(s for s in doc["schemas"] if s["name"] == dbs.name)
    assert batch_doc["batch"]["schedule"] == "every 1h" and batch_doc["batch"]["next_run"]
    items = batch_doc["tables"]["items"]
    assert items["last_run"]["rows"] == 1, "the schema sync read again only the row at the mark (id 60)"
    assert items["high_water_mark"] == 60

    refused = daemon.warpctl("sync", streamed.name)
    assert refused.returncode == 1 and "streams (mode: stream)" in refused.stderr
    refused = daemon.warpctl("resync", f"{dbs.name}.items")
    assert refused.returncode == 1 and f"warpctl sync {dbs.name}.items runs it now" in refused.stderr
    assert daemon.warpctl("sync", f"{dbs.name}.nosuchtable").returncode == 1

    # a paused table is left out of the runs until resumed; nothing is lost meanwhile
    paused = daemon.warpctl("pause", f"{dbs.name}.ref")
    assert paused.returncode == 0 and "batch runs skip it" in paused.stdout, paused.stderr
    dbs.sql("DELETE FROM ref WHERE id <= 10")
    assert daemon.warpctl("sync", dbs.name).returncode == 0
    assert dbs.pg_count("ref") == 15, "a paused table is not run"
    refused = daemon.warpctl("sync", f"{dbs.name}.ref")
    assert refused.returncode == 1 and "is paused" in refused.stderr
    resumed = daemon.warpctl("resume", f"{dbs.name}.ref")
    assert resumed.returncode == 0, resumed.stderr
    assert daemon.warpctl("sync", f"{dbs.name}.ref").returncode == 0
    assert dbs.pg_count("ref") == 10

    # a row the destination refuses goes to the dead letters; a replay between runs writes it
    dbs.pg_rows(f'ALTER TABLE "{dbs.name}".items ADD CONSTRAINT short_v CHECK (length(v) < 20)')
    dbs.sql("INSERT INTO items (id, v) VALUES (61, 'far too long for the destination'), (62, 'fine')")
    assert daemon.warpctl("sync", f"{dbs.name}.items").returncode == 0
    assert pg_value(dbs, "items", 62) == "fine"
    letters = json.loads(daemon.warpctl("dlq", "list", "--json").stdout)
    assert [(letter["table"], str(letter["row"]["id"])) for letter in letters] == [("items", "61")]
    dbs.pg_rows(f'ALTER TABLE "{dbs.name}".items DROP CONSTRAINT short_v')
    replayed = daemon.warpctl("dlq", "replay", "--all")
    assert replayed.returncode == 0 and "1 replayed, 0 kept" in replayed.stdout, replayed.stderr
    assert pg_value(dbs, "items", 61) == "far too long for the destination"
    assert daemon.stop() == 0
