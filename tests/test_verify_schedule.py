"""warpd's scheduled verify (``verify: {every: 2s, repair: ...}``; docs/verify.md) against MariaDB and
each destination (PostgreSQL, MariaDB; tests/destinations.py).

warpd runs as a user runs it (``python -m warpd.supervisor.main``); the tests edit the destination
directly, then watch what an operator watches: ``/metrics`` (``verify_differences``,
``verify_last_success_timestamp_seconds``, ``verify_runs_total``), ``warpctl status`` and the rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import ROOT, Databases, converged, wait_until
from lifeline import tied_to_this_process
from test_metrics import free_port, scrape, value
from test_verify import daemon_config

pytestmark = pytest.mark.destinations

TIMEOUT = 150.0


class Daemon:
    def __init__(self, proc: subprocess.Popen[bytes], log_path: Any, port: int, config: str):
        self.proc, self.log_path, self.port, self.config = proc, log_path, port, config

    def output(self) -> str:
        return str(self.log_path.read_text(errors="replace"))

    def metric(self, name: str, **labels: str) -> float | None:
        assert self.proc.poll() is None, self.output()[-6000:]
        try:
            return value(scrape(self.port), "cartridge_warp_" + name, **labels)
        except OSError:  # not listening yet
            return None

    def warpctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "warpd.supervisor.warpctl", "--config", self.config, *args],
            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT}, cwd=ROOT,
            check=False,
        )  # fmt: skip


@pytest.fixture
def daemon(dbs: Databases, tmp_path: Any) -> Iterator[Callable[[str], Daemon]]:
    started: list[Daemon] = []

    def start(verify: str) -> Daemon:
        port = free_port()
        state = tmp_path / "state"
        state.mkdir()
        config = daemon_config(
            dbs,
            tmp_path,
            f"state_dir: {state}\nverify: {verify}\nmonitoring:\n  prometheus:\n    enabled: true\n    port: {port}\n",
        )
        log_path = tmp_path / "warpd.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                tied_to_this_process([sys.executable, "-m", "warpd.supervisor.main", "--config", config]),
                stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
            )  # fmt: skip
        started.append(Daemon(proc, log_path, port, config))
        return started[-1]

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            assert d.proc.wait(timeout=60) == 0, d.output()[-6000:]
        assert "Traceback" not in d.output(), d.output()[-6000:]


def verified_once(
    dbs: Databases, daemon: Callable[[str], Daemon], verify: str
) -> tuple[Daemon, dict[str, str]]:
    """Table t of 100 rows replicated by a warpd verifying with ``verify``, once its first verify found it equal."""
    dbs.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    dbs.many("INSERT INTO t VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, 101)])
    d = daemon(verify)
    labels = {"schema": dbs.name, "table": "t"}
    wait_until(lambda: d.metric("verify_differences", **labels) == 0, TIMEOUT, "a first verify, equal")
    return d, labels


def test_scheduled_verify_reports_a_destination_edit_and_returns_to_0_after_a_repair(
    dbs: Databases, daemon: Callable[[str], Daemon]
) -> None:
    d, labels = verified_once(dbs, daemon, "{every: 2s}")
    first = d.metric("verify_last_success_timestamp_seconds", **labels)
    assert first is not None and first > 0

    dbs.dest.query(f"UPDATE {dbs.dest.ident('t')} SET v = 'broken' WHERE id = 7")  # noqa: S608 - test SQL
    wait_until(lambda: d.metric("verify_differences", **labels) == 1, TIMEOUT, "the edit found")
    assert (d.metric("verify_runs_total", schema=dbs.name, result="different") or 0) >= 1
    assert "scheduled verify of" in d.output() and "DIFFERENT: 1 key(s)" in d.output()

    status = d.warpctl("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    (schema,) = json.loads(status.stdout)["schemas"]
    assert schema["verify"]["every"] == 2.0 and schema["verify"]["repair"] is False
    text = d.warpctl("status")
    assert "VERIFY SCHEMA" in text.stdout and "every 2.0s" in text.stdout, text.stdout

    # the operator repairs it with warpctl: the running schema process re-copies the key
    run = d.warpctl("verify", "--repair", f"{dbs.name}.t")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "repaired 1 key(s)" in run.stdout
    wait_until(lambda: d.metric("verify_differences", **labels) == 0, TIMEOUT, "the metric back at 0")
    assert converged(dbs, ["t"]) == []
    later = d.metric("verify_last_success_timestamp_seconds", **labels)
    assert later is not None and later > first


def test_scheduled_verify_with_repair_true_repairs_what_it_finds(
    dbs: Databases, daemon: Callable[[str], Daemon]
) -> None:
    d, labels = verified_once(dbs, daemon, "{every: 1s, repair: true}")

    t = dbs.dest.ident("t")
    dbs.dest.query(f"UPDATE {t} SET v = 'broken' WHERE id = 7")  # noqa: S608 - test SQL
    dbs.dest.query(f"DELETE FROM {t} WHERE id = 8")  # noqa: S608
    dbs.dest.query(f"INSERT INTO {t} (id, v) VALUES (500, 'stray')")  # noqa: S608
    dbs.sql("UPDATE t SET v = 'new' WHERE id BETWEEN 21 AND 40")  # the stream goes on meanwhile

    wait_until(
        lambda: (d.metric("verify_repaired_keys_total", **labels) or 0) >= 3, TIMEOUT, "3 keys repaired"
    )
    wait_until(lambda: converged(dbs, ["t"]) == [], TIMEOUT, "the tables equal")
    wait_until(lambda: d.metric("verify_differences", **labels) == 0, TIMEOUT, "the metric back at 0")


def test_a_verify_that_cannot_finish_warns_and_counts_as_failed_while_the_schema_streams_on(
    dbs: Databases, daemon: Callable[[str], Daemon]
) -> None:
    d, labels = verified_once(dbs, daemon, "{every: 1s}")
    dbs.sql("CREATE TABLE gone (id INT PRIMARY KEY)")
    dbs.sql("INSERT INTO gone VALUES (1)")
    wait_until(lambda: converged(dbs, ["gone"]) == [], TIMEOUT, "table gone replicated")
    dbs.dest.query(f"DROP TABLE {dbs.dest.ident('gone')}")  # its checksum query fails from now on
    wait_until(
        lambda: (d.metric("verify_runs_total", schema=dbs.name, result="failed") or 0) >= 1,
        TIMEOUT,
        "a failed run",
    )
    assert "scheduled verify of " + dbs.name + ".gone could not finish" in d.output()
    assert d.metric("process_up", schema=dbs.name) == 1

    def last_verify() -> dict[str, Any]:
        (schema,) = json.loads(d.warpctl("status", "--json").stdout)["schemas"]
        return dict(schema["verify"]["last"] or {})

    # (the status file is rewritten every second: it may still show the run before)
    last = wait_until(lambda: (v := last_verify()).get("result") == "failed" and v, TIMEOUT, "status: failed")
    assert "gone" in last["error"]
    # the stream goes on, and the other table is still verified
    dbs.sql("UPDATE t SET v = 'new' WHERE id = 3")
    wait_until(lambda: converged(dbs, ["t"]) == [], TIMEOUT, "the stream applies changes")
    before = d.metric("verify_last_success_timestamp_seconds", **labels) or 0
    wait_until(
        lambda: (d.metric("verify_last_success_timestamp_seconds", **labels) or 0) > before,
        TIMEOUT,
        "t verified again",
    )
