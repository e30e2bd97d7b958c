"""The schema process's PostgreSQL connections stay bounded, however often tables are re-tracked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import Databases, Warp, wait_until, write_config
from test_replication import assert_converged, start_streaming, stop_cleanly

PARALLELISM = 3


def backends(dbs: Databases) -> int:
    """Connections the schema process holds (their application_name is ``cartridge-warp <schema>``)."""
    rows = dbs.pg_rows(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (f"cartridge-warp {dbs.name}",)
    )
    return int(rows[0][0])


def test_thirty_re_tracks_leave_no_connection_behind(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    dbs.many("INSERT INTO t VALUES (%s, %s)", [(i, i) for i in range(100)])
    cfg = write_config(
        tmp_path,
        "source: {connection_string: 'mysql://placeholder/x'}\n"
        "destination: {connection_string: 'postgresql://placeholder/x'}\n"
        f"global_max_parallel_streams: {PARALLELISM}\n"
        "max_batch_latency_ms: 50\n",
    )
    w = start_streaming(warp, cfg)
    for n in range(30):
        # each ADD COLUMN re-tracks the table (a new worker pool); the UPDATE gives every worker work
        dbs.sql(f"ALTER TABLE t ADD COLUMN c{n} INT")
        dbs.sql(f"UPDATE t SET c{n} = id + {n}")
        assert_converged(dbs, w, ["t"])
    # the main connection, one per worker, and the snapshot's writer at most
    assert backends(dbs) <= PARALLELISM + 2, backends(dbs)
    stop_cleanly(w)
    # a backend leaves pg_stat_activity a moment after its client hung up
    wait_until(lambda: backends(dbs) == 0, 10, "the process's connections to close")
