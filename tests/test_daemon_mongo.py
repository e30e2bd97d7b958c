"""warpd supervising MongoDB schemas (through the wire-protocol test server).

The supervisor knows nothing about sources; this checks that a MongoDB schema
lives under it like any other: its own process, status with its resume token,
restarted after kill -9 with nothing lost, and a clean SIGTERM.  Runs once per
destination kind (``[postgresql]``, ``[mysql]``: tests/destinations.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from daemon_support import SUPERVISOR, Daemon, pid_alive

from tests.mongo_support import Backend, MongoDatabases, backend, mongo_converged
from tests.test_mongo_replication import wait_mongo

pytestmark = [pytest.mark.mongodb, pytest.mark.destinations]


@pytest.fixture(scope="module")
def wire(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from backend("wire", request)


@pytest.fixture
def two_mongo_dbs(wire: Backend, destination_kind: str) -> Iterator[list[MongoDatabases]]:
    made = [MongoDatabases(wire, destination_kind), MongoDatabases(wire, destination_kind)]
    try:
        yield made
    finally:
        for m in made:
            m.drop()


def test_mongodb_schemas_under_warpd_survive_kill_9(daemon: Daemon, two_mongo_dbs, wire):
    first, second = two_mongo_dbs
    for m in two_mongo_dbs:
        m.db["orders"].insert_many(
            [
                {
                    "_id": i,
                    "total": i * 10,
                    "lines": [{"sku": "a"}],
                    "customer": {"name": f"c{i}", "tier": i % 3},
                }
                for i in range(300)
            ]
        )
    entries = "".join(
        f"  - name: {m.name}\n    source_database: {m.name}\n    destination_schema: {m.dest_schema}\n"
        for m in two_mongo_dbs
    )
    daemon.write_config(
        [],
        text=(
            f'source:\n  connection_string: "{wire.uri}"\n'
            f'destination:\n  connection_string: "{first.dest_uri}"\n'
            f"state_dir: {daemon.state_dir}\n"
            "max_batch_latency_ms: 50\n"
            "flatten_depth: 1\n"  # the resync below must map documents as the stream does
            f"{SUPERVISOR}"
            f"schemas:\n{entries}"
        ),
    )
    daemon.start()
    before = daemon.streaming(first.name)
    other_pid = daemon.streaming(second.name)["pid"]
    assert "token" in str(before.get("position")) or "cluster_time" in str(before.get("position")), before

    stop = threading.Event()

    def writer() -> None:
        n = 1000
        while not stop.is_set():
            first.db["orders"].insert_one({"_id": n, "total": n})
            first.db["orders"].update_one({"_id": n % 300}, {"$inc": {"total": 1}})
            n += 1
            time.sleep(0.005)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(1)
        os.kill(before["pid"], signal.SIGKILL)
        daemon.wait_for(
            first.name,
            lambda s: s["pid"] not in (None, before["pid"]) and s["display"] == "streaming" and s["live"],
            what="a new process for the MongoDB schema, streaming again",
        )
        time.sleep(1)
    finally:
        stop.set()
        thread.join()
    assert not pid_alive(before["pid"])
    for m in two_mongo_dbs:
        wait_mongo(m, None, daemon.state_dir, timeout=90, flatten_depth=1)
    assert daemon.schema(second.name)["pid"] == other_pid, "the other schema's process must not be touched"

    # warpctl resync of a MongoDB collection, while it changes: the drifted copy is repaired
    first.dest.query("UPDATE {} SET total = -1 WHERE _id < 50", "orders")
    result = daemon.warpctl("resync", f"{first.name}.orders")
    assert result.returncode == 0, result.stderr
    first.db["orders"].delete_many({"_id": {"$gte": 250, "$lt": 300}})
    first.db["orders"].update_many({"_id": {"$lt": 10}}, {"$set": {"note": "changed during the resync"}})
    daemon.wait_for(
        first.name, lambda s: s["tables"]["orders"]["state"] == "streaming", what="the resync to end"
    )
    wait_mongo(first, None, daemon.state_dir, timeout=90, flatten_depth=1)
    assert "resync of" in daemon.output
    assert first.dest.query("SELECT customer__name FROM {} WHERE _id = 7", "orders") == [("c7",)]
    assert daemon.stop() == 0
    assert mongo_converged(first, daemon.state_dir, flatten_depth=1) == []
