"""verify's first pass: each database computes the next ranges' checksums while the last one is
compared, the source over two connections, and each range is compared by one digest a side (its
rows' renderings joined in key order, hashed once) where both sides can compute it
(warpd/verify_ranges.py, ``TableVerifier._pass``; base.RangeChecksums).

The verifier runs in this process over the real MariaDB source and each real destination, with
ranges of 50 rows so that one table makes dozens of them; the tests assert what a user sees in the
report (the differing keys, the rows counted), that an error on one side stops the check with
that error and leaves every connection usable, that both databases digest equal rows alike
whatever their keys' collation, and that a range a database cannot digest whole is still compared.
"""

from __future__ import annotations

import hashlib
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
REGIONS = ["a", "B", "c", "é", "Z", "zz", " lead", "tail "]


@pytest.fixture
def replicated(dbs: Databases, warp: Callable[..., Warp], tmp_path: Any) -> Iterator[SchemaRunner]:
    """``items`` (ROWS rows) replicated by the real process, and a runner holding both connections."""
    dbs.sql("CREATE TABLE items (id INT PRIMARY KEY, label VARCHAR(40), qty INT)")
    dbs.many("INSERT INTO items VALUES (%s, %s, %s)", [(i, f"item {i}", i % 7) for i in range(1, ROWS + 1)])
    # a composite text key MariaDB's collation orders otherwise than byte by byte ('B' < 'a' < 'é')
    dbs.sql("CREATE TABLE pairs (region VARCHAR(20), n INT, v TEXT, PRIMARY KEY (region, n))")
    dbs.many("INSERT INTO pairs VALUES (%s, %s, %s)", [(r, n, f"v,{n}") for r in REGIONS for n in range(50)])
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

    def range_checksum(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        self.calls += 1
        if self.calls == self.after:
            raise TransientError("the destination went away in the middle of the pass")
        return self._real.range_checksum(*args, **kwargs)  # type: ignore[no-any-return]


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


def _expected_digest(rows: list[tuple[str, int, str]]) -> int:
    """verify's digest of ``pairs`` rows (docs/verify.md): each row's rendering (``,``-joined parts,
    text as ``<bytes>:<text>``), the rows joined by ``,`` in key order (text by its UTF-8 bytes),
    the MD5's first 60 bits."""
    ordered = sorted(rows, key=lambda r: (r[0].encode(), r[1]))
    joined = ",".join(
        f"{len(region.encode())}:{region},{n},{len(v.encode())}:{v}" for region, n, v in ordered
    )
    return int(hashlib.md5(joined.encode()).hexdigest()[:15], 16)  # noqa: S324 - a checksum


def test_both_databases_digest_a_range_as_specified_whatever_their_collation(
    replicated: SchemaRunner,
) -> None:
    runner = replicated
    plan = runner.plan_of("pairs")
    columns = ["region", "n", "v"]
    rows = [(r, n, f"v,{n}") for r in REGIONS for n in range(50)]
    assert runner.source.verify_range_digest and runner.dest.verify_range_digest
    for side in (runner.source, runner.dest):
        assert side.range_checksum(plan, columns, None, None, digest=True) == (
            len(rows),
            _expected_digest(rows),
        )
        # a range within the key space: ("B", 49) < key <= ("zz", 10) in UTF-8 byte order
        inner = [r for r in rows if (b"B", 49) < (r[0].encode(), r[1]) <= (b"zz", 10)]
        found = side.range_checksum(plan, columns, (b"B", 49), (b"zz", 10), digest=True)
        assert found == (len(inner), _expected_digest(inner)), side
        last = ("é".encode(), 49)  # the greatest key in UTF-8 byte order: nothing after it
        assert side.range_checksum(plan, columns, last, None, digest=True) == (0, 0)


def test_a_range_too_long_to_digest_is_compared_by_its_rows_hashes(
    dbs: Databases, replicated: SchemaRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB cuts a GROUP_CONCAT longer than its limit (a warning): that side's digest is unknown,
    and verify compares the range by the sum of its rows' hashes instead, down to the keys."""
    from warpd.connectors.mysql import rowhash as mysql_rowhash

    monkeypatch.setattr(mysql_rowhash, "PACKED_MAX", 512)  # about 20 rows of pairs joined
    runner = replicated
    plan = runner.plan_of("pairs")
    count, digest = runner.source.range_checksum(plan, ["region", "n", "v"], None, None, digest=True)
    assert (count, digest) == (len(REGIONS) * 50, None)

    report = TableVerifier(runner.source, runner.dest, plan, range_rows=100).run()
    assert report.equal and report.source_rows == len(REGIONS) * 50

    pairs = dbs.dest.ident("pairs")
    dbs.dest.query(f"UPDATE {pairs} SET v = 'changed' WHERE region = 'é' AND n = 7")  # noqa: S608
    report = TableVerifier(runner.source, runner.dest, plan, range_rows=100, max_keys=5).run()
    assert [(kind, key) for kind, key in report.keys] == [("different", {"region": "é", "n": "7"})]
