"""Hostile and broken clients of warpd's control socket and metrics port.

Whatever a client sends, and however many connect, warpd stays up, answers
``warpctl status``, keeps its schema processes running and keeps
replicating.  Each test judges by what an operator notices: warpctl's
answer, the schema's pid, rows arriving at the destination.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

from conftest import wait_converged
from conftest import wait_until as poll
from daemon_support import Daemon, make_items


def control_path(daemon: Daemon) -> str:
    return os.path.join(daemon.state_dir, "warpd.sock")


def raw_request(path: str, payload: bytes, timeout: float = 30) -> dict:
    """Send ``payload`` as it is and return warpd's one-line answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        with contextlib.suppress(OSError):  # warpd may answer (and close) before taking it all
            sock.sendall(payload)
        buffer = b""
        while b"\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    finally:
        sock.close()
    return json.loads(buffer.split(b"\n", 1)[0])


def open_idle(path: str, n: int) -> list[socket.socket]:
    """Up to ``n`` connections that never send anything (the ones warpd's backlog refuses are closed)."""
    out = []
    for _ in range(n):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except OSError:  # EAGAIN: the listen backlog is full
            sock.close()
            continue
        out.append(sock)
    return out


def still_replicating(daemon: Daemon, dbs, pid: int, key: int) -> None:
    assert daemon.alive(), daemon.tail()
    entry = daemon.schema(dbs.name)
    assert entry is not None and entry["pid"] == pid, (entry, daemon.tail())
    dbs.sql("INSERT INTO items (id, v) VALUES (%s, 'after the abuse')", (key,))
    wait_converged(dbs, None, 60)


# ---------------------------------------------------------------------------
# item 11: malformed requests and connection floods


def test_no_request_and_no_number_of_connections_takes_warpd_down(daemon: Daemon, dbs):
    make_items(dbs, 10)
    # few file descriptors, so a flood runs warpd out of them (EMFILE) rather than the test
    daemon.launcher = ["prlimit", "--nofile=56", *daemon.launcher]
    daemon.write_config([dbs.name])
    daemon.start()
    pid = daemon.streaming(dbs.name)["pid"]
    path = control_path(daemon)

    deep = raw_request(path, b"[" * 200_000 + b"\n")
    assert deep == {"ok": False, "error": "malformed request: nested too deeply"}
    garbage = raw_request(path, bytes(range(256)) * 40 + b"\n")
    assert not garbage["ok"] and garbage["error"].startswith("malformed request")
    huge = raw_request(path, b'{"command": "status", "args": {"x": "' + b"y" * 10_000_000)
    assert not huge["ok"] and "request too long" in huge["error"]
    assert raw_request(path, b'{"command": "status"}\n')["ok"]

    flood = open_idle(path, 400)  # beyond the cap of 64 and beyond the 56 descriptors warpd may hold
    try:
        status = daemon.warpctl("status", "--json", timeout=30)
        assert status.returncode == 0, (status.stderr, daemon.tail())
        assert json.loads(status.stdout)["schemas"][0]["pid"] == pid
        more = open_idle(path, 400)  # and again, while the first ones are still open
        flood += more
        assert daemon.warpctl("status", timeout=30).returncode == 0, daemon.tail()
    finally:
        for sock in flood:
            sock.close()
    still_replicating(daemon, dbs, pid, 9001)
    assert daemon.stop() == 0


def test_clients_that_connect_and_never_send_are_dropped(daemon: Daemon, dbs):
    make_items(dbs, 5)
    daemon.write_config([dbs.name])
    daemon.start()
    pid = daemon.streaming(dbs.name)["pid"]
    silent = open_idle(control_path(daemon), 10)
    try:
        assert daemon.warpctl("status").returncode == 0
        # warpd closes them after its request timeout: each reads end-of-file
        deadline = time.monotonic() + 60
        for sock in silent:
            sock.setblocking(True)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert sock.recv(10) == b""
    finally:
        for sock in silent:
            sock.close()
    still_replicating(daemon, dbs, pid, 9002)
    assert daemon.stop() == 0


# ---------------------------------------------------------------------------
# item 10: the metrics port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlowLoris:
    """Clients that send a request one byte a second and never finish it (reconnecting when cut off)."""

    def __init__(self, port: int, clients: int = 4):
        self.port = port
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> SlowLoris:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(10)

    def _run(self) -> None:
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100_000
        while not self._stop.is_set():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 5) as sock:
                for byte in request:
                    if self._stop.wait(1.0):
                        return
                    sock.sendall(bytes([byte]))


def idle_tcp(port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        with contextlib.suppress(OSError):
            out.append(socket.create_connection(("127.0.0.1", port), 1))
    return out


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_no_metrics_client_can_stall_the_supervisor(daemon: Daemon, dbs):
    make_items(dbs, 10)
    port = free_port()
    daemon.write_config(
        [dbs.name], extra=f"monitoring:\n  prometheus:\n    enabled: true\n    port: {port}\n"
    )
    daemon.start()
    first = daemon.streaming(dbs.name)["pid"]
    with SlowLoris(port):
        idle = idle_tcp(port, 100)
        try:
            time.sleep(3)  # the slow clients are in the middle of their requests
            # warpctl is answered while they trickle on (before: not until they gave up)
            assert daemon.warpctl("status", timeout=30).returncode == 0, daemon.tail()
            # a well-behaved scrape still works
            status, body = http_get(port, "/metrics")
            assert status == 200 and "cartridge_warp_process_up" in body
            assert http_get(port, "/healthz")[0] == 200
            # and a killed child is reaped and restarted
            os.kill(first, signal.SIGKILL)
            again = daemon.wait_for(
                dbs.name,
                lambda s: s["pid"] not in (None, first) and s["display"] == "streaming",
                what="a restarted process",
            )
        finally:
            for sock in idle:
                sock.close()
    still_replicating(daemon, dbs, again["pid"], 9003)
    assert daemon.stop() == 0


def test_single_mode_serves_metrics_without_a_thread_per_client(warp, dbs, tmp_path):
    make_items(dbs, 10)
    port = free_port()
    config = tmp_path / "metrics.yaml"
    config.write_text(f"monitoring:\n  prometheus:\n    enabled: true\n    port: {port}\n")
    w = warp(config=str(config))
    poll(lambda: "streaming changes" in w.output or not w.alive(), 60, "single mode to stream")
    assert w.alive(), w.output
    with SlowLoris(port):
        idle = idle_tcp(port, 200)
        try:
            assert http_get(port, "/healthz")[0] == 200
            status, body = http_get(port, "/metrics")
            assert status == 200 and "cartridge_warp_events_applied_total" in body
            threads = len(os.listdir(f"/proc/{w.proc.pid}/task"))
            assert threads < 50, f"{threads} threads for 200 idle connections"
        finally:
            for sock in idle:
                sock.close()
    dbs.sql("INSERT INTO items (id, v) VALUES (9004, 'after the attack')")
    wait_converged(dbs, w, 60)
    assert w.stop() == 0
