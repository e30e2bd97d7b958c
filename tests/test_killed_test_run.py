"""A test run killed with kill -9 (a CI job's timeout) leaves no cartridge-warp or warpd behind.

The processes the tests start are tied to the test process (tests/lifeline.py).
Here a stand-in for a test run starts ``cartridge-warp --mode single``, or
``warpd``, the way the fixtures do, waits until it streams and is killed with
SIGKILL: the process must stop as SIGTERM stops it (its batch committed, its
lock released) and let go of its PostgreSQL connections, which a leftover kept
until the server refused the next run's ("remaining connection slots are
reserved").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from conftest import ROOT, wait_until
from daemon_support import Daemon, make_items, pid_alive, run_warpctl, schema_connections

# the test run: starts the command as the fixtures do, prints its pid, then waits to be killed
STAND_IN = """
import subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from lifeline import tied_to_this_process
with open(sys.argv[2], "wb") as log:
    proc = subprocess.Popen(tied_to_this_process(sys.argv[3:]), stdout=log, stderr=subprocess.STDOUT)
print(proc.pid, flush=True)
time.sleep(600)
"""


class StandIn:
    """A process standing in for a test run, and the one process it started."""

    def __init__(self, command: list[str], log_path: str, env: dict[str, str]):
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-c", STAND_IN, os.path.join(ROOT, "tests"), log_path, *command],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.started = int(self.proc.stdout.readline())

    @property
    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


@pytest.fixture
def stand_ins() -> Iterator[Callable[[list[str], str, dict[str, str]], StandIn]]:
    made: list[StandIn] = []

    def make(command: list[str], log_path: str, env: dict[str, str]) -> StandIn:
        made.append(StandIn(command, log_path, env))
        return made[-1]

    yield make
    for run in made:  # a failed test: its process stops by the very mechanism under test
        run.kill()


def test_single_mode_stops_cleanly_with_a_killed_test_run_and_closes_its_connections(warp, dbs, stand_ins):
    make_items(dbs, 10)
    w = warp(start=False)  # its command, environment and log; started below by the stand-in
    run = stand_ins(w.cmd, w.log_path, w.env)
    wait_until(lambda: "streaming changes from" in run.output, 90, "single mode to stream")
    assert schema_connections(dbs) > 0
    run.kill()
    wait_until(lambda: not pid_alive(run.started), 30, f"cartridge-warp {run.started} to stop")
    assert f"schema {dbs.name}: stopped cleanly" in run.output, run.output[-4000:]
    wait_until(lambda: schema_connections(dbs) == 0, 30, "its PostgreSQL connections to close")


def test_warpd_and_its_children_stop_with_a_killed_test_run_and_close_their_connections(
    daemon: Daemon, dbs, stand_ins
):
    make_items(dbs, 10)
    daemon.write_config([dbs.name])
    run = stand_ins(
        [*daemon.launcher, "--config", daemon.config_path], os.path.join(daemon.home, "warpd.log"), daemon.env
    )

    def streaming_child() -> int | None:
        status = run_warpctl("--config", daemon.config_path, "status", "--json", env=daemon.env)
        if status.returncode != 0:
            return None
        for entry in json.loads(status.stdout)["schemas"]:
            if entry["name"] == dbs.name and entry["display"] == "streaming" and entry["live"]:
                return int(entry["pid"])
        return None

    child = wait_until(streaming_child, 90, "warpd's schema process to stream")
    assert schema_connections(dbs) > 0
    run.kill()
    for pid, what in ((run.started, "warpd"), (child, "its schema process")):
        wait_until(lambda pid=pid: not pid_alive(pid), 30, f"{what} ({pid}) to stop")
    assert f"schema {dbs.name}: stopped cleanly" in run.output, run.output[-4000:]
    assert "warpd stopped" in run.output, run.output[-4000:]
    wait_until(lambda: schema_connections(dbs) == 0, 30, "their PostgreSQL connections to close")
