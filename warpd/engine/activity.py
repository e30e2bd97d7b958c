"""What a schema process is doing right now: operations in flight, and retries under way.

The engine marks what may take long (every destination statement runs inside
:func:`warpd.engine.retry.call_with_retry`, which marks it; the snapshot's
source reads are marked by the runner) and reports each retry it waits for.
It reports to :func:`current`, an :class:`Activity` that does nothing unless
the process installed a :class:`Tracker` with :func:`use`: a warpd schema
process does (its status file shows ``busy ... since`` and ``retrying``, and
its heartbeat counts a statement in flight as progress), and so does single
mode (its ``/healthz``).

The activity travels in a context variable, so the worker threads that run
under :func:`contextvars.copy_context` (the table appliers, the snapshot
writer) report to the same tracker as the thread that started them.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class InFlight:
    """One operation in flight: what, and since when (wall clock, and monotonic)."""

    what: str
    since: float
    since_monotonic: float


@dataclass
class Retry:
    """An operation between failed attempts (or in a later attempt)."""

    what: str
    failures: int
    max_attempts: int
    next_try_at: float  # time.time()
    error: str
    since: float = field(default_factory=time.time)

    def document(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "failures": self.failures,
            "max_attempts": self.max_attempts,
            "next_try_at": self.next_try_at,
            "error": self.error,
            "since": self.since,
        }


class Activity:
    """Reports nowhere: what runs when no tracker is installed."""

    def busy(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Wraps one operation that may take long (a statement, a source read)."""
        return contextlib.nullcontext()

    def each(self, items: Iterable[T], what: str) -> Iterator[T]:
        """``items``, with the wait for each next one marked as :meth:`busy` ``what``."""
        it = iter(items)
        try:
            while True:
                with self.busy(what):
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                yield item
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator's clean-up (cursors) runs now, not whenever it is collected

    def retrying(
        self, key: object, what: str, failures: int, max_attempts: int, delay: float, error: str
    ) -> None:
        """``what`` failed ``failures`` times (``error``, redacted) and is tried again in ``delay`` seconds."""

    def done(self, key: object, recovered: bool) -> None:
        """The operation retried under ``key`` is over: it succeeded (``recovered``) or gave up."""


class Tracker(Activity):
    """Keeps the operations in flight and the retries under way; every method is thread-safe."""

    def __init__(self, on_recovered: Callable[[float], None] = lambda _at: None):
        self.on_recovered = on_recovered  # e.g. retire the warnings the retries logged
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._in_flight: dict[int, InFlight] = {}
        self._retries: dict[object, Retry] = {}

    @contextlib.contextmanager
    def busy(self, what: str) -> Iterator[None]:
        token = next(self._ids)
        with self._lock:
            self._in_flight[token] = InFlight(what, time.time(), time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                del self._in_flight[token]

    def oldest(self) -> InFlight | None:
        """The operation in flight for the longest time, or None."""
        with self._lock:
            entries = list(self._in_flight.values())
        return min(entries, key=lambda e: e.since_monotonic) if entries else None

    def retrying(
        self, key: object, what: str, failures: int, max_attempts: int, delay: float, error: str
    ) -> None:
        with self._lock:
            first = self._retries.get(key)
            self._retries[key] = Retry(
                what,
                failures,
                max_attempts,
                time.time() + delay,
                error,
                first.since if first else time.time(),
            )

    def done(self, key: object, recovered: bool) -> None:
        with self._lock:
            entry = self._retries.pop(key, None)
        if entry is not None and recovered:
            log.info("%s: succeeded after %d failed attempt(s)", entry.what, entry.failures)
            self.on_recovered(time.time())

    def retry(self) -> Retry | None:
        """The retry most recently reported, or None when nothing is being retried."""
        with self._lock:
            entries = list(self._retries.values())
        return max(entries, key=lambda r: r.next_try_at) if entries else None


_NOTHING = Activity()
_current: contextvars.ContextVar[Activity] = contextvars.ContextVar("warpd_activity", default=_NOTHING)


def current() -> Activity:
    """The activity this thread reports to (a no-op unless :func:`use` installed one)."""
    return _current.get()


def use(activity: Activity) -> None:
    """Report this thread's activity, and that of threads started under a copy of its context, here."""
    _current.set(activity)
