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


class Backoff:
    """The attempts of a loop that starts over after a transient failure (a stream, a table copy).

    :meth:`failed` counts one failure: it gives up with :class:`TransientError`
    after ``policy.max_attempts`` in a row, else logs the retry, shows it in
    the status (:mod:`~warpd.engine.activity`) and returns the delay;
    :meth:`wait` sleeps it, raising :class:`Stopped` as soon as a stop is
    requested; :meth:`succeeded` starts the count again after progress.
    """

    def __init__(self, policy: RetryPolicy, what: str, should_stop: Callable[[], bool] = lambda: False):
        self.policy = policy
        self.what = what
        self.should_stop = should_stop
        self.attempt = 0
        self._key = object()  # this loop's retries, apart from those of other threads

    def failed(self, exc: BaseException, resuming: str = "") -> float:
        """Count a failure of ``what``; ``resuming`` says where the next attempt starts (logs)."""
        self.attempt += 1
        reason = redact(str(exc).strip() or type(exc).__name__)
        if self.attempt >= self.policy.max_attempts:
            current_activity().done(self._key, recovered=False)
            raise TransientError(
                f"{self.what} failed {self.attempt} times in a row, giving up: {reason}"
            ) from exc
        delay = self.policy.delay(self.attempt)
        log.warning(
            "%s interrupted (%s); %s in %.1fs (retry %d/%d)",
            self.what,
            reason,
            resuming or "trying again",
            delay,
            self.attempt,
            self.policy.max_attempts - 1,
        )
        current_activity().retrying(
            self._key, self.what, self.attempt, self.policy.max_attempts, delay, reason
        )
        return delay

    def wait(self, delay: float, sleep: Callable[[float], None] = time.sleep) -> None:
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if self.should_stop():
                current_activity().done(self._key, recovered=False)
                raise Stopped()
            sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def succeeded(self) -> None:
        """Progress was made: the next failure is the first again."""
        if self.attempt:
            self.attempt = 0
            current_activity().done(self._key, recovered=True)


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
