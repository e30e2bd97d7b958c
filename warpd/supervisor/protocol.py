"""warpctl's wire format: one JSON line in, one JSON line out, over a UNIX stream socket.

Request::

    {"command": "pause", "args": {"target": "shop.orders"}}

Response::

    {"ok": true, "message": "paused shop.orders ...", "data": {...}}
    {"ok": false, "error": "schema 'x' is not configured; configured schemas: 'shop'"}

Who may send requests is decided by the socket file's permissions (0660,
in a directory of mode 0750): its owner and members of its group.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

MAX_LINE = 1 << 20  # bytes; a status of hundreds of tables fits easily
COMMANDS = (
    "status",
    "reload",
    "stop",
    "pause",
    "resume",
    "resync",
    "sync",
    "checkpoints",
    "dlq_list",
    "dlq_replay",
)


class NotRunning(Exception):
    """No daemon listens on the socket."""


class Denied(Exception):
    """The socket exists but this user may not connect to it."""


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, default=str, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    doc = json.loads(line.decode("utf-8"))
    if not isinstance(doc, dict):
        raise ValueError("a request is a JSON object")
    return doc


def call(
    path: str, command: str, args: dict[str, Any] | None = None, timeout: float = 120.0
) -> dict[str, Any]:
    """Send one request to the daemon at ``path`` and return its response."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise NotRunning(path) from exc
            except PermissionError as exc:
                raise Denied(path) from exc
            except BlockingIOError:  # the daemon's listen backlog is full for now: it frees up
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        sock.sendall(encode({"command": command, "args": args or {}}))
        buffer = b""
        while b"\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
            if len(buffer) > MAX_LINE * 16:
                raise ValueError("the response is too long")
    finally:
        sock.close()
    if not buffer:
        raise NotRunning(path)  # the daemon went away mid-request (e.g. it was stopping)
    return decode(buffer.split(b"\n", 1)[0])
