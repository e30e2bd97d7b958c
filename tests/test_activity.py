"""The activity tracker behind the heartbeat and warpctl status: operations in flight, retries.

Pure logic (no database): the end-to-end behaviour is in test_daemon.py (a lock wait that is
not a hang; a destination outage shown as retrying and cleared afterwards).
"""

from __future__ import annotations

import contextvars
import logging
import threading

from warpd.config import RetryPolicy
from warpd.engine import activity
from warpd.engine.retry import call_with_retry
from warpd.engine.status import ErrorLog
from warpd.errors import TransientError


def test_a_retry_is_shown_while_it_lasts_and_its_warnings_go_once_it_succeeds() -> None:
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    tracker = activity.Tracker(on_recovered=errors.retire_warnings)
    seen: list[object] = []
    failures = iter([TransientError("cannot reach the PostgreSQL destination"), None])

    def flaky() -> str:
        seen.append((tracker.oldest().what, tracker.retry(), errors.last))  # type: ignore[union-attr]
        exc = next(failures)
        if exc is not None:
            raise exc
        return "done"

    def run() -> str:
        activity.use(tracker)
        policy = RetryPolicy(max_attempts=5, initial_delay=0.01, max_delay=0.01)
        return call_with_retry(flaky, policy, is_transient=lambda _e: False, what="writing 3 rows to s.t")

    try:
        assert contextvars.copy_context().run(run) == "done"
    finally:
        logging.getLogger().removeHandler(errors)
    first, second = seen
    assert first == ("writing 3 rows to s.t", None, None)
    assert second[0] == "writing 3 rows to s.t"
    assert "writing 3 rows to s.t failed" in second[2]["message"], "the retry logged a warning"
    retry = second[1]
    assert (retry.what, retry.failures, retry.max_attempts) == ("writing 3 rows to s.t", 1, 5)
    assert retry.error == "cannot reach the PostgreSQL destination"
    assert tracker.retry() is None and tracker.oldest() is None
    assert errors.last is None, "the retry's warning is retired once it succeeded"


def test_errors_stay_and_other_threads_report_nowhere_by_default() -> None:
    errors = ErrorLog()
    errors.emit(logging.makeLogRecord({"levelname": "ERROR", "msg": "a dead letter", "created": 1.0}))
    errors.retire_warnings(until=2.0)
    assert errors.last is not None and errors.last["message"] == "a dead letter"
    found: list[activity.Activity] = []
    thread = threading.Thread(target=lambda: found.append(activity.current()))
    thread.start()
    thread.join()
    assert type(found[0]) is activity.Activity  # the no-op one
