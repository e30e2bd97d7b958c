"""Two steps every non-blocking server of the supervisor's loop takes (control socket, metrics)."""

from __future__ import annotations

import contextlib
import selectors
import socket


def send_some(sock: socket.socket, data: bytes) -> bytes | None:
    """Send what the socket takes now; return what is left (b"" when all went), None if the peer is gone."""
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        return data
    except OSError:
        return None
    return data[sent:]


def close_quietly(selector: selectors.BaseSelector | None, sock: socket.socket) -> None:
    """Stop watching ``sock`` (if it is watched, and the selector still open) and close it."""
    if selector is not None:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(sock)
    sock.close()
