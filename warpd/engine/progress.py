"""Snapshot progress for people: a live line on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("warpd.progress")


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


class SnapshotProgress:
    """Tracks one table's snapshot: rows, rate, percentage and ETA."""

    LOG_EVERY = 10.0  # seconds between log lines when not on a terminal

    def __init__(
        self, schema: str, table: str, estimated: int, already: int = 0, stream: TextIO | None = None
    ):
        self.schema, self.table = schema, table
        self.estimated = max(estimated, 0)
        self.rows = already
        self._start_rows = already
        self._started = time.monotonic()
        self._last_print = 0.0
        self._stream = stream or sys.stderr
        self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self._started
        return (self.rows - self._start_rows) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        total = max(self.estimated, self.rows)
        pct = f"{100.0 * self.rows / total:5.1f}%" if total else "  ?  %"
        rate = self.rate
        eta = _duration((total - self.rows) / rate) if rate > 0 and total else "?"
        return (
            f"snapshot {self.schema}.{self.table}: {self.rows:,}/~{total:,} rows {pct} "
            f"{rate:,.0f} rows/s ETA {eta}"
        )

    def advance(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if self._tty:
            if now - self._last_print >= 0.2:
                self._stream.write("\r\x1b[K" + self.line())
                self._stream.flush()
                self._last_print = now
        elif now - self._last_print >= self.LOG_EVERY:
            log.info("%s", self.line())
            self._last_print = now

    def finish(self) -> None:
        elapsed = time.monotonic() - self._started
        copied = self.rows - self._start_rows
        summary = (
            f"snapshot {self.schema}.{self.table}: done, {self.rows:,} rows "
            f"({copied:,} in {_duration(elapsed)}, {copied / elapsed if elapsed > 0 else 0:,.0f} rows/s)"
        )
        if self._tty:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
        log.info("%s", summary)
