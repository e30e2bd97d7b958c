"""warpd's scheduled verify of a streaming schema (``verify: {every: 24h, repair: false}``; docs/verify.md).

One thread of the schema process, with a source and a destination connection
of its own (opened for each run, closed after it), so the stream's
connections and loop are untouched: the checksums are computed by the
databases, the stream only shares the interpreter with it.  The first verify
runs once the schema streams, the next ``every`` seconds after the start of
the last; one thread, so never two verifies of one schema at once.

Each table is compared with :class:`~warpd.verify_ranges.TableVerifier`; with
``repair`` its differing keys are re-copied by
:func:`~warpd.engine.repair.repair_keys` under the table's lock, as
``verify --repair`` does through the running process.  Paused and resyncing
tables are left out.  A table that cannot be verified (no key, a key kind
verify does not support) is named once in a WARNING and left out; a verify
that cannot finish (a database unreachable, a query failed) logs a WARNING
and counts as a failed run: the stream goes on.

Metrics (docs/metrics.md): ``verify_differences`` (keys the last finished
verify of a table found), ``verify_last_success_timestamp_seconds`` (when it
finished), ``verify_repaired_keys_total`` and ``verify_runs_total``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from warpd import metrics
from warpd.connectors.registry import destination_factory
from warpd.engine.repair import MAX_REPAIR_KEYS, repair_keys
from warpd.errors import ConfigError
from warpd.redact import redact
from warpd.verify_ranges import TableVerifier

if TYPE_CHECKING:
    from collections.abc import Callable

    from warpd.config.model import VerifySchedule
    from warpd.engine.runner import SchemaRunner

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


class ScheduledVerify:
    """Verifies ``runner``'s tables every ``schedule.every`` seconds in a thread; see the module docstring."""

    def __init__(
        self,
        runner: SchemaRunner,
        schedule: VerifySchedule,
        lock_for: Callable[[str], threading.RLock],
        left_out: Callable[[], frozenset[str]],
    ):
        self.runner = runner
        self.name = runner.name
        self.schedule = schedule
        self.lock_for = lock_for
        self.left_out = left_out  # paused and resyncing tables
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="verify", daemon=True)
        self._refused: set[str] = set()
        self.running_since: float | None = None
        self.next_at: float | None = None  # epoch seconds
        self.last: dict[str, Any] | None = None

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def document(self) -> dict[str, Any]:
        """What ``warpctl status`` shows: the schedule, the last run, the next."""
        return {
            "every": self.schedule.every,
            "repair": self.schedule.repair,
            "running_since": self.running_since,
            "next_at": self.next_at,
            "last": self.last,
        }

    def _loop(self) -> None:
        due: float | None = None
        while not self._stop.wait(POLL_SECONDS):
            if self.runner.phase != "streaming":
                continue
            now = time.monotonic()
            if due is None:
                due = now  # the first verify runs once the schema streams
                self.next_at = time.time()
            if now < due:
                continue
            due = now + self.schedule.every
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - a failed verify is reported, never a crash of the schema
                self._finished(time.time(), "failed", 0, 0, redact(str(exc).strip() or type(exc).__name__))
            self.next_at = time.time() + max(0.0, due - time.monotonic())

    def run_once(self) -> None:
        """Verify (and with ``repair`` repair) every table once."""
        runner = self.runner
        started = self.running_since = time.time()
        source: Any = None
        dest: Any = None
        differing = repaired = 0
        failure: str | None = None
        try:
            source = runner.new_source()
            dst = runner.config.destination
            dest = destination_factory(dst.type)(
                dst.connection_string, f"cartridge-warp {self.name} verify"[:63]
            )
            for table, plan in sorted(list(runner.plans.items())):
                if self._stop.is_set():
                    return
                if table in self.left_out() or runner.plans.get(table) is not plan:
                    continue
                try:
                    found, fixed = self._table(source, dest, table, plan)
                except ConfigError as exc:
                    if table not in self._refused:
                        self._refused.add(table)
                        log.warning("scheduled verify of %s.%s: left out: %s", self.name, table, redact(exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - the next table may still be verified
                    failure = failure or f"{table}: {redact(str(exc).strip() or type(exc).__name__)}"
                    log.warning(
                        "scheduled verify of %s.%s could not finish: %s (it counts as a failed verify; "
                        "the stream goes on)",
                        self.name,
                        table,
                        redact(str(exc).strip() or type(exc).__name__),
                    )
                    metrics.error(self.name, type(exc).__name__)
                    for thing in (source, dest):
                        thing.reset()
                    continue
                differing += found
                repaired += fixed
        finally:
            for thing in (source, dest):
                if thing is not None:
                    try:
                        thing.close()
                    except Exception:  # noqa: BLE001 - closing
                        pass
        result = "failed" if failure else ("different" if differing else "equal")
        self._finished(started, result, differing, repaired, failure)

    def _table(self, source: Any, dest: Any, table: str, plan: Any) -> tuple[int, int]:
        collect = MAX_REPAIR_KEYS if self.schedule.repair else 0
        report = TableVerifier(source, dest, plan, max_keys=5, collect=collect).run()
        repaired = 0
        if report.equal:
            log.info("scheduled verify of %s.%s: equal (%d rows)", self.name, table, report.source_rows)
        else:
            log.warning("scheduled verify of %s: %s", self.name, report.describe().replace("\n", ";"))
            if self.schedule.repair:
                keys = [key for _kind, key in report.collected]
                settings = self.runner.schema.table_settings(table)
                repaired = repair_keys(
                    self.name,
                    source,
                    self.runner.pool,
                    plan,
                    settings,
                    keys,
                    lock=self.lock_for(table),
                    should_stop=self._stop.is_set,
                    fence=self.runner.guard,
                )
                log.warning("scheduled verify of %s.%s: repaired %d key(s)", self.name, table, repaired)
        metrics.verify_table(self.name, table, report.differing, repaired, time.time())
        return report.differing, repaired

    def _finished(
        self, started: float, result: str, differing: int, repaired: int, failure: str | None
    ) -> None:
        self.running_since = None
        metrics.verify_run(self.name, result)
        self.last = {
            "started_at": started,
            "finished_at": time.time(),
            "result": result,
            "differing_keys": differing,
            "repaired_keys": repaired,
            "error": failure,
        }
        if failure:
            log.warning("scheduled verify of %s failed: %s", self.name, failure)
