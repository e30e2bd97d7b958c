"""Metrics, health probes and correlated log lines, as an operator sees them.

The end-to-end tests run the real ``cartridge-warp --mode single`` against the
local MariaDB and PostgreSQL, scrape ``/metrics`` over HTTP and compare the
numbers with the changes the test made.  The unit tests check the multiprocess
aggregation (two forked processes writing to one directory) and that the
shipped Grafana dashboard and docs only speak of metrics that exist.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from conftest import ROOT, Databases, Warp, wait_converged, wait_until, write_config
from lifeline import tied_to_this_process

from warpd import metrics

TIMEOUT = 150.0
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# -- helpers -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET (a 503 is an answer, not an exception)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` parsed: (name, labels) -> value."""
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body
    samples = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def config_with_metrics(tmp_path: Any, dbs: Databases, port: int, extra: str = "") -> str:
    return write_config(
        tmp_path,
        f"""
schemas:
  - name: {dbs.name}
monitoring:
  log_format: json
  prometheus:
    enabled: true
    port: {port}
{extra}""",
    )


def json_lines(output: str) -> list[dict[str, Any]]:
    lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


# -- end to end ----------------------------------------------------------------
def test_metrics_count_what_was_applied_and_probes_follow_the_run(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE items (id INT PRIMARY KEY, v INT)")
    dbs.sql("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)")
    dbs.many("INSERT INTO items VALUES (%s, %s)", [(i, i) for i in range(1, 31)])  # 30 snapshot rows
    dbs.many("INSERT INTO notes VALUES (%s, %s)", [(i, f"n{i}") for i in range(1, 6)])  # 5 snapshot rows
    port = free_port()
    w = warp(config_with_metrics(tmp_path, dbs, port))
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert w.alive(), w.output[-4000:]
        try:
            return get(base + "/readyz")[0] == 200
        except OSError:  # not listening yet
            return False

    wait_until(ready, TIMEOUT, "/readyz to answer 200")
    status, body = get(base + "/healthz")
    assert status == 200 and json.loads(body)["ok"] is True, body
    assert json.loads(get(base + "/readyz")[1])["phase"] == "streaming"

    snap = scrape(port)
    assert (
        value(
            snap, "cartridge_warp_events_applied_total", schema=dbs.name, table="items", operation="snapshot"
        )
        == 30
    )
    assert (
        value(
            snap, "cartridge_warp_events_applied_total", schema=dbs.name, table="notes", operation="snapshot"
        )
        == 5
    )
    assert value(snap, "cartridge_warp_snapshot_progress_ratio", schema=dbs.name, table="items") == 1.0
    assert value(snap, "cartridge_warp_snapshot_rows_copied", schema=dbs.name, table="items") == 30
    assert value(snap, "cartridge_warp_process_up", schema=dbs.name) == 1.0

    # streamed changes, several per row and per transaction: the counters see each one
    dbs.many("INSERT INTO items VALUES (%s, %s)", [(i, i) for i in range(100, 140)])  # 40 inserts
    dbs.sql("UPDATE items SET v = v + 1 WHERE id <= 10")  # 10 updates
    dbs.sql("UPDATE items SET v = v + 1 WHERE id <= 5")  # 5 more, to rows just updated
    dbs.sql("DELETE FROM items WHERE id BETWEEN 120 AND 139")  # 20 deletes
    dbs.sql("START TRANSACTION")
    dbs.many("INSERT INTO notes VALUES (%s, %s)", [(i, f"n{i}") for i in range(10, 13)])  # 3 inserts
    dbs.sql("INSERT INTO notes VALUES (13, 'nul \\0 inside')")  # 1 insert PostgreSQL cannot store
    dbs.sql("COMMIT")
    dbs.sql("ALTER TABLE notes ADD COLUMN extra INT")
    dbs.sql("INSERT INTO notes VALUES (14, 'after the DDL', 7)")  # 1 insert

    expected = {
        ("items", "insert"): 40,
        ("items", "update"): 15,
        ("items", "delete"): 20,
        ("notes", "insert"): 5,
    }

    got: dict[tuple[str, str], float | None] = {}

    def counted() -> bool:
        assert w.alive(), w.output[-4000:]
        s = scrape(port)
        for table, op in expected:
            got[table, op] = value(
                s, "cartridge_warp_events_applied_total", schema=dbs.name, table=table, operation=op
            )
        return got == expected

    try:
        wait_until(counted, TIMEOUT, "the counters to reach what the source did")
    except AssertionError:
        raise AssertionError(f"counted {got}, expected {expected}\n{w.output[-4000:]}") from None
    wait_converged(dbs, w, TIMEOUT, ["items"])
    s = scrape(port)
    assert value(s, "cartridge_warp_dead_letters_total", schema=dbs.name, table="notes") == 1
    assert (
        value(
            s,
            "cartridge_warp_schema_evolution_events_total",
            schema=dbs.name,
            table="notes",
            kind="add_column",
        )
        == 1
    )
    lag = value(s, "cartridge_warp_replication_lag_seconds", schema=dbs.name)
    assert lag is not None and lag >= 0
    batches = value(s, "cartridge_warp_batch_apply_seconds_count", schema=dbs.name, table="items")
    assert batches is not None and batches >= 1
    assert (
        value(s, "cartridge_warp_batch_apply_seconds_bucket", schema=dbs.name, table="items", le="+Inf")
        == batches
    )
    # nothing but names in labels: no URI, no password
    assert "warp:warp" not in get(base + "/metrics")[1] and "mysql://" not in get(base + "/metrics")[1]
    assert get(base + "/nope")[0] == 404

    # every JSON line names the schema; the dead letter also names its table and batch
    lines = json_lines(w.output)
    assert lines and all(line.get("schema") == dbs.name for line in lines), lines[:5]
    letter = [line for line in lines if "dead-letter" in line["msg"]]
    assert letter and letter[0]["table"] == "notes" and isinstance(letter[0]["batch"], int), letter
    assert w.stop() == 0


def test_readyz_is_503_until_the_schema_streams(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """A destination that refuses connections keeps the schema starting: alive, retrying, not ready."""
    port = free_port()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]  # nothing listens there once the socket is closed
    w = warp(
        config_with_metrics(tmp_path, dbs, port),
        extra=["--destination", f"postgresql://warp:warp@127.0.0.1:{dead_port}/warp_test"],
    )
    base = f"http://127.0.0.1:{port}"

    def retried() -> bool:
        assert w.alive(), w.output[-4000:]
        try:
            s = scrape(port)
        except OSError:  # not listening yet
            return False
        return (
            value(s, "cartridge_warp_errors_total", schema=dbs.name, error_type="TransientError") is not None
        )

    wait_until(retried, 60, "a retried connection error to be counted")
    status, body = get(base + "/readyz")
    assert status == 503 and json.loads(body) == {**json.loads(body), "ok": False, "phase": "starting"}, body
    status, body = get(base + "/healthz")
    assert status == 200, body  # it is alive: retrying is its job
    assert w.stop() == 0


# -- multiprocess aggregation --------------------------------------------------
@pytest.fixture
def metrics_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """metrics.setup() in this test process, undone afterwards (environment and module state)."""
    from prometheus_client import values

    monkeypatch.setattr(metrics, "_metrics", None)
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv(metrics.ENV_DIR, str(tmp_path / "metrics"))  # setup() uses it
    return metrics.setup(None)


def fork(work: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    return pid


def test_two_forked_processes_add_up_and_a_dead_ones_gauges_go(metrics_dir: str) -> None:
    def child(n: int, lag: float) -> Callable[[], None]:
        def work() -> None:
            metrics.events_applied("shop", "orders", "insert", n)
            metrics.observe_batch("shop", "orders", 0.02)
            metrics.set_lag("shop", lag)
            metrics.snapshot_progress("shop", "orders", n, 100)

        return work

    pids = [fork(child(3, 1.5)), fork(child(4, 7.0))]
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    metrics.child_restart("shop")  # the supervisor's own samples count as well
    metrics.process_up("shop", True)

    server = metrics.serve("127.0.0.1", 0, lambda: {"ok": True}, lambda: {"ok": False, "why": "snapshot"})
    try:
        s = scrape(server.port)
        assert (
            value(s, "cartridge_warp_events_applied_total", schema="shop", table="orders", operation="insert")
            == 7
        )
        assert value(s, "cartridge_warp_batch_apply_seconds_count", schema="shop", table="orders") == 2
        assert value(s, "cartridge_warp_replication_lag_seconds", schema="shop") == 7.0  # the live maximum
        assert value(s, "cartridge_warp_child_restarts_total", schema="shop") == 1
        assert value(s, "cartridge_warp_process_up", schema="shop") == 1
        assert get(f"http://127.0.0.1:{server.port}/healthz") == (200, '{"ok": true}\n')
        assert get(f"http://127.0.0.1:{server.port}/readyz") == (503, '{"ok": false, "why": "snapshot"}\n')

        for pid in pids:
            metrics.mark_dead(pid)
        s = scrape(server.port)
        # a dead process's live gauges go; counters keep its contribution
        assert value(s, "cartridge_warp_replication_lag_seconds", schema="shop") is None
        assert value(s, "cartridge_warp_snapshot_progress_ratio", schema="shop", table="orders") is None
        assert (
            value(s, "cartridge_warp_events_applied_total", schema="shop", table="orders", operation="insert")
            == 7
        )
    finally:
        server.stop()


def test_setup_starts_from_an_empty_directory(metrics_dir: str) -> None:
    pid = fork(lambda: metrics.events_applied("shop", "orders", "insert", 5))
    assert os.waitpid(pid, 0)[1] == 0
    assert os.listdir(metrics_dir)
    assert metrics.setup("/elsewhere") == metrics_dir  # PROMETHEUS_MULTIPROC_DIR wins
    assert not [f for f in os.listdir(metrics_dir) if f.startswith("counter_")]


def test_the_selector_mode_answers_without_a_thread(metrics_dir: str) -> None:
    import selectors
    import threading

    server = metrics.serve("127.0.0.1", 0, lambda: {"ok": True}, lambda: {"ok": True}, threaded=False)
    result: list[tuple[int, str]] = []
    client = threading.Thread(target=lambda: result.append(get(f"http://127.0.0.1:{server.port}/healthz")))
    try:
        with selectors.DefaultSelector() as sel:
            server.register(sel)
            client.start()
            deadline = time.monotonic() + 30
            while client.is_alive() and time.monotonic() < deadline:  # the caller's loop drives it
                for key, mask in sel.select(timeout=0.1):
                    key.data(mask)
                server.tick()
        client.join(10)
        assert result == [(200, '{"ok": true}\n')]
    finally:
        server.stop()


def test_helpers_do_nothing_before_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_metrics", None)
    metrics.events_applied("s", "t", "insert", 1)
    metrics.set_lag("s", 1.0)
    metrics.mark_dead(12345)
    with pytest.raises(RuntimeError, match="setup"):
        metrics.serve("127.0.0.1", 0, dict, dict)


# -- what ships with it --------------------------------------------------------
def exported_names() -> set[str]:
    """Every series name /metrics can show (histograms add _bucket, _sum and _count)."""
    names = set()
    for name, (kind, _labels, _help) in metrics.METRICS.items():
        full = metrics.PREFIX + name
        names.add(full)
        if kind == "histogram":
            names |= {full + "_bucket", full + "_sum", full + "_count"}
    return names


def test_the_grafana_dashboard_only_queries_exported_metrics_and_shows_them_all() -> None:
    with open(os.path.join(ROOT, "docs", "grafana-dashboard.json"), encoding="utf-8") as f:
        dashboard = json.load(f)
    assert any(i.get("name") == "DS_PROMETHEUS" for i in dashboard.get("__inputs", []))
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert exprs
    used = set()
    for expr in exprs:
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), expr
        for name in re.findall(r"\bcartridge_warp_\w+", expr):
            assert name in exported_names(), f"{name} in {expr!r} is not exported"
            used.add(name)
    for name in metrics.METRICS:
        assert any(u.startswith(metrics.PREFIX + name.removesuffix("_total")) for u in used), name


def test_every_metric_is_documented() -> None:
    docs = os.path.join(ROOT, "docs")
    text = ""
    for doc in ("operations.md", "metrics.md"):
        if os.path.exists(os.path.join(docs, doc)):
            with open(os.path.join(docs, doc), encoding="utf-8") as f:
                text += f.read()
    for name, (kind, labels, _help) in metrics.METRICS.items():
        row = next((line for line in text.splitlines() if f"`{metrics.PREFIX}{name}`" in line), None)
        assert row is not None, f"{name} is not documented"
        assert kind in row and all(label in row for label in labels), row


# -- log lines -----------------------------------------------------------------
def test_text_lines_carry_the_ids_compactly_and_worker_threads_inherit_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import contextvars
    import io
    import logging
    from concurrent.futures import ThreadPoolExecutor

    from warpd import logs

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(logs, "_context", {})
    out = io.StringIO()
    logs.configure("INFO", "text", stream=out)
    logs.set_context(schema="shop")
    log = logging.getLogger("warpd.test")
    log.info("outside")
    with logs.bind(table="orders", batch=17), ThreadPoolExecutor(1) as pool:
        pool.submit(contextvars.copy_context().run, log.info, "in a worker").result()
        pool.submit(log.info, "a worker without the context").result()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("warpd.test: outside [shop]")
    assert lines[1].endswith("warpd.test: in a worker [shop.orders batch=17]")
    assert lines[2].endswith("warpd.test: a worker without the context [shop]")


# -- the warpd daemon: one endpoint for every schema ---------------------------------
def child_pid(parent: int, schema: str) -> int | None:
    """The pid of warpd's process for ``schema`` (its process title names it)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", encoding="utf-8", errors="replace") as f:
                title = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and f"schema {schema} " in title + " ":
            return int(entry)
    return None


def test_the_daemon_serves_every_schemas_metrics_and_counts_a_restart(dbs: Databases, tmp_path: Any) -> None:
    import signal
    import subprocess
    import sys
    import uuid

    from conftest import MYSQL_HOST, MYSQL_PORT

    if not os.path.isdir(os.path.join(ROOT, "warpd", "supervisor")):
        pytest.skip("the warpd supervisor is not in this tree")
    other = Databases(f"warp_t_{uuid.uuid4().hex[:10]}")
    proc = None
    try:
        for d, rows in ((dbs, 12), (other, 7)):
            d.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
            d.many("INSERT INTO t VALUES (%s, %s)", [(i, i) for i in range(1, rows + 1)])
        port = free_port()
        state = tmp_path / "state"
        state.mkdir()
        config = write_config(
            tmp_path,
            f"""
source:
  connection_string: mysql://warp:warp@{MYSQL_HOST}:{MYSQL_PORT}/
destination:
  connection_string: {dbs.dest_uri}
state_dir: {state}
supervisor:
  restart_backoff_base: 0.2
schemas:
  - name: {dbs.name}
  - name: {other.name}
monitoring:
  prometheus:
    enabled: true
    port: {port}
""",
        )
        log_path = tmp_path / "warpd.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                tied_to_this_process([sys.executable, "-m", "warpd.supervisor.main", "--config", config]),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": ROOT},
            )

        def output() -> str:
            return log_path.read_text(errors="replace")[-6000:]

        def events(s: dict[Any, float], d: Databases, op: str) -> float | None:
            return value(s, "cartridge_warp_events_applied_total", schema=d.name, table="t", operation=op)

        def scraped(check: Callable[[dict[Any, float]], bool]) -> Callable[[], bool]:
            def run() -> bool:
                assert proc is not None and proc.poll() is None, output()
                try:
                    return check(scrape(port))
                except OSError:  # not listening yet
                    return False

            return run

        def both_snapshotted(s: dict[Any, float]) -> bool:
            return events(s, dbs, "snapshot") == 12 and events(s, other, "snapshot") == 7

        wait_until(scraped(both_snapshotted), TIMEOUT, "both snapshots counted")
        wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, TIMEOUT, "/readyz 200")
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200

        dbs.many("INSERT INTO t VALUES (%s, %s)", [(i, i) for i in range(100, 110)])
        dbs.sql("UPDATE t SET v = 0 WHERE id <= 4")
        other.sql("DELETE FROM t WHERE id <= 3")

        def streamed(s: dict[Any, float]) -> bool:
            return (
                events(s, dbs, "insert") == 10
                and events(s, dbs, "update") == 4
                and events(s, other, "delete") == 3
                and value(s, "cartridge_warp_process_up", schema=dbs.name) == 1
                and value(s, "cartridge_warp_process_up", schema=other.name) == 1
                and value(s, "cartridge_warp_replication_lag_seconds", schema=dbs.name) is not None
                and value(s, "cartridge_warp_replication_lag_seconds", schema=other.name) is not None
            )

        wait_until(scraped(streamed), TIMEOUT, "both schemas' changes counted")
        wait_converged(dbs, None, TIMEOUT)
        wait_converged(other, None, TIMEOUT)

        # kill -9 one schema's process: restarted and counted; totals survive the dead process
        pid = wait_until(lambda: child_pid(proc.pid, dbs.name), 30, "the schema's process")
        os.kill(pid, signal.SIGKILL)

        def restarted(s: dict[Any, float]) -> bool:
            return value(s, "cartridge_warp_child_restarts_total", schema=dbs.name) == 1 and (
                child_pid(proc.pid, dbs.name) not in (None, pid)
            )

        wait_until(scraped(restarted), TIMEOUT, "the restart to be counted")
        dbs.many("INSERT INTO t VALUES (%s, %s)", [(i, i) for i in range(200, 205)])

        def counted_after_restart(s: dict[Any, float]) -> bool:
            return (
                events(s, dbs, "insert") == 15
                and events(s, dbs, "update") == 4
                and value(s, "cartridge_warp_process_up", schema=dbs.name) == 1
            )

        wait_until(scraped(counted_after_restart), TIMEOUT, "the restarted process's changes counted")
        s = scrape(port)
        assert value(s, "cartridge_warp_child_restarts_total", schema=other.name) in (None, 0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, output()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        other.drop()
