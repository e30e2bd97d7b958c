"""verify's first pass reads ahead: each database computes the next ranges' checksums while the
last one is compared (warpd/verify_ranges.py, ``TableVerifier._pass``).

The verifier runs in this process over the real MariaDB source and each real destination, with
ranges of 50 rows so that one table makes dozens of them; the tests assert what a user sees in the
report (the differing keys, the rows counted) and that an error on one side stops the check with
that error and leaves both connections usable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Databases, Warp
from test_verify import daemon_config, replicate

from warpd.config import load_config
from warpd.engine.runner import SchemaRunner
from warpd.errors import TransientError
from warpd.verify_ranges import AHEAD, TableVerifier

pytestmark = pytest.mark.destinations

ROWS = 2_000


@pytest.fixture
def replicated(dbs: Databases, warp: Callable[..., Warp], tmp_path: Any) -> Iterator[SchemaRunner]:
    """``items`` (ROWS rows) replicated by the real process, and a runner holding both connections."""
    dbs.sql("CREATE TABLE items (id INT PRIMARY KEY, label VARCHAR(40), qty INT)")
    dbs.many("INSERT INTO items VALUES (%s, %s, %s)", [(i, f"item {i}", i % 7) for i in range(1, ROWS + 1)])
    config_path = daemon_config(dbs, tmp_path)
    replicate(dbs, warp, config_path)
    config = load_config(config_path)
    runner = SchemaRunner(config, config.schemas[0], store=None)
    runner.dest.connect()
    try:
        yield runner
    finally:
        runner.close()


def _keys(report: Any) -> list[tuple[str, str]]:
    return sorted((kind, key["id"]) for kind, key in report.keys)


@pytest.mark.parametrize("readers", [0, 2])
def test_differences_in_many_ranges_are_each_found_while_both_sides_read_ahead(
    dbs: Databases, replicated: SchemaRunner, readers: int
) -> None:
    items = dbs.dest.ident("items")
    # one edit in each of several ranges, the first range and the last included
    dbs.dest.query(f"UPDATE {items} SET label = 'changed' WHERE id IN (3, 777)")  # noqa: S608
    dbs.dest.query(f"DELETE FROM {items} WHERE id IN (1201, 1999)")  # noqa: S608
    dbs.dest.query(f"INSERT INTO {items} VALUES (2500, 'extra', 1)")  # noqa: S608
    runner = replicated
    plan = runner.plan_of("items")
    more = [runner.new_source() for _ in range(readers)]  # ranges dealt among three connections
    try:
        report = TableVerifier(
            runner.source, runner.dest, plan, range_rows=50, max_keys=10, readers=more
        ).run()
    finally:
        for reader in more:
            reader.close()

    assert _keys(report) == [
        ("different", "3"),
        ("different", "777"),
        ("extra", "2500"),
        ("missing", "1201"),
        ("missing", "1999"),
    ]
    assert (report.source_rows, report.destination_rows) == (ROWS, ROWS - 1)
    assert report.ranges >= ROWS // 50  # every range compared (and the differing ones narrowed)


class _FailingAfter:
    """A connector whose ``range_checksum`` raises on its ``after``-th call (the database went away
    in the middle of the pass); everything else is the real connector's."""

    def __init__(self, real: Any, after: int):
        self._real, self.after, self.calls = real, after, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def range_checksum(self, *args: Any) -> tuple[int, int]:
        self.calls += 1
        if self.calls == self.after:
            raise TransientError("the destination went away in the middle of the pass")
        return self._real.range_checksum(*args)  # type: ignore[no-any-return]


class _Counting(_FailingAfter):
    def __init__(self, real: Any):
        super().__init__(real, after=0)


@pytest.mark.parametrize("failing", ["source", "destination", "reader"])
def test_an_error_on_one_side_stops_the_pass_with_that_error_and_all_connections_stay_usable(
    replicated: SchemaRunner, failing: str
) -> None:
    runner = replicated
    plan = runner.plan_of("items")
    reader = runner.new_source()  # the source's second connection, as verify's command opens one
    try:
        source = _Counting(runner.source)
        dest = _Counting(runner.dest)
        more = _Counting(reader)
        broken = {"source": source, "destination": dest, "reader": more}[failing]
        broken.after = 5

        with pytest.raises(TransientError, match="went away in the middle of the pass"):
            TableVerifier(source, dest, plan, range_rows=50, readers=[more]).run()
        # nothing was read past the ranges already asked for when the error came (the failing
        # connection's fifth is at most the tenth range, and 2 * AHEAD are read ahead of the one
        # compared): a read of each of the table's 40 ranges at both sides would be 80
        reads = source.calls + dest.calls + more.calls
        assert reads <= 2 * (10 + 2 * AHEAD), (failing, source.calls, dest.calls, more.calls)

        # nothing was left running on any connection: a new check over the same ones completes
        report = TableVerifier(runner.source, runner.dest, plan, range_rows=50, readers=[reader]).run()
        assert report.equal and report.source_rows == ROWS
    finally:
        reader.close()

    # nothing was left running on either connection: a new check over the same ones completes
    report = TableVerifier(runner.source, runner.dest, plan, range_rows=50).run()
    assert report.equal and report.source_rows == ROWS
