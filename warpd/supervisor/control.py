"""The control socket's server side, served from the supervisor's own ``selectors`` loop.

No thread: the supervisor forks, and a fork taken while another thread holds
a lock leaves that lock held forever in the child.  Each connection carries
one request line and gets one response line; a handler may return a
:class:`Deferred` when the answer depends on a schema process (a dead-letter
replay), and the loop polls it until it is ready or times out.

The socket file is created with mode 0660 inside a directory created with
mode 0750: the daemon's user and group may connect, nobody else.  Every
command is logged with the caller's uid and pid (``SO_PEERCRED``).

No client can take the supervisor down or hold its loop: a request is at most
:data:`MAX_REQUEST` bytes and must arrive (and its answer be read) within
:data:`REQUEST_TIMEOUT`; at most :data:`MAX_CONNECTIONS` are open at once (a
new one evicts the oldest that has not sent its request yet, or waits in the
listen backlog); whatever a request holds (binary, 200 KB of ``[``) gets a
"malformed request" answer, and running out of file descriptors only pauses
accepting.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from warpd.errors import ConfigError, WarpError
from warpd.nonblocking import close_quietly, send_some
from warpd.supervisor.protocol import decode, encode

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0  # seconds a client gets to send its request line, and again to read the answer
MAX_REQUEST = 256 * 1024  # bytes; a request is a command and a few arguments
MAX_CONNECTIONS = 64
FD_RESERVE = 8  # descriptors kept free for the supervisor's own files once it ran out of them
ACCEPT_PAUSE = 1.0  # seconds without accepting after the process ran out of file descriptors
READ_ONLY = ("status", "checkpoints", "dlq_list")


@dataclass
class Deferred:
    """An answer that is not ready yet: ``poll()`` returns it once it is, None until then."""

    poll: Callable[[], dict[str, Any] | None]
    deadline: float
    on_timeout: Callable[[], dict[str, Any]]


@dataclass
class _Connection:
    sock: socket.socket
    deadline: float  # to send the request, then (once answered) to read the answer
    peer: str
    inbox: bytes = b""
    outbox: bytes = b""
    waiting: Deferred | None = None
    received: bool = field(default=False)  # the request line is in; the socket waits for its answer


Handler = Callable[[str, dict[str, Any], str], "dict[str, Any] | Deferred"]


class ControlServer:
    """Listens on ``path``; ``handle(command, args, peer)`` answers each request."""

    def __init__(
        self, path: str, selector: selectors.BaseSelector, handle: Handler, clock: Callable[[], float]
    ):
        self.path = path
        self.selector = selector
        self.handle = handle
        self.clock = clock
        self.sock: socket.socket | None = None
        self._inode: int | None = None
        self._conns: dict[socket.socket, _Connection] = {}
        self._accepting = False
        self.max_connections = MAX_CONNECTIONS
        self._accept_paused_until = 0.0

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> None:
        directory = os.path.dirname(self.path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o750, exist_ok=True)
        if os.path.lexists(self.path):
            if self._someone_listens():
                raise ConfigError(
                    f"another warpd already listens on {self.path}; stop it first, or give this one its own "
                    "state_dir (or supervisor.control_socket)"
                )
            os.unlink(self.path)  # left behind by a warpd that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o117)
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise WarpError(f"cannot create the control socket {self.path}: {exc.strerror or exc}") from exc
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        self._inode = os.stat(self.path).st_ino
        sock.listen(MAX_CONNECTIONS)
        sock.setblocking(False)
        self.sock = sock
        self._listen(True)
        log.info("control socket %s (mode 0660: its owner and group may use warpctl)", self.path)

    def _someone_listens(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def fds(self) -> list[int]:
        """File descriptors a forked schema process must close."""
        out = [c.fileno() for c in self._conns]
        if self.sock is not None:
            out.append(self.sock.fileno())
        return out

    def close(self) -> None:
        for conn in list(self._conns):
            self._drop(conn)
        if self.sock is not None:
            self._listen(False)
            self.sock.close()
            self.sock = None
            try:
                if os.stat(self.path).st_ino == self._inode and stat.S_ISSOCK(os.stat(self.path).st_mode):
                    os.unlink(self.path)
            except OSError:
                pass

    # -- the loop's callbacks --------------------------------------------------
    def _listen(self, on: bool) -> None:
        """Watch the listening socket, or leave new clients in its backlog until a slot frees up."""
        if self.sock is None or on == self._accepting:
            return
        if on:
            self.selector.register(self.sock, selectors.EVENT_READ, self._accept)
        else:
            self.selector.unregister(self.sock)
        self._accepting = on

    def _accept(self, _mask: int) -> None:
        assert self.sock is not None
        if len(self._conns) >= self.max_connections and not self._evict_idle():
            self._listen(False)  # every slot is busy with a real request; tick() listens again
            return
        try:
            sock, _addr = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ECONNABORTED: never the supervisor's end
            if exc.errno in (errno.EMFILE, errno.ENFILE) and self._conns:
                # out of descriptors: hold fewer connections, so the state file and the status files
                # (which warpctl status reads) can still be opened
                self.max_connections = max(1, len(self._conns) - FD_RESERVE)
                log.warning(
                    "control socket: out of file descriptors (%s); serving at most %d connections from now on",
                    exc,
                    self.max_connections,
                )
                while len(self._conns) > self.max_connections and self._evict_idle():
                    pass
                return
            log.warning("control socket: cannot accept a connection (%s); pausing for %gs", exc, ACCEPT_PAUSE)
            self._listen(False)
            self._accept_paused_until = self.clock() + ACCEPT_PAUSE
            return
        sock.setblocking(False)
        conn = _Connection(sock, self.clock() + REQUEST_TIMEOUT, _peer(sock))
        self._conns[sock] = conn
        self.selector.register(sock, selectors.EVENT_READ, lambda mask: self._read(conn))

    def _evict_idle(self) -> bool:
        """Close the oldest connection still silent about its request; False if there is none."""
        idle = [c for c in self._conns.values() if not c.received]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.deadline)
        log.debug("control socket: %d connections open; closing the oldest idle one", len(self._conns))
        self._drop(oldest.sock)
        return True

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn.sock)
            return
        if not data:
            self._drop(conn.sock)
            return
        conn.inbox += data
        if b"\n" not in conn.inbox and len(conn.inbox) <= MAX_REQUEST:
            return
        # one request per connection: stop reading; the answer re-registers the socket for writing
        self.selector.unregister(conn.sock)
        conn.received = True
        line = conn.inbox.split(b"\n", 1)[0]
        conn.inbox = b""
        if len(line) > MAX_REQUEST:
            self._respond(
                conn, {"ok": False, "error": f"request too long (the limit is {MAX_REQUEST} bytes)"}
            )
            return
        try:
            request = decode(line)
            command, args = str(request.get("command", "")), request.get("args") or {}
            if not isinstance(args, dict):
                raise ValueError("args must be an object")
        except Exception as exc:  # noqa: BLE001 - ValueError, RecursionError (nested too deep), ...
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            self._respond(conn, {"ok": False, "error": f"malformed request: {reason}"})
            return
        # reads at DEBUG (monitoring polls them), anything that changes something at INFO
        log.log(
            logging.DEBUG if command in READ_ONLY else logging.INFO,
            "control: %s requested by %s",
            command[:100],
            conn.peer,
        )
        try:
            answer = self.handle(command, args, conn.peer)
        except Exception as exc:  # noqa: BLE001 - an answer, never a dead supervisor
            log.exception("control: %s failed", command[:100])
            answer = {"ok": False, "error": f"internal error ({type(exc).__name__}: {exc})"}
        if isinstance(answer, Deferred):
            conn.waiting = answer
        else:
            self._respond(conn, answer)

    def _respond(self, conn: _Connection, doc: dict[str, Any]) -> None:
        conn.outbox = encode(doc)
        conn.waiting = None
        conn.deadline = self.clock() + REQUEST_TIMEOUT  # to read the answer
        self.selector.register(conn.sock, selectors.EVENT_WRITE, lambda mask: self._write(conn))

    def _write(self, conn: _Connection) -> None:
        rest = send_some(conn.sock, conn.outbox)
        if not rest:  # all sent, or the client is gone
            self._drop(conn.sock)
        else:
            conn.outbox = rest

    def _drop(self, sock: socket.socket) -> None:
        self._conns.pop(sock, None)
        close_quietly(self.selector, sock)
        if len(self._conns) < self.max_connections and self.clock() >= self._accept_paused_until:
            self._listen(True)

    def tick(self) -> None:
        """Answer deferred requests that are ready; drop clients too slow to send or to read."""
        now = self.clock()
        for conn in list(self._conns.values()):
            if conn.waiting is not None:
                answer = conn.waiting.poll()
                if answer is None and now >= conn.waiting.deadline:
                    answer = conn.waiting.on_timeout()
                if answer is not None:
                    self._respond(conn, answer)
            elif now > conn.deadline:
                self._drop(conn.sock)
        if len(self._conns) < self.max_connections and now >= self._accept_paused_until:
            self._listen(True)

    def flush(self) -> None:
        """Best-effort: send what is queued before the supervisor exits (e.g. the answer to stop)."""
        for conn in list(self._conns.values()):
            if conn.outbox:
                try:
                    conn.sock.setblocking(True)
                    conn.sock.settimeout(1.0)
                    conn.sock.sendall(conn.outbox)
                except OSError:
                    pass
                self._drop(conn.sock)


def _peer(sock: socket.socket) -> str:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        return f"uid {uid} (pid {pid})"
    except (OSError, AttributeError):
        return "a local client"
