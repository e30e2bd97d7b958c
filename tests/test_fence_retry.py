"""A fenced batch that fails part way is applied again without its committed parts.

A batch spans several destination transactions (one per table part).  When one part keeps
failing after others committed (the retries of a transient error run out), the batch goes back
to the pending changes and the reopened stream applies it again; the destination fence
(``_warp_checkpoints``) tells which parts are in already, so those are not written twice.
PostgreSQL destination: a trigger there fails the keyless table's writes with a serialization
failure (SQLSTATE 40001, a transient error) until the test lets them through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import Databases, Warp, mysql_root, wait_until, write_config
from test_fence import _dest_rows, _synced
from test_replication import STREAMING, assert_converged, stop_cleanly


def test_batch_failing_part_way_is_applied_again_without_its_committed_parts(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    dbs.sql("CREATE TABLE acct (id INT PRIMARY KEY, v VARCHAR(20))")
    dbs.sql("CREATE TABLE nokey (a INT, b VARCHAR(20))")
    dbs.many("INSERT INTO acct VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, 11)])
    dbs.sql("INSERT INTO nokey VALUES (0, 'seed')")
    config = write_config(
        tmp_path,
        "retry: {max_attempts: 2, initial_delay_seconds: 0.1, max_delay_seconds: 0.2}\n"
        f"schemas:\n  - name: {dbs.name}\n    metadata_columns: true\n"
        "    batch_size: 1000\n    max_batch_latency_ms: 200\n    default_max_parallel_streams: 2\n",
    )
    w = warp(config)
    wait_until(lambda: STREAMING in w.output or not w.alive(), 150, "the snapshot to finish")
    assert w.alive(), w.output[-4000:]
    schema = dbs.dest.schema
    block = f'"{schema}"."test_block"'
    dbs.dest.query(f"CREATE TABLE {block} (x int)")
    dbs.dest.query(f"INSERT INTO {block} VALUES (1)")
    dbs.dest.query(
        f'CREATE FUNCTION "{schema}".test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN '
        f"IF EXISTS (SELECT 1 FROM {block}) THEN "
        "RAISE EXCEPTION 'held back by the test' USING ERRCODE = '40001'; END IF; RETURN NEW; END $$"
    )
    dbs.dest.query(
        "CREATE TRIGGER test_refuse BEFORE INSERT OR UPDATE ON {} FOR EACH ROW "
        f'EXECUTE FUNCTION "{schema}".test_refuse()',
        "nokey",
    )
    dbs.dest.conn.commit()

    # one source transaction, one batch: acct's part commits, nokey's fails until unblocked
    conn = mysql_root(dbs.name)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("UPDATE acct SET v = 'changed' WHERE id <= 6")
            for i in range(1, 6):
                cur.execute("INSERT INTO nokey VALUES (%s, 'new')", (i,))
            cur.execute("COMMIT")
    finally:
        conn.close()

    def acct_applied() -> bool:
        rows = dbs.dest.query("SELECT count(*) FROM {} WHERE v = 'changed'", "acct")
        dbs.dest.conn.commit()
        return rows[0][0] == 6

    wait_until(acct_applied, 60, "acct's part of the batch to commit")
    wait_until(lambda: "giving up" in w.output or not w.alive(), 60, "nokey's writes to fail for good")
    assert w.alive(), w.output[-4000:]
    applied = _synced(dbs, "acct", "id")
    dbs.dest.conn.commit()

    dbs.dest.query(f"DELETE FROM {block}")
    dbs.dest.conn.commit()
    assert_converged(dbs, w, ["acct", "nokey"])
    out = stop_cleanly(w)

    after = _synced(dbs, "acct", "id")
    for i in range(1, 7):  # acct's rows were not written a second time
        assert after[i] == applied[i], (i, after[i], applied[i])
    assert _dest_rows(dbs, "nokey", "a, b") == [(0, "seed")] + [(i, "new") for i in range(1, 6)]
    assert "applying batch" in out and "not written again" in out, out[-4000:]
