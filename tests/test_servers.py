"""The fault tests' server handling tolerates other database servers on the machine.

A second MariaDB (its own data directory, another port) runs during the
test; restarting the server under test must restart that one, and only that
one, without waiting for the decoy to go away or taking it for the server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pymysql
import pytest
from conftest import wait_until
from servers import MariaDBServer, pid_alive

# restarts the MariaDB under test: alone, after the parallel phase of make test
pytestmark = pytest.mark.exclusive

MARIADBD = "/usr/sbin/mariadbd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def decoy_mariadb() -> Iterator[subprocess.Popen[bytes]]:
    """Another MariaDB server on its own port and data directory, as a second instance would be."""
    if not os.path.exists(MARIADBD) or shutil.which("mariadb-install-db") is None:
        pytest.fail(f"{MARIADBD} and mariadb-install-db are needed (they come with the MariaDB server)")
    # not under pytest's tmp_path: that is private to root, and the server runs as mysql
    base = tempfile.mkdtemp(prefix="warp-decoy-")
    datadir = f"{base}/data"
    shutil.chown(base, "mysql", "mysql")
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={datadir}",
            "--user=mysql",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            MARIADBD,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--socket={base}/mysqld.sock",
            f"--pid-file={base}/mysqld.pid",
            "--user=mysql",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            pymysql.connect(host="127.0.0.1", port=port, user="root", password="", connect_timeout=2).close()
            return True
        except pymysql.err.MySQLError:
            return proc.poll() is not None  # died: stop waiting, the assertion below says so

    try:
        wait_until(answers, 60, "the decoy MariaDB to answer", interval=0.3)
        assert proc.poll() is None, "the decoy MariaDB did not start"
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def test_restart_finds_the_server_by_pid_file_not_by_name(
    decoy_mariadb: subprocess.Popen[bytes],
) -> None:
    server = MariaDBServer.discover()
    before = server.pid()
    assert before is not None
    assert before != decoy_mariadb.pid
    server.restart()
    after = server.pid()
    assert after != before, "the server under test was not restarted"
    assert not pid_alive(before)
    assert decoy_mariadb.poll() is None and pid_alive(decoy_mariadb.pid), "the decoy was touched"
