"""The BigQuery destination's own behaviour, end to end: MariaDB -> BigQuery (emulator).

The shared suites (test_replication, test_type_mapping, test_faults, test_mongo_replication) run
against BigQuery too (``destinations(bigquery=True)``).  This module covers what is BigQuery's own:
its renaming of names, the faults of its API (injected by an HTTP proxy in front of the emulator:
transient errors, a call that hangs, a quota error), the merge coalescing of ``min_flush_interval``,
and the conversion into JSON of a column whose MongoDB values change kind.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from conftest import Databases, Warp, wait_converged, wait_until, write_config

from tests import bigquery_support

STREAMING = "streaming changes from"


@pytest.fixture
def destination_kind() -> str:
    return "bigquery"


# -- a proxy in front of the emulator that injects faults ----------------------------------------
Rule = Callable[[str, str, bytes], tuple[int, dict[str, Any]] | float | None]


class FaultProxy:
    """Forwards HTTP to the emulator; ``rule(method, path, body)`` may answer instead (status, JSON
    error body), delay the request by some seconds, or let it through (None).  Counts what it saw."""

    def __init__(self, upstream: str, rule: Rule | None = None):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.rule = rule
        self.seen: list[tuple[str, str, bytes]] = []
        self.injected = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.seen.append((self.command, self.path, body))
                verdict = proxy.rule(self.command, self.path, body) if proxy.rule else None
                if isinstance(verdict, tuple):
                    proxy.injected += 1
                    status, payload = verdict
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if isinstance(verdict, (int, float)):
                    proxy.injected += 1
                    time.sleep(verdict)
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def _quiet(self) -> None:
                try:
                    self._any()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on this call (a hung call it abandoned): as BigQuery would see it

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _quiet

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def merges(self, table: str) -> int:
        """MERGE statements sent for ``table`` (query jobs whose text merges into it)."""
        pattern = re.compile(rf"MERGE `[^`]*\.{re.escape(table)}` AS T", re.S)
        return sum(
            1
            for m, p, b in self.seen
            if m == "POST" and "/jobs" in p and pattern.search(b.decode(errors="replace"))
        )


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    bigquery_support.require_emulator()
    if not bigquery_support.emulated():
        pytest.skip("faults are injected between the client and the emulator; real BigQuery is not proxied")
    p = FaultProxy(bigquery_support.endpoint())
    yield p
    p.close()


def is_query_job(method: str, path: str, body: bytes) -> bool:
    return method == "POST" and path.split("?")[0].endswith("/jobs") and b'"query"' in body


def through(proxy: FaultProxy, dbs: Databases, **params: Any) -> list[str]:
    """cartridge-warp arguments that send the destination through ``proxy``."""
    query = "&".join(
        f"{k}={v}" for k, v in {"api_endpoint": proxy.url, "min_flush_interval": 0.2, **params}.items()
    )
    return ["--destination", f"bigquery://{bigquery_support.PROJECT}?{query}"]


def start(warp: Callable[..., Warp], extra: list[str], config: str | None = None) -> Warp:
    w = warp(config, extra=extra)
    wait_until(lambda: STREAMING in w.output or not w.alive(), 150, "the snapshot to finish")
    assert w.alive(), f"cartridge-warp exited early with {w.proc.poll()}:\n{w.output[-4000:]}"
    return w


def orders(dbs: Databases, n: int = 40) -> None:
    dbs.sql("CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(40), qty INT, price DECIMAL(10,2))")
    dbs.many(
        "INSERT INTO orders VALUES (%s, %s, %s, %s)",
        [(i, f"item {i}", i % 7, f"{i}.25") for i in range(1, n + 1)],
    )


# -- faults ---------------------------------------------------------------------------------------
def test_transient_api_errors_are_retried_and_nothing_is_lost(
    dbs: Databases, warp: Callable[..., Warp], proxy: FaultProxy
) -> None:
    orders(dbs)
    w = start(warp, through(proxy, dbs))
    failures = {"left": 0}

    def rule(method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]] | None:
        if failures["left"] > 0 and is_query_job(method, path, body):
            failures["left"] -= 1
            return 503, {
                "error": {
                    "code": 503,
                    "message": "backend unavailable",
                    "errors": [{"reason": "backendError"}],
                }
            }
        return None

    proxy.rule = rule
    failures["left"] = 3
    dbs.sql("UPDATE orders SET qty = qty + 100 WHERE id <= 10")
    dbs.sql("DELETE FROM orders WHERE id > 35")
    dbs.many("INSERT INTO orders VALUES (%s, %s, %s, %s)", [(i, "late", 1, "0.50") for i in range(100, 110)])
    wait_converged(dbs, w, 120)
    assert proxy.injected == 3
    assert "retrying" in w.output.lower() or "retry" in w.output.lower()
    assert dbs.dest.query("SELECT count(*) FROM {} WHERE qty >= 100", "orders") == [(10,)]


def test_a_call_that_hangs_is_abandoned_after_job_timeout_and_retried(
    dbs: Databases, warp: Callable[..., Warp], proxy: FaultProxy
) -> None:
    orders(dbs)
    w = start(warp, through(proxy, dbs, job_timeout=3))
    hung = {"left": 0}

    def rule(method: str, path: str, body: bytes) -> float | None:
        if hung["left"] > 0 and is_query_job(method, path, body):
            hung["left"] -= 1
            return 600.0  # far longer than the test waits: only a bounded call lets it converge
        return None

    proxy.rule = rule
    hung["left"] = 1
    dbs.sql("UPDATE orders SET item = 'changed' WHERE id <= 5")
    wait_converged(dbs, w, 90)
    assert proxy.injected == 1
    assert dbs.dest.query("SELECT count(*) FROM {} WHERE item = 'changed'", "orders") == [(5,)]


def test_a_quota_error_stops_naming_the_quota_and_a_restart_loses_nothing(
    dbs: Databases, warp: Callable[..., Warp], proxy: FaultProxy
) -> None:
    orders(dbs)
    w = start(warp, through(proxy, dbs))
    quota = "Quota exceeded: Your table exceeded quota for imports or query appends per table"

    def rule(method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]] | None:
        if is_query_job(method, path, body):
            return 403, {
                "error": {
                    "code": 403,
                    "message": quota,
                    "errors": [{"reason": "quotaExceeded", "message": quota}],
                }
            }
        return None

    proxy.rule = rule
    dbs.sql("UPDATE orders SET qty = -1 WHERE id <= 3")
    rc = w.wait(60)
    assert rc == 1, w.output[-3000:]
    assert "quota" in w.output.lower() and "imports or query appends per table" in w.output
    # no retry loop: the quota error was met once per write attempt, not max_attempts times
    assert proxy.injected == 1
    proxy.rule = None
    w2 = start(warp, through(proxy, dbs))
    wait_converged(dbs, w2, 120)
    assert dbs.dest.query("SELECT count(*) FROM {} WHERE qty = -1", "orders") == [(3,)]


# -- cost: merges are coalesced up to min_flush_interval --------------------------------------------
def test_min_flush_interval_bounds_the_merges_per_table(
    dbs: Databases, warp: Callable[..., Warp], proxy: FaultProxy
) -> None:
    orders(dbs, 5)
    w = start(warp, through(proxy, dbs, min_flush_interval=4))
    before = proxy.merges("orders")
    started = time.monotonic()
    for i in range(60):  # one change every 0.1 s for 6 s: 30 flushes at the 200 ms batch latency
        dbs.sql("INSERT INTO orders VALUES (%s, 'x', 1, '1.00')", (1000 + i,))
        time.sleep(0.1)
    wait_converged(dbs, w, 60)
    elapsed = time.monotonic() - started
    merges = proxy.merges("orders") - before
    # at most one merge per 4 s of the run, plus the one that started the first interval
    assert 1 <= merges <= int(elapsed / 4) + 2, (merges, elapsed)


# -- names ----------------------------------------------------------------------------------------
def test_hostile_names_follow_the_documented_renaming(dbs: Databases, warp: Callable[..., Warp]) -> None:
    evil = 'x"; DROP TABLE y; --'
    dbs.sql("CREATE TABLE y (id INT PRIMARY KEY, v TEXT)")
    dbs.sql("INSERT INTO y VALUES (1, 'must survive')")
    dbs.sql(
        f'CREATE TABLE `{evil}` (id INT PRIMARY KEY, `col with space` TEXT, `quo"te` TEXT, `back``tick` TEXT, '
        "`select` INT, `Mixed Case` INT, `Mixed-Case` INT, `2fa` INT, `_TABLE_x` INT, `pct%s` INT, naïve TEXT)"
    )
    dbs.many(
        f"INSERT INTO `{evil}` VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            (i, f"sp {i}", f'q"{i}', f"b`{i}", i, -i, i * 2, i * 3, i * 4, i * 5, f"naïve {i}")
            for i in range(1, 21)
        ],
    )
    w = start(warp, [])
    wait_converged(dbs, w, 120)
    dbs.sql(f"UPDATE `{evil}` SET `select` = `select` + 1000, `Mixed-Case` = 0 WHERE id <= 5")
    dbs.sql(f"DELETE FROM `{evil}` WHERE id > 15")
    wait_converged(dbs, w, 120)

    table = bigquery_support.documented_name(evil)
    assert set(dbs.dest.tables()) == {"y", table}
    source_columns = ["col with space", 'quo"te', "back`tick", "select", "Mixed Case", "Mixed-Case", "2fa"]
    source_columns += ["_TABLE_x", "pct%s", "naïve"]
    expected = ["id", *(bigquery_support.documented_name(c) for c in source_columns)]
    assert dbs.dest.columns(table) == expected
    assert expected[1] == "col_with_space_" + hashlib.sha1(b"col with space").hexdigest()[:8]
    assert expected[4:6] == ["select", "Mixed_Case_c5a2577b"]  # a valid name is kept as it is
    mixed = bigquery_support.documented_name("Mixed-Case")
    assert dbs.dest.query(f"SELECT `select`, {mixed} FROM {{}} WHERE id = 1", table) == [(1001, 0)]
    assert dbs.dest.query("SELECT v FROM {}", "y") == [("must survive",)]

    # names depend on the name alone: dropping a column, or adding one before it, moves no data
    dbs.sql("CREATE TABLE pair (id INT PRIMARY KEY, `a-b` INT, a_b INT)")
    dbs.many("INSERT INTO pair VALUES (%s, %s, %s)", [(i, -i, i) for i in range(1, 11)])
    wait_converged(dbs, w, 120)
    dbs.sql("ALTER TABLE pair DROP COLUMN `a-b`")
    dbs.sql("ALTER TABLE pair ADD COLUMN `x-y` INT FIRST")
    dbs.sql("UPDATE pair SET `x-y` = 7 WHERE id <= 3")
    wait_converged(dbs, w, 120)
    assert dbs.dest.query("SELECT sum(a_b) FROM {}", "pair") == [(55,)]
    w.stop()


def test_documented_names_are_what_the_connector_does() -> None:
    from warpd.connectors.bigquery.naming import clean, table_name

    for name in ("a b", "9lives", "_PARTITIONTIME", "ok_name", "é", "x-y"):
        assert clean(name) == bigquery_support.documented_name(name)
        assert table_name(name) == bigquery_support.documented_name(name)


# -- MongoDB: a field whose values change kind widens into JSON in place -------------------------------
def test_values_widened_into_json_keep_their_values_by_the_shared_rule(dbs: Databases) -> None:
    """A column of numbers that must become JSON (EVOLVE) is converted in place, each value as the shared
    rule of warpd.types renders it, and later JSON values arrive beside them."""
    from warpd.connectors.registry import destination_factory
    from warpd.types import Column, ColumnType, Kind, TableSchema

    dest = destination_factory("bigquery")(bigquery_support.destination_uri(), "tests")
    try:

        def shape(v: Kind, t: Kind) -> TableSchema:
            cols = (
                Column("id", ColumnType(Kind.INT, bits=64)),
                Column("v", ColumnType(v)),
                Column("t", ColumnType(t)),
            )
            return TableSchema("w", cols, ("id",))

        old = shape(Kind.DECIMAL, Kind.TIMESTAMPTZ)
        plan = dest.plan(old, dbs.dest_schema, soft_delete=False, metadata=False)
        dest.prepare(plan)
        import datetime as dt
        from decimal import Decimal

        rows = [
            {"id": 1, "v": Decimal("1.50"), "t": dt.datetime(2020, 1, 2, 3, 4, 5, 500000, tzinfo=dt.UTC)},
            {"id": 2, "v": Decimal("-0"), "t": dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)},
            {"id": 3, "v": None, "t": None},
        ]
        dest.write(plan, [dest.encode(plan, r, "insert", None) for r in rows])
        new = shape(Kind.JSON, Kind.JSON)
        new_plan = dest.plan(new, dbs.dest_schema, soft_delete=False, metadata=False)
        dest.evolve(plan, new_plan)
        dest.evolve(plan, new_plan)  # a replay changes nothing
        dest.write(
            new_plan,
            [dest.encode(new_plan, {"id": 4, "v": '{"a": [1, "x"]}', "t": '"later"'}, "insert", None)],
        )
        got = {r["id"]: (r["v"], r["t"]) for r in dest.read_rows(new_plan)}
        assert got == {
            1: (1.5, "2020-01-02T03:04:05.5+00:00"),
            2: (0, "2020-01-02T03:04:05+00:00"),
            3: (None, None),
            4: ({"a": [1, "x"]}, "later"),
        }
        assert dict(dbs.dest.column_types("w")) == {"id": "integer", "v": "json", "t": "json"}
    finally:
        dest.close()


# -- the position guard: a change is merged only over an older one ---------------------------------
def test_the_merge_takes_a_row_only_to_a_newer_change(dbs: Databases) -> None:
    """Each row keeps its change's source order (MySQL: binlog file, position, row); an older or equal
    change (a replay) leaves it as it is, a newer one applies; snapshot rows (no order) always apply."""
    from warpd.connectors.registry import destination_factory
    from warpd.types import Column, ColumnType, Kind, TableSchema

    dest = destination_factory("bigquery")(bigquery_support.destination_uri(), "tests")
    shape = TableSchema(
        "g", (Column("id", ColumnType(Kind.INT, bits=64)), Column("v", ColumnType(Kind.TEXT))), ("id",)
    )
    try:
        for soft in (False, True):
            plan = dest.plan(shape, dbs.dest_schema, soft_delete=soft, metadata=False)
            plan = type(plan)(**{**plan.__dict__, "dest_table": f"g_{'soft' if soft else 'hard'}"})
            dest.prepare(plan)

            _guard_steps(dest, plan, soft)
    finally:
        dest.close()


def _guard_steps(dest: Any, plan: Any, soft: bool) -> None:
    def put(row_id: int, value: str, order: str | None, delete: bool = False) -> None:
        rec = dest.encode(
            plan, {"id": row_id, "v": value}, "delete" if delete else "update", None, order=order
        )
        dest.write(plan, [] if delete else [rec], [rec] if delete else [])

    def live() -> dict[int, str]:
        return {r["id"]: r["v"] for r in dest.read_rows(plan)}

    put(1, "snapshot", None)
    put(2, "snapshot", None)
    put(1, "new", "0000000002")
    put(1, "old", "0000000001")  # older: refused
    put(1, "again", "0000000002")  # the same change replayed: refused (it changes nothing)
    assert live() == {1: "new", 2: "snapshot"}
    put(1, "", "0000000001", delete=True)  # an older delete does not remove a newer row
    assert live() == {1: "new", 2: "snapshot"}
    put(1, "", "0000000003", delete=True)
    put(2, "newer", "0000000004")
    assert live() == {2: "newer"}
    if soft:  # a soft-deleted row keeps its order: a replayed older insert does not revive it
        put(1, "revived", "0000000002")
        assert live() == {2: "newer"}
    put(1, "reborn", "0000000005")
    assert live() == {1: "reborn", 2: "newer"}


def test_a_replay_after_a_crash_before_the_checkpoint_changes_nothing(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """The crash this guards against: merges committed, the checkpoint not yet stored.  Rewinding the
    stored checkpoint to before them replays every one; no row may change, not even _warp_synced_at."""
    from warpd.state.store import StateStore

    dbs.sql("CREATE TABLE acct (id INT PRIMARY KEY, balance INT, note VARCHAR(20))")
    dbs.many("INSERT INTO acct VALUES (%s, %s, %s)", [(i, 100, "open") for i in range(1, 31)])
    config = write_config(tmp_path, f"metadata_columns: true\nschemas:\n  - name: {dbs.name}\n")
    w = start(warp, [], config)
    store = StateStore(str(tmp_path / "state"))
    try:
        wait_until(lambda: store.checkpoint(dbs.name) is not None, 30, "the first checkpoint")
        before_changes = store.checkpoint(dbs.name)
        for i in range(1, 11):
            dbs.sql("UPDATE acct SET balance = balance - %s, note = 'paid' WHERE id = %s", (i, i))
        dbs.sql("UPDATE acct SET balance = balance + 1 WHERE id <= 5")  # rows changed twice
        dbs.sql("DELETE FROM acct WHERE id > 25")
        dbs.many("INSERT INTO acct VALUES (%s, %s, %s)", [(i, 7, "new") for i in range(100, 105)])
        dbs.sql("UPDATE acct SET id = id + 1000 WHERE id = 20")  # a key change
        wait_converged(dbs, w, 120)
        assert w.stop() == 0, w.output[-3000:]
        synced = dict(dbs.dest.query("SELECT id, _warp_synced_at FROM {}", "acct"))
        store.save_checkpoint(dbs.name, before_changes, None)  # as if the process died before storing it
    finally:
        store.close()
    w2 = start(warp, [], config)
    wait_converged(dbs, w2, 120)
    time.sleep(3)  # the replay is read and merged well within this (min_flush_interval 0.2 s)
    assert "Traceback" not in w2.output
    again = dict(dbs.dest.query("SELECT id, _warp_synced_at FROM {}", "acct"))
    assert again == synced, {
        k: (synced.get(k), again.get(k)) for k in set(synced) | set(again) if synced.get(k) != again.get(k)
    }
    assert w2.stop() == 0


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        (
            '{"a": 0.1, "b": 2.50, "c": 1E2, "d": -0.0, "e": [18446744073709551615, -9223372036854775808]}',
            '{"a": 0.1, "b": 2.5, "c": 100.0, "d": -0.0, "e": [18446744073709551615, -9223372036854775808]}',
        ),
        # MongoDB doubles written out in full (the shared rule's JSON), each the value of its double: sent
        # in the double's shortest form; an integer within 64 bits and a number inside a string unchanged
        (
            '{"1e300": [1' + "0" * 300 + ', "1' + "0" * 300 + '"], "n": 9007199254740993}',
            '{"1e300": [1e+300, "1' + "0" * 300 + '"], "n": 9007199254740993}',
        ),
        ("-0." + "0" * 323 + "5", "-5e-324"),
        ("17976931348623157" + "0" * 292, "1.7976931348623157e+308"),  # the largest double's shortest decimal
        (str(int(1.7976931348623157e308)), None),  # its exact binary value: BigQuery reads back ...157e308
        ('{"k\\"1.50": 1.50}', '{"k\\"1.50": 1.5}'),
        ('{"n": 3.141592653589793238462}', None),  # more digits than a double keeps
        ("[123456789012345678901234567890]", None),  # beyond 64-bit integers and a double
        ("[18446744073709551616]", None),  # 2**64: a double holds it, but reads back as ...552000
        ("[1" + "0" * 300 + "1]", None),
        ("[1e400]", None),
        ("[NaN]", None),
        ("{not json", None),
    ],
)
def test_json_numbers_bigquery_cannot_hold_exactly_are_refused_before_the_load(
    text: str, sent: str | None
) -> None:
    """docs/bigquery.md, "Type mapping": refused here (the row goes to the dead letters), never rounded by
    PARSE_JSON, whatever the server does with it; what BigQuery holds as a double travels in the double's
    shortest form, exactly the same value."""
    from warpd.connectors.bigquery.types import field_encoder
    from warpd.types import ColumnType, Kind

    encode = field_encoder(ColumnType(Kind.JSON))
    if sent is None:
        with pytest.raises(ValueError):
            encode(text)
        return
    assert encode(text) == sent
    parse = {"parse_float": Decimal, "parse_int": Decimal}
    assert json.loads(sent, **parse) == json.loads(text, **parse)  # the same values, exactly


def test_a_long_min_flush_interval_still_flushes_at_twenty_batches(
    dbs: Databases, warp: Callable[..., Warp], tmp_path: Any
) -> None:
    """Memory stays bounded while min_flush_interval holds changes back: a MySQL source gives no event
    sizes, so the engine flushes once a table has 20 batches' worth waiting, whatever the interval."""
    dbs.sql("CREATE TABLE ev (id INT PRIMARY KEY, v INT)")
    config = write_config(tmp_path, f"batch_size: 10\nschemas:\n  - name: {dbs.name}\n")
    uri = bigquery_support.destination_uri(min_flush_interval=3600)
    w = start(warp, ["--destination", uri], config)
    dbs.many("INSERT INTO ev VALUES (%s, %s)", [(i, i) for i in range(1, 6)])
    wait_until(lambda: dbs.dest.count("ev") == 5, 60, "the first flush")  # none before it: at once
    dbs.many("INSERT INTO ev VALUES (%s, %s)", [(i, i) for i in range(6, 11)])
    time.sleep(3)  # within the interval: held back
    assert dbs.dest.count("ev") == 5
    for i in range(11, 236):
        dbs.sql("INSERT INTO ev VALUES (%s, %s)", (i, i))
    wait_until(lambda: (dbs.dest.count("ev") or 0) >= 205, 60, "the flush at 20 batches (200 changes)")
    assert w.alive()
    w.kill()


def test_only_refused_values_count_as_bad_rows() -> None:
    """A request BigQuery cannot parse is not a row at fault: it must not send good rows to the dead letters."""
    from google.api_core.exceptions import BadRequest, Forbidden

    from warpd.connectors.bigquery.destination import BigQueryDestination

    dest = BigQueryDestination("bigquery://p-1?api_endpoint=http://127.0.0.1:1")
    value = [{"reason": "invalidQuery", "message": "Could not convert string 'x' to INT64"}]
    assert dest.rejects_rows(BadRequest("Could not convert string 'x' to INT64", errors=value))
    assert dest.rejects_rows(
        BadRequest(
            "Invalid NUMERIC value: 1e99",
            errors=[{"reason": "invalidQuery", "message": "Invalid NUMERIC value: 1e99"}],
        )
    )
    payload = [{"reason": "invalid", "message": "Invalid JSON payload received. Unknown name"}]
    assert not dest.rejects_rows(BadRequest("Invalid JSON payload received. Unknown name", errors=payload))
    assert not dest.rejects_rows(
        BadRequest("Syntax error: Unexpected keyword", errors=[{"reason": "invalidQuery"}])
    )
    assert not dest.rejects_rows(Forbidden("Access Denied", errors=[{"reason": "accessDenied"}]))


@pytest.mark.parametrize(
    ("value", "held"),
    [
        ("0E-40", "0"),
        ("1." + "0" * 40, "1"),
        ("-0.00", "-0"),
        ("1E+5", "100000"),
        ("1" * 38 + ".5", "1" * 38 + ".5"),
    ],
)
def test_trailing_zeros_do_not_count_against_bignumeric(value: str, held: str) -> None:
    from decimal import Decimal

    from warpd.connectors.bigquery.types import field_encoder
    from warpd.types import ColumnType, Kind

    assert field_encoder(ColumnType(Kind.DECIMAL))(Decimal(value)) == held


def test_a_column_widened_into_json_in_a_table_keyed_by_json(dbs: Databases) -> None:
    """MongoDB documents as _id (a JSON key): the rows are found again by their key's JSON text."""
    from warpd.connectors.registry import destination_factory
    from warpd.types import Column, ColumnType, Kind, TableSchema

    def shape(n: Kind) -> TableSchema:
        cols = (Column("_id", ColumnType(Kind.JSON)), Column("n", ColumnType(n)))
        return TableSchema("docs", cols, ("_id",))

    dest = destination_factory("bigquery")(bigquery_support.destination_uri(), "tests")
    try:
        plan = dest.plan(shape(Kind.INT), dbs.dest_schema, soft_delete=False, metadata=False)
        dest.prepare(plan)
        rows = [{"_id": '{"k": 1}', "n": 1}, {"_id": '{"k": 2}', "n": 2}, {"_id": '"s"', "n": None}]
        dest.write(plan, [dest.encode(plan, r, "insert", None) for r in rows])
        new_plan = dest.plan(shape(Kind.JSON), dbs.dest_schema, soft_delete=False, metadata=False)
        dest.evolve(plan, new_plan)
        got = sorted((json.dumps(r["_id"]), r["n"]) for r in dest.read_rows(new_plan))
        assert got == [('"s"', None), ('{"k": 1}', 1), ('{"k": 2}', 2)]
    finally:
        dest.close()
