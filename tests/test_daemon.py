"""The warpd supervisor as an operator meets it: the real daemon against the local MariaDB and PostgreSQL.

Every test starts ``warpd`` (or ``cartridge-warp --mode multi``) as a
subprocess with short backoff and heartbeat settings, and judges it by what a
user notices: rows at the destination, pids, exit codes, status lines, logs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from conftest import PG_DSN, ROOT, wait_converged
from conftest import wait_until as poll
from daemon_support import (
    Daemon,
    DestinationLock,
    TcpProxy,
    Writer,
    config_text,
    make_items,
    pid_alive,
    proc_title,
    schema_connections,
)


def _converged(d, timeout: float = 60) -> None:
    wait_converged(d, None, timeout)


# ---------------------------------------------------------------------------
# 1. a child killed with SIGKILL is restarted, with backoff; nothing is lost


def test_kill9_of_a_child_restarts_it_and_loses_nothing(daemon: Daemon, dbs, databases):
    other = databases()
    for d in (dbs, other):
        make_items(d, 300)
    daemon.write_config([dbs.name, other.name])
    daemon.start()
    first = daemon.streaming(dbs.name)
    other_pid = daemon.streaming(other.name)["pid"]
    with Writer(dbs.name) as writer:
        wait_until_count(writer, 50)
        os.kill(first["pid"], signal.SIGKILL)
        again = daemon.wait_for(
            dbs.name,
            lambda s: s["pid"] not in (None, first["pid"]) and s["display"] == "streaming" and s["live"],
            what="a new process, streaming again",
        )
        wait_until_count(writer, writer.count + 50)  # changes keep flowing into the new process
    assert again["restarts"] == 1
    assert not pid_alive(first["pid"])
    _converged(dbs)
    _converged(other)
    assert daemon.schema(other.name)["pid"] == other_pid, "the other schema's process must not be touched"
    log = daemon.output
    assert f"process {first['pid']} killed by SIGKILL; failure 1, restarting in" in log
    assert daemon.stop() == 0


def wait_until_count(writer: Writer, n: int) -> None:
    deadline = time.monotonic() + 60
    while writer.count < n:
        assert time.monotonic() < deadline, "the writer made no progress"
        if writer.error:
            raise writer.error
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# 2. SIGHUP: add one schema, remove another, while changes flow; an invalid file is refused


def test_sighup_adds_and_removes_schemas_while_changes_flow(daemon: Daemon, dbs, databases):
    removed, added = databases(), databases()
    for d in (dbs, removed, added):
        make_items(d, 200)
    daemon.write_config([dbs.name, removed.name])
    daemon.start()
    kept_pid = daemon.streaming(dbs.name)["pid"]
    removed_pid = daemon.streaming(removed.name)["pid"]
    with Writer(dbs.name) as kept_writer, Writer(added.name):
        wait_until_count(kept_writer, 30)
        daemon.write_config([dbs.name, added.name])
        daemon.signal(signal.SIGHUP)
        daemon.streaming(added.name)
        daemon.wait_for(dbs.name, lambda s: True)
        wait_until(lambda: daemon.schema(removed.name) is None, "the removed schema to go")
        wait_until_count(kept_writer, kept_writer.count + 30)
    assert not pid_alive(removed_pid), "the removed schema's process must stop"
    assert daemon.schema(dbs.name)["pid"] == kept_pid, "an unchanged schema keeps its process"
    _converged(dbs)
    _converged(added)
    assert (
        f"reloaded (SIGHUP): started {added.name}; stopped {removed.name}; restarted none; unchanged {dbs.name}"
        in (daemon.output)
    )

    # an invalid file on reload: refused with the reason, the running configuration stays in force
    with open(daemon.config_path, "a", encoding="utf-8") as handle:
        handle.write("    batch_size: 0\n")
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "reload (SIGHUP) refused" in daemon.output, "the refusal in the log")
    assert "batch_size: 0 is less than the minimum of 1" in daemon.output
    dbs.sql("INSERT INTO items (id, v) VALUES (%s, %s)", (555_555, "after the refused reload"))
    _converged(dbs)
    assert daemon.schema(dbs.name)["pid"] == kept_pid
    assert daemon.schema(added.name)["live"]
    assert daemon.stop() == 0


def wait_until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# ---------------------------------------------------------------------------
# 3. SIGTERM: the batch in flight is committed; the next start resumes, no re-copy


def test_sigterm_commits_and_the_next_start_resumes_without_copying_again(daemon: Daemon, dbs):
    make_items(dbs, 500)
    daemon.write_config([dbs.name])
    daemon.start()
    daemon.streaming(dbs.name)
    with Writer(dbs.name) as writer:
        wait_until_count(writer, 100)
        daemon.signal(signal.SIGTERM)
        # the supervisor exits 0 within supervisor.stop_timeout (20 s in these tests)
        assert daemon.wait(timeout=20 + 10) == 0, daemon.tail()
    from warpd.state.store import StateStore

    store = StateStore(daemon.state_dir, read_only=True)
    assert store.checkpoint(dbs.name) is not None
    store.close()
    # a re-copy would overwrite this row; resuming from the checkpoint leaves it alone
    dbs.pg_rows(f'UPDATE "{dbs.name}".items SET v = %s WHERE id = 1', ("edited at the destination",))
    dbs.many(
        "INSERT INTO items (id, v) VALUES (%s, %s)", [(i, "while stopped") for i in range(900_000, 900_050)]
    )
    first_log = daemon.output
    daemon.start()
    daemon.streaming(dbs.name)
    wait_until(
        lambda: dbs.pg_rows(f'SELECT count(*) FROM "{dbs.name}".items WHERE id >= 900000')[0][0] == 50,
        "the rows inserted while warpd was stopped",
    )
    assert dbs.pg_rows(f'SELECT v FROM "{dbs.name}".items WHERE id = 1')[0][0] == "edited at the destination"
    assert "tables to copy" in first_log and "tables to copy" not in daemon.output
    dbs.sql("UPDATE items SET v = 'edited at the source' WHERE id = 1")
    _converged(dbs)  # and everything the writer changed before the stop arrived too
    assert daemon.stop() == 0


# ---------------------------------------------------------------------------
# 4. a schema that cannot start is shown as crash-looping; the others run on


def test_crash_looping_schema_has_a_status_line_and_the_others_keep_running(daemon: Daemon, dbs):
    make_items(dbs, 10)
    text = f"  - name: broken\n    source_database: warp_no_such_db_{os.getpid()}\n"  # the database does not exist
    daemon.write_config([dbs.name], schema_extra="")
    with open(daemon.config_path, "a", encoding="utf-8") as handle:
        handle.write(text)
    daemon.start()
    good_pid = daemon.streaming(dbs.name)["pid"]
    daemon.wait_for("broken", lambda s: s["state"] == "crash-looping", what="broken to be crash-looping")
    result = daemon.warpctl("status")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("broken "))
    assert "crash-looping (next try in" in line
    assert "does not exist" in line
    assert "warp:warp@" not in result.stdout, "no password in status output"
    dbs.sql("INSERT INTO items (id, v) VALUES (7777, 'still replicated')")
    _converged(dbs)
    assert daemon.schema(dbs.name)["pid"] == good_pid
    assert daemon.stop() == 0


# ---------------------------------------------------------------------------
# 5. a hung child (no heartbeat) is killed and restarted like a crashed one


def test_a_hung_child_is_killed_and_restarted(daemon: Daemon, dbs):
    make_items(dbs, 10)
    daemon.write_config([dbs.name])
    daemon.start()
    hung = daemon.streaming(dbs.name)["pid"]
    os.kill(hung, signal.SIGSTOP)  # alive, but its loop no longer moves
    fresh = daemon.wait_for(
        dbs.name, lambda s: s["pid"] not in (None, hung) and s["live"], timeout=60, what="a new process"
    )
    assert not pid_alive(hung)
    assert "no heartbeat for" in daemon.output
    assert fresh["restarts"] == 1
    dbs.sql("INSERT INTO items (id, v) VALUES (4242, 'after the hang')")
    _converged(dbs)
    assert daemon.stop() == 0


def test_a_long_statement_is_not_a_hang_and_status_shows_what_the_process_waits_for(daemon: Daemon, dbs):
    make_items(dbs, 10)
    daemon.write_config(
        [dbs.name],
        text=config_text(daemon.state_dir, [dbs.name]).replace(
            "heartbeat_timeout: 8", "heartbeat_timeout: 3"
        ),
    )
    daemon.start()
    pid = daemon.streaming(dbs.name)["pid"]
    with DestinationLock(dbs) as lock:
        dbs.sql("INSERT INTO items (id, v) VALUES (6001, 'behind the lock')")
        poll(lock.waiters, 60, "the schema process to wait for the destination lock")
        waiting_since = time.monotonic()
        busy = daemon.wait_for(dbs.name, lambda s: s["busy"] is not None, what="status to show it busy")
        assert busy["pid"] == pid
        assert busy["busy"]["what"] == f"writing 1 rows to {dbs.name}.items"
        text = daemon.warpctl("status").stdout
        assert "streaming, busy for" in text and f"s: writing 1 rows to {dbs.name}.items" in text, text
        # hold the lock for three heartbeat timeouts and more
        time.sleep(max(0.0, 10 - (time.monotonic() - waiting_since)))
        assert lock.waiters() == 1, "the same statement still waits"
    wait_converged(dbs, None, 60)
    entry = daemon.wait_for(dbs.name, lambda s: s["busy"] is None, what="status to show it idle again")
    assert (entry["pid"], entry["restarts"]) == (pid, 0), daemon.tail()
    assert "no heartbeat" not in daemon.output
    assert daemon.stop() == 0


def test_status_shows_the_retries_of_a_destination_outage_and_clears_them_once_it_is_over(
    daemon: Daemon, dbs
):
    make_items(dbs, 10)
    with TcpProxy() as proxy:
        text = config_text(daemon.state_dir, [dbs.name]).replace(PG_DSN, proxy.dsn)
        text += "retry:\n  max_attempts: 1000\n  initial_delay_seconds: 0.2\n  max_delay_seconds: 1\n"
        daemon.write_config([dbs.name], text=text)
        daemon.start()
        pid = daemon.streaming(dbs.name)["pid"]
        proxy.cut()  # the destination is unreachable: open connections drop, new ones are refused
        dbs.sql("INSERT INTO items (id, v) VALUES (7001, 'during the outage')")
        during = daemon.wait_for(
            dbs.name,
            lambda s: s["retrying"] is not None and s["last_error"],
            what="status to show the retries",
        )
        retry = during["retrying"]
        assert retry["what"] == f"writing 1 rows to {dbs.name}.items"
        assert retry["failures"] >= 1 and retry["max_attempts"] == 1000
        assert "PostgreSQL" in retry["error"] or "server closed the connection" in retry["error"], retry
        shown = daemon.warpctl("status").stdout
        assert f"streaming, retrying: writing 1 rows to {dbs.name}.items (failed " in shown, shown
        assert "warp:warp@" not in shown and "warp:warp@" not in json.dumps(during)
        proxy.restore()
        after = daemon.wait_for(
            dbs.name,
            lambda s: s["retrying"] is None and s["display"] == "streaming",
            what="status to show plain streaming again",
        )
        assert after["last_error"] is None, after
        assert (after["pid"], after["restarts"]) == (pid, 0)
        wait_converged(dbs, None, 60)
        assert daemon.stop() == 0


# ---------------------------------------------------------------------------
# 5b. one writer per schema: children die with their master, even inside a statement; a second
#     process for the same schema and state directory refuses to start


def test_the_children_of_a_killed_master_die_with_it_even_inside_a_long_statement(daemon: Daemon, dbs):
    make_items(dbs, 10)
    daemon.write_config([dbs.name])
    daemon.start()
    child = daemon.streaming(dbs.name)["pid"]
    with DestinationLock(dbs) as lock:
        dbs.sql("INSERT INTO items (id, v) VALUES (5001, 'written after the lock')")
        poll(lock.waiters, 60, "the schema process to wait for the destination lock")
        daemon.signal(signal.SIGKILL)
        daemon.wait(10)
        # the child cannot see its master go from inside the statement; the kernel kills it
        poll(lambda: not pid_alive(child), 60, f"schema process {child} to die with its master")
    # its session, granted the lock now, finds its client gone: nothing of the dead child stays connected
    poll(lambda: schema_connections(dbs) == 0, 60, "the dead child's PostgreSQL sessions to end")
    daemon.start()  # the replacement takes over and loses nothing
    assert daemon.streaming(dbs.name)["pid"] != child
    _converged(dbs)
    assert daemon.stop() == 0


def test_a_second_process_for_the_same_schema_and_state_directory_refuses_to_start(warp, dbs):
    make_items(dbs, 10)
    first = warp()
    poll(lambda: "streaming changes" in first.output or not first.alive(), 60, "the first process to stream")
    assert first.alive(), first.output
    second = warp()
    assert second.wait(60) == 2, second.output
    assert "already replicated from the state directory" in second.output
    assert f"by process {first.proc.pid} " in second.output, second.output
    assert first.alive()
    dbs.sql("INSERT INTO items (id, v) VALUES (5002, 'still the first writer')")
    wait_converged(dbs, first, 60)
    assert first.stop() == 0


# ---------------------------------------------------------------------------
# 6. SIGQUIT stops at once


def test_sigquit_kills_the_children_and_exits(daemon: Daemon, dbs):
    make_items(dbs, 10)
    daemon.write_config([dbs.name])
    daemon.start()
    pid = daemon.streaming(dbs.name)["pid"]
    daemon.signal(signal.SIGQUIT)
    assert daemon.wait(timeout=10) == 0
    assert not pid_alive(pid)
    assert "SIGQUIT: killing every schema process now" in daemon.output


# ---------------------------------------------------------------------------
# 7. cartridge-warp --mode multi: titles, JSON logs with the schema, level from the environment, systemd


def test_multi_mode_titles_json_logs_and_systemd_notifications(daemon_home, dbs):
    make_items(dbs, 10)
    notify_path = os.path.join(daemon_home, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(30)
    daemon = Daemon(
        daemon_home,
        launcher=[sys.executable, "-m", "warpd", "--mode", "multi"],
        env={
            "CARTRIDGE_WARP_MONITORING__LOG_FORMAT": "json",
            "CARTRIDGE_WARP_MONITORING__LOG_LEVEL": "DEBUG",
            "NOTIFY_SOCKET": notify_path,
            "WATCHDOG_USEC": "1000000",
        },
    )
    daemon.write_config([dbs.name])
    try:
        daemon.start()
        messages = Notifications(listener)
        assert messages.wait_for("READY=1")
        assert messages.wait_for("WATCHDOG=1")
        entry = daemon.streaming(dbs.name)
        assert proc_title(daemon.proc.pid) == "warpd: master"
        wait_until(lambda: proc_title(entry["pid"]) == f"warpd: schema {dbs.name} [streaming]", "the title")
        daemon.signal(signal.SIGHUP)
        reloading = messages.wait_for("RELOADING=1")
        assert "MONOTONIC_USEC=" in reloading
        assert messages.wait_for("READY=1")
        daemon.signal(signal.SIGTERM)
        assert messages.wait_for("STOPPING=1")
        assert daemon.wait(30) == 0
    finally:
        listener.close()
        if daemon.alive():
            daemon.signal(signal.SIGKILL)
    lines = [json.loads(line) for line in daemon.output.splitlines() if line.strip()]
    assert any(doc["level"] == "DEBUG" for doc in lines), "CARTRIDGE_WARP_MONITORING__LOG_LEVEL=DEBUG applies"
    child_lines = [doc for doc in lines if doc.get("schema") == dbs.name]
    assert any("streaming changes" in doc["msg"] for doc in child_lines)
    assert "warp:warp@" not in daemon.output, "no password in any log line"


class Notifications:
    def __init__(self, sock: socket.socket):
        self.sock = sock

    def wait_for(self, field: str) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = self.sock.recv(4096).decode()
            if field in message.splitlines():
                return message
        raise AssertionError(f"no {field} from warpd")


# ---------------------------------------------------------------------------
# 8. invalid configuration at start; the systemd installer


def test_invalid_configuration_exits_2_and_names_the_problem(daemon: Daemon, dbs):
    daemon.write_config([dbs.name], extra="supervisor_typo: 1\n")
    daemon.start()
    assert daemon.wait(30) == 2
    assert "supervisor_typo: unknown key" in daemon.output
    assert not os.path.exists(os.path.join(daemon.state_dir, "warpd.sock"))


def test_install_systemd_script_is_idempotent(tmp_path):
    root = tmp_path / "root"
    bindir = os.path.dirname(sys.executable)  # the venv's warpd and cartridge-warp
    cmd = [
        "bash",
        os.path.join(ROOT, "scripts", "install-systemd.sh"),
        "--root",
        str(root),
        "--bindir",
        bindir,
    ]
    for _ in range(2):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    unit = (root / "etc/systemd/system/warpd.service").read_text()
    assert "Type=notify" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert f"ExecStart={bindir}/warpd --config /etc/cartridge-warp/config.yaml" in unit
    assert (root / "etc/systemd/system/warpd@.service").exists()
    if shutil.which("systemd-analyze"):
        instance = tmp_path / "warpd@shop.service"  # a template verifies as an instance
        instance.write_text((root / "etc/systemd/system/warpd@.service").read_text())
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(root / "etc/systemd/system/warpd.service"), str(instance)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    assert (root / "etc/cartridge-warp/config.yaml").exists()
    env = root / "etc/cartridge-warp/env"
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    # a second run keeps an edited configuration
    (root / "etc/cartridge-warp/config.yaml").write_text("# mine\n")
    subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    assert (root / "etc/cartridge-warp/config.yaml").read_text() == "# mine\n"
