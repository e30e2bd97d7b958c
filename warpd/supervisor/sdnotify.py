"""systemd's notification protocol (sd_notify), without a library: one datagram per message.

With ``Type=notify`` systemd waits for ``READY=1`` before it considers the
service started, shows ``STATUS=`` in ``systemctl status``, expects
``WATCHDOG=1`` at least every ``WatchdogSec`` and treats ``RELOADING=1`` ...
``READY=1`` as a reload in progress.  Outside systemd (no ``NOTIFY_SOCKET``)
every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to ``NOTIFY_SOCKET``; pings the watchdog at half of ``WATCHDOG_USEC``."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]  # the abstract namespace
        self.address = address
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not watchdog_pid or watchdog_pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._last_ping = 0.0
        self._status = ""
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto("\n".join(fields).encode("utf-8"), self.address)
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", self.address, exc)

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))
        self._status = status

    def reloading(self) -> None:
        usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> None:
        """Send STATUS= only when it changed."""
        if text != self._status:
            self._status = text
            self.send(f"STATUS={text}")

    def watchdog(self, now: float) -> None:
        """Ping the watchdog if half its interval has passed; call from the main loop only."""
        if self.watchdog_interval is not None and now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
