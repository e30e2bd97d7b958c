"""A short run of the torture harness (scripts/torture.py; docs/reliability.md has the long one).

Two MariaDB schemas and one MongoDB schema under warpd, a mixed write load, kill -9s of schema
processes and masters, PostgreSQL and MariaDB each stopped for a few seconds, the destination's
connections terminated, the state directory's disk filled (as root): afterwards every table must equal
its source, row by row.  The fault schedule comes from a fixed seed.  Whatever happens to the harness,
the machine's databases are running again when this test ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, mysql_root
from servers import MariaDBServer, PostgresCluster, mariadb_answers

pytestmark = [pytest.mark.slow, pytest.mark.mongodb, pytest.mark.exclusive]  # stops the databases

ARGS = ["--duration", "120", "--seed", "4242", "--schemas", "2", "--outage", "5", "--kill-interval", "6"]


def test_a_short_torture_run_ends_with_no_row_differing():
    # found while they answer: the harness stops them, and this test must be able to start them again
    mariadb, postgres = MariaDBServer.discover(), PostgresCluster.discover()
    mysql_root().close()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "scripts", "torture.py"), *ARGS],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the harness restores the databases and cleans up
        out, _ = proc.communicate(timeout=300)
        pytest.fail(f"the torture run did not end within 15 minutes:\n{out[-8000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        postgres.ensure()
        if not mariadb_answers():
            mariadb.start()
    print(out)  # the run's figures, for the log of a passing run too (pytest -s)
    assert proc.returncode == 0, out[-8000:]
    assert "rows differing: 0" in out, out[-8000:]
    assert "caught up: yes" in out, out[-8000:]
    # the product's own check agrees: every table of every schema (3 schemas x 2 tables) by checksums
    assert "cartridge-warp verify (checksums): 6 tables, 0 keys differing" in out, out[-8000:]
    kills = next(line for line in out.splitlines() if line.startswith("kills done: "))
    assert kills != "kills done: 0 ({})", out[-8000:]
    outages = next(line for line in out.splitlines() if line.startswith("outages survived: "))
    assert "PostgreSQL" in outages and "MariaDB" in outages, out[-8000:]
