"""The supervisor's logic without forking: the state machine, reload by diff, sd_notify, status tables.

A :class:`FakeSystem` stands in for fork/kill/waitpid and the clocks (as
supervisor's tests use DummyOptions), so time moves only when a test says so.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
from typing import Any

import pytest

from warpd.config import SupervisorConfig
from warpd.config.model import build_config
from warpd.supervisor import display
from warpd.supervisor.master import Supervisor
from warpd.supervisor.sdnotify import Notifier
from warpd.supervisor.states import ChildProcess, Goal, State, restart_delay

POLICY = SupervisorConfig(
    restart_backoff_base=1.0,
    restart_backoff_cap=16.0,
    crash_loop_threshold=4,
    crash_loop_window=100.0,
    healthy_after=30.0,
    heartbeat_timeout=10.0,
    stop_timeout=5.0,
)


class FakeSystem:
    def __init__(self) -> None:
        self.now = 1000.0
        self._pids = itertools.count(100)
        self.spawned: list[int] = []
        self.kills: list[tuple[int, int]] = []
        self.exits: list[tuple[int, int]] = []
        self.rand = 0.5  # no jitter

    def spawn(self, target: Any) -> int:
        pid = next(self._pids)
        self.spawned.append(pid)
        return pid

    def kill(self, pid: int, sig: int) -> None:
        self.kills.append((pid, sig))

    def reap(self) -> list[tuple[int, int]]:
        out, self.exits = self.exits, []
        return out

    def wait(self, pid: int) -> int:
        return -9

    def monotonic(self) -> float:
        return self.now

    def random(self) -> float:
        return self.rand


def child(system: FakeSystem, policy: SupervisorConfig = POLICY) -> ChildProcess:
    return ChildProcess("shop", lambda: 0, "fp", policy, system)


def die(c: ChildProcess, system: FakeSystem, code: int = 1) -> None:
    c.exited(code, system.now)


# ---------------------------------------------------------------------------
# backoff


def test_restart_delay_doubles_up_to_the_cap_and_jitter_stays_within_20_percent():
    assert [restart_delay(POLICY, n, False, 0.5) for n in range(1, 7)] == [1, 2, 4, 8, 16, 16]
    assert restart_delay(POLICY, 3, False, 0.0) == pytest.approx(4 * 0.8)
    assert restart_delay(POLICY, 3, False, 1.0) == pytest.approx(4 * 1.2)
    assert restart_delay(POLICY, 10, False, 1.0) == 16, "never above the cap"
    assert restart_delay(POLICY, 1, True, 0.5) == 16, "a crash loop retries at the cap"
    assert restart_delay(POLICY, 10_000, False, 0.5) == 16


def test_a_child_starts_and_counts_as_running_once_it_heartbeats():
    system = FakeSystem()
    c = child(system)
    c.tick(system.now)
    assert c.state is State.STARTING and c.pid == 100
    system.now += 1
    c.tick(system.now)
    assert c.state is State.STARTING, "no heartbeat yet"
    c.heartbeat = system.now
    c.tick(system.now)
    assert c.state is State.RUNNING


def test_a_dead_child_backs_off_then_restarts_after_the_delay_not_before():
    system = FakeSystem()
    c = child(system)
    c.tick(system.now)
    die(c, system)
    assert c.state is State.BACKOFF and c.pid is None
    system.now += 0.9
    c.tick(system.now)
    assert c.state is State.BACKOFF and system.spawned == [100]
    system.now += 0.2
    c.tick(system.now)
    assert c.state is State.STARTING and system.spawned == [100, 101]
    assert c.restarts == 1
    die(c, system)
    assert c.next_start == pytest.approx(system.now + 2), "the second failure waits twice as long"


def test_too_many_deaths_make_it_crash_looping_retried_at_the_cap_and_others_keep_running():
    system = FakeSystem()
    broken, healthy = child(system), ChildProcess("crm", lambda: 0, "fp", POLICY, system)
    healthy.tick(system.now)
    healthy.heartbeat = system.now
    for _ in range(4):
        broken.tick(system.now)
        die(broken, system)
        system.now = broken.next_start or system.now
        healthy.heartbeat = system.now
        healthy.tick(system.now)
    assert broken.state is State.CRASHLOOP
    assert broken.describe(system.now - 3).startswith("crash-looping (next try in")
    assert broken.next_start is not None
    # retried at the cap, not given up
    broken.tick(broken.next_start)
    assert broken.state is State.STARTING
    die(broken, system)
    assert broken.state is State.CRASHLOOP and broken.next_start == pytest.approx(system.now + 16)
    assert healthy.state is State.RUNNING and healthy.pid == 100


def test_deaths_outside_the_window_do_not_count_towards_a_crash_loop():
    system = FakeSystem()
    c = child(system)
    for _ in range(6):
        c.tick(system.now)
        die(c, system)
        system.now = (c.next_start or system.now) + 60  # each death 60+ s after the last
    assert c.state is State.BACKOFF


def test_a_healthy_period_resets_the_backoff():
    system = FakeSystem()
    c = child(system)
    for _ in range(3):
        c.tick(system.now)
        die(c, system)
        system.now = c.next_start or system.now
    assert c.attempt == 3
    c.tick(system.now)
    c.heartbeat = system.now
    c.tick(system.now)
    assert c.state is State.RUNNING
    system.now += 31
    c.heartbeat = system.now
    c.tick(system.now)
    assert c.attempt == 0
    die(c, system)
    assert c.next_start == pytest.approx(system.now + 1), "back to the base delay"


def test_exit_code_2_is_fatal_and_not_restarted_until_asked():
    system = FakeSystem()
    c = child(system)
    c.tick(system.now)
    die(c, system, code=2)
    assert c.state is State.FATAL
    system.now += 3600
    c.tick(system.now)
    assert system.spawned == [100], "a configuration error is not restarted in a loop"
    c.retry()  # reload or warpctl resume
    c.tick(system.now)
    assert c.state is State.STARTING and system.spawned == [100, 101]


def test_no_heartbeat_for_the_timeout_kills_the_child_and_it_restarts_like_a_crash():
    system = FakeSystem()
    c = child(system)
    c.tick(system.now)
    c.heartbeat = system.now
    c.tick(system.now)
    system.now += 10.5
    c.tick(system.now)
    assert system.kills == [(100, signal.SIGKILL)]
    assert c.kill_reason == "no heartbeat for 10s"
    c.tick(system.now + 1)
    assert system.kills == [(100, signal.SIGKILL)], "killed once"
    die(c, system, code=-9)
    assert c.state is State.BACKOFF
    assert c.last_exit == "killed by SIGKILL (no heartbeat for 10s)"


def test_a_child_that_never_heartbeats_is_killed_too():
    system = FakeSystem()
    c = child(system)
    c.tick(system.now)
    system.now += 11
    c.tick(system.now)
    assert system.kills == [(100, signal.SIGKILL)]


def test_stop_sends_sigterm_then_sigkill_after_stop_timeout():
    system = FakeSystem()
    c = child(system)
    c.tick(system.now)
    c.heartbeat = system.now
    c.goal = Goal.STOP
    c.tick(system.now)
    assert c.state is State.STOPPING and system.kills == [(100, signal.SIGTERM)]
    system.now += 4.9
    c.heartbeat = None  # a stopping child is not judged by heartbeats
    c.tick(system.now)
    assert system.kills == [(100, signal.SIGTERM)]
    system.now += 0.2
    c.tick(system.now)
    assert system.kills == [(100, signal.SIGTERM), (100, signal.SIGKILL)]
    die(c, system, code=-9)
    assert c.state is State.STOPPED
    c.tick(system.now + 100)
    assert system.spawned == [100], "a stopped child stays stopped"


def test_a_changed_configuration_stops_the_old_process_before_starting_the_new_one():
    system = FakeSystem()
    c = child(system)
    c.tick(system.now)
    c.reconfigure(lambda: 0, "fp2")
    c.tick(system.now)
    assert system.kills == [(100, signal.SIGTERM)]
    c.tick(system.now + 1)
    assert system.spawned == [100], "never two writers on one schema"
    die(c, system, code=0)
    assert c.fingerprint == "fp2"
    c.tick(system.now)
    assert system.spawned == [100, 101]


def test_pause_stops_the_child_and_keeps_it_stopped_until_resumed():
    system = FakeSystem()
    c = child(system)
    c.tick(system.now)
    c.goal = Goal.PAUSE
    c.tick(system.now)
    die(c, system, code=0)
    assert c.state is State.PAUSED
    c.tick(system.now + 100)
    assert system.spawned == [100]
    c.goal = Goal.RUN
    c.tick(system.now)
    assert system.spawned == [100, 101]


# ---------------------------------------------------------------------------
# reload by diff, through the master with a fake system (nothing forks)


def _config(state_dir: str, schemas: list[dict[str, Any]]) -> Any:
    return build_config(
        {
            "source": {"connection_string": "mysql://warp:pw@127.0.0.1:3306"},
            "destination": {"connection_string": "postgresql://warp:pw@127.0.0.1/warp_test"},
            "state_dir": state_dir,
            "schemas": schemas,
        }
    )


def _supervisor(tmp_path: Any, schemas: list[dict[str, Any]]) -> tuple[Supervisor, FakeSystem]:
    system = FakeSystem()
    config_path = str(tmp_path / "config.yaml")
    master = Supervisor(_config(str(tmp_path), schemas), config_path, system=system)  # type: ignore[arg-type]
    for schema in master.config.schemas:
        master._add(schema.name, master.config)
    for c in master.children.values():
        c.tick(system.now)
    return master, system


def test_reload_acts_only_on_what_changed(tmp_path):
    master, system = _supervisor(tmp_path, [{"name": "keep"}, {"name": "drop"}, {"name": "tune"}])
    pids = {name: c.pid for name, c in master.children.items()}
    new = _config(str(tmp_path), [{"name": "keep"}, {"name": "tune", "batch_size": 10}, {"name": "new"}])
    result = master._apply(new, "test")
    assert result["data"] == {
        "added": ["new"],
        "removed": ["drop"],
        "changed": ["tune"],
        "unchanged": ["keep"],
    }
    master._tick()
    assert master.children["keep"].pid == pids["keep"]
    assert (pids["keep"], signal.SIGTERM) not in system.kills
    assert (pids["drop"], signal.SIGTERM) in system.kills
    assert (pids["tune"], signal.SIGTERM) in system.kills
    assert master.children["new"].state is State.STARTING
    # the changed schema starts again only once its old process is gone; the removed one is forgotten
    system.exits = [(pids["drop"], 0), (pids["tune"], 0)]
    master._tick()
    assert "drop" not in master.children
    master._tick()
    assert master.children["tune"].state is State.STARTING and master.children["tune"].pid != pids["tune"]


def test_an_invalid_file_on_reload_is_refused_and_nothing_changes(tmp_path):
    master, system = _supervisor(tmp_path, [{"name": "keep"}])
    (tmp_path / "config.yaml").write_text("source: {connection_string: 'mysql://h/db'}\nschemas: []\n")
    result = master.reload("test")
    assert result["ok"] is False
    assert "destination.connection_string: required" in result["error"]
    assert "schemas: must list at least 1 entry" in result["error"]
    assert list(master.children) == ["keep"] and system.kills == []


def test_state_dir_cannot_change_on_reload(tmp_path):
    master, _system = _supervisor(tmp_path, [{"name": "keep"}])
    (tmp_path / "config.yaml").write_text(
        "source: {connection_string: 'mysql://h:3306'}\ndestination: {connection_string: 'postgresql://h/d'}\n"
        f"state_dir: {tmp_path / 'elsewhere'}\nschemas: [{{name: keep}}]\n"
    )
    result = master.reload("test")
    assert result["ok"] is False and "state_dir: cannot change while warpd runs" in result["error"]


def test_schema_and_table_targets_allow_dots_in_schema_names(tmp_path):
    master, _system = _supervisor(tmp_path, [{"name": "a"}, {"name": "a.b"}])
    assert master.commands._target_of("a.b") == ("a.b", "")
    assert master.commands._target_of("a.b.c") == ("a.b", "c")
    assert master.commands._target_of("a.c") == ("a", "c")
    with pytest.raises(Exception, match="names no configured schema"):
        master.commands._target_of("zzz.t")


# ---------------------------------------------------------------------------
# sd_notify and the status tables


def test_sd_notify_datagrams(tmp_path):
    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(5)
    try:
        notifier = Notifier(
            {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
        )
        notifier.ready("2 schemas")
        assert listener.recv(1024).decode() == "READY=1\nSTATUS=2 schemas"
        notifier.reloading()
        fields = listener.recv(1024).decode().splitlines()
        assert fields[0] == "RELOADING=1" and fields[1].startswith("MONOTONIC_USEC=")
        notifier.watchdog(100.0)
        assert listener.recv(1024).decode() == "WATCHDOG=1"
        notifier.watchdog(100.5)  # half of 2 s has not passed
        notifier.watchdog(101.0)
        assert listener.recv(1024).decode() == "WATCHDOG=1"
        notifier.status("same")
        notifier.status("same")
        notifier.stopping()
        assert listener.recv(1024).decode() == "STATUS=same"
        assert listener.recv(1024).decode() == "STOPPING=1\nSTATUS=stopping"
    finally:
        listener.close()
    assert not Notifier({}).enabled
    assert (
        Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval
        is None
    )


def test_status_table_is_aligned_and_readable():
    doc = {
        "schemas": [
            {
                "name": "shop",
                "display": "streaming",
                "pid": 4242,
                "position": {"file": "mysql-bin.000012", "pos": 4711},
                "lag_seconds": 0.42,
                "events_per_second": 1234.5,
                "rows_applied": 1_000_000,
                "restarts": 0,
                "last_error": None,
                "tables": {
                    "orders": {
                        "state": "snapshotting",
                        "percent": 42.0,
                        "rows_applied": 10,
                        "dead_letters": 2,
                    },
                    "users": {"state": "paused", "rows_applied": 0, "dead_letters": 0},
                },
            },
            {
                "name": "crm",
                "display": "crash-looping (next try in 27s)",
                "pid": None,
                "restarts": 7,
                "last_error": "exited with status 1: database 'crm' does not exist\nsecond line",
                "tables": {},
            },
        ]
    }
    lines = display.status(doc).splitlines()
    assert lines[0].split()[:3] == ["SCHEMA", "/", "TABLE"]
    shop, orders, users, crm = lines[1:]
    assert shop.split()[:8] == [
        "shop",
        "streaming",
        "4242",
        "mysql-bin.000012:4711",
        "0.4s",
        "1,234.5",
        "1,000,000",
        "2",
    ]
    assert "snapshotting 42%" in orders and orders.startswith("  orders")
    assert "paused" in users
    assert "crash-looping (next try in 27s)" in crm and "does not exist second line" in crm
    # columns line up: every row has the STATE column at the same offset
    offset = lines[0].index("STATE")
    assert all(line[offset - 2 : offset] == "  " for line in lines)
    assert display.position({"_data": "8263A1B2"}) == '{"_data":"8263A1B2"}'
    assert display.seconds(3725) == "1h02m"


# ---------------------------------------------------------------------------
# the supervisor: section of the configuration


def test_supervisor_settings_defaults_environment_and_checks(tmp_path):
    from warpd.config import CliOverrides, config_schema, load_config
    from warpd.errors import ConfigError

    props = config_schema()["$defs"]["supervisor"]["properties"]
    defaults = SupervisorConfig()
    for key, spec in props.items():
        if "default" in spec:
            assert getattr(defaults, key) == spec["default"], key
    cli = CliOverrides(
        source="mysql://u@h:3306/db", destination="postgresql://u@h/d", schema="db", state_dir=str(tmp_path)
    )
    config = load_config(None, environ={"CARTRIDGE_WARP_SUPERVISOR__STOP_TIMEOUT": "5"}, cli=cli)
    assert config.supervisor.stop_timeout == 5.0
    assert config.supervisor.control_socket == str(tmp_path / "warpd.sock")
    with pytest.raises(
        ConfigError, match=r"supervisor.restart_backoff_cap: 0.5 is less than restart_backoff_base"
    ):
        load_config(None, environ={"CARTRIDGE_WARP_SUPERVISOR__RESTART_BACKOFF_CAP": "0.5"}, cli=cli)
    with pytest.raises(
        ConfigError, match=r"CARTRIDGE_WARP_SUPERVISOR__HEARTBEAT_TIMEOUT: \"soon\" is not a number"
    ):
        load_config(None, environ={"CARTRIDGE_WARP_SUPERVISOR__HEARTBEAT_TIMEOUT": "soon"}, cli=cli)
