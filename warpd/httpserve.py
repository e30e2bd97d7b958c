"""A small HTTP server that no client can stall: ``/metrics``, ``/healthz`` and ``/readyz``.

It runs inside a ``selectors`` loop, the supervisor's own (the master has no
threads, so every fork stays clean) or, in single mode, one thread's loop.
Every socket is non-blocking and every connection has its own buffers, so a
slow client costs its buffer and nothing else:

* a request (its line and headers) is at most :data:`MAX_REQUEST` bytes;
* the whole exchange, request in and answer out, must finish within
  :data:`DEADLINE` seconds, however slowly the bytes trickle (slow loris);
* at most :data:`MAX_CONNECTIONS` are open; a new one closes the oldest
  still sending its request, and running out of file descriptors closes
  the oldest rather than failing;
* one request per connection (``Connection: close``), GET and HEAD only.

``answer(path)`` computes a response synchronously, from the loop: it must be
quick and local (a metrics scrape reads files, a probe reads memory).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from warpd.nonblocking import close_quietly, send_some

log = logging.getLogger(__name__)

MAX_REQUEST = 8 * 1024  # bytes of request line and headers; a scraper sends a few hundred
DEADLINE = 5.0  # seconds for the whole exchange
MAX_CONNECTIONS = 32

Answer = Callable[[str], tuple[int, bytes, str]]  # path -> (status, body, content type)


@dataclass
class _Connection:
    sock: socket.socket
    opened: float
    inbox: bytes = b""
    outbox: bytes = b""
    answered: bool = field(default=False)


class HttpServer:
    """Listens on ``host:port`` (port 0: any free one); register it with a selector, call :meth:`tick`."""

    def __init__(self, host: str, port: int, answer: Answer, clock: Callable[[], float] = time.monotonic):
        self.answer = answer
        self.clock = clock
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(MAX_CONNECTIONS)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock = sock
        self.host, self.port = str(sock.getsockname()[0]), int(sock.getsockname()[1])
        self.selector: selectors.BaseSelector | None = None
        self._conns: dict[socket.socket, _Connection] = {}
        self._listening = False
        self._paused_until = 0.0

    # -- the loop's side -------------------------------------------------------------------
    def register(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        self._listen(True)

    def _listen(self, on: bool) -> None:
        if self.selector is None or on == self._listening:
            return
        if on:
            self.selector.register(self.sock, selectors.EVENT_READ, lambda _mask: self._accept())
        else:
            with contextlib.suppress(KeyError, ValueError):  # the selector may be closed already
                self.selector.unregister(self.sock)
        self._listening = on

    def fds(self) -> list[int]:
        """Every descriptor of the server (a forked child closes them)."""
        return [self.sock.fileno(), *(s.fileno() for s in self._conns)]

    def tick(self) -> None:
        """Close the connections past their deadline; call it at least once a second."""
        now = self.clock()
        for conn in list(self._conns.values()):
            if now - conn.opened > DEADLINE:
                self._drop(conn)
        if now >= self._paused_until:
            self._listen(True)

    def close(self) -> None:
        for conn in list(self._conns.values()):
            self._drop(conn)
        self._listen(False)
        self.sock.close()

    # -- connections -----------------------------------------------------------------------
    def _accept(self) -> None:
        try:
            sock, _addr = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE) and self._conns:
                self._drop(self._oldest())  # a descriptor for the next one; the backlog keeps it
            elif exc.errno in (errno.EMFILE, errno.ENFILE):
                self._listen(False)  # not ours to free: stop spinning on a readable listener for a while
                self._paused_until = self.clock() + 1.0
            else:
                log.debug("metrics endpoint: accept failed: %s", exc)
            return
        if len(self._conns) >= MAX_CONNECTIONS:
            self._drop(self._oldest())
        sock.setblocking(False)
        conn = _Connection(sock, self.clock())
        self._conns[sock] = conn
        assert self.selector is not None
        self.selector.register(sock, selectors.EVENT_READ, lambda _mask: self._read(conn))

    def _oldest(self) -> _Connection:
        waiting = [c for c in self._conns.values() if not c.answered] or list(self._conns.values())
        return min(waiting, key=lambda c: c.opened)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        conn.inbox += data
        end = conn.inbox.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbox.find(b"\n\n")
        if end < 0:
            if len(conn.inbox) > MAX_REQUEST:
                self._respond(
                    conn, "GET", int(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE), b"request too large\n"
                )
            return
        if end > MAX_REQUEST:
            self._respond(
                conn, "GET", int(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE), b"request too large\n"
            )
            return
        words = conn.inbox[:end].split(b"\n", 1)[0].decode("latin-1").split()
        conn.inbox = b""
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            self._respond(conn, "GET", int(HTTPStatus.BAD_REQUEST), b"bad request\n")
            return
        method, target = words[0], words[1]
        if method not in ("GET", "HEAD"):
            self._respond(conn, "GET", int(HTTPStatus.METHOD_NOT_ALLOWED), b"GET or HEAD only\n")
            return
        try:
            status, body, ctype = self.answer(target.split("?", 1)[0])
        except Exception as exc:  # noqa: BLE001 - an error answer, never a dead loop
            log.exception("metrics endpoint: %s failed", target[:100])
            status, body, ctype = 500, f"internal error ({type(exc).__name__})\n".encode(), "text/plain"
        self._respond(conn, method, status, body, ctype)

    def _respond(
        self,
        conn: _Connection,
        method: str,
        status: int,
        body: bytes,
        ctype: str = "text/plain; charset=utf-8",
    ) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        head = (
            f"HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        conn.outbox = head + (body if method != "HEAD" else b"")
        conn.answered = True
        assert self.selector is not None
        self.selector.modify(conn.sock, selectors.EVENT_WRITE, lambda _mask: self._write(conn))

    def _write(self, conn: _Connection) -> None:
        rest = send_some(conn.sock, conn.outbox)
        if not rest:  # all sent, or the client is gone
            self._drop(conn)
        else:
            conn.outbox = rest

    def _drop(self, conn: _Connection) -> None:
        self._conns.pop(conn.sock, None)
        close_quietly(self.selector, conn.sock)


class ServingThread:
    """Runs an :class:`HttpServer` in a loop of its own thread (single mode: a process that never forks)."""

    def __init__(self, server: HttpServer):
        self.server = server
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        server.register(self._selector)
        self.thread = threading.Thread(target=self._loop, name="metrics-http", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, mask in self._selector.select(0.5):
                try:
                    key.data(mask)
                except Exception:  # noqa: BLE001 - logged; the endpoint keeps serving
                    log.exception("metrics endpoint: internal error; carrying on")
            self.server.tick()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.server.close()
        self._selector.close()
