"""Retrying operations that failed for a transient reason."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from warpd.config import RetryPolicy
from warpd.engine.activity import current as current_activity
from warpd.errors import TransientError
from warpd.redact import redact

log = logging.getLogger(__name__)
T = TypeVar("T")


class Stopped(Exception):
    """A stop was requested while waiting to retry."""


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    is_transient: Callable[[BaseException], bool],
    what: str,
    should_stop: Callable[[], bool] = lambda: False,
    on_retry: Callable[[BaseException], None] = lambda _e: None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn``; on a transient error call ``on_retry`` (e.g. reconnect), wait, and try again.

    Gives up after ``policy.max_attempts`` attempts with a :class:`TransientError`
    that says what failed and how often.  Non-transient errors propagate at once.
    Each attempt counts as busy ``what`` and each wait as a retry of the current
    :mod:`~warpd.engine.activity` (the status file shows both).
    """
    activity = current_activity()
    key = object()  # this call's retries, apart from those of other threads
    attempt = 0
    recovered = retried = False
    try:
        while True:
            attempt += 1
            try:
                with activity.busy(what):
                    result = fn()
                recovered = attempt > 1
                return result
            except Exception as exc:  # noqa: BLE001 - classified below
                if not (isinstance(exc, TransientError) or is_transient(exc)):
                    raise
                if attempt >= policy.max_attempts:
                    raise TransientError(f"{what} failed {attempt} times, giving up: {redact(exc)}") from exc
                delay = policy.delay(attempt)
                reason = redact(str(exc).strip())
                log.warning(
                    "%s failed (%s); retry %d/%d in %.1fs",
                    what,
                    reason,
                    attempt,
                    policy.max_attempts - 1,
                    delay,
                )
                activity.retrying(key, what, attempt, policy.max_attempts, delay, reason)
                retried = True
                on_retry(exc)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if should_stop():
                        raise Stopped() from exc
                    sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    finally:
        if retried:  # also when a stop ends the first wait: no "retrying" may outlive the call
            activity.done(key, recovered)
