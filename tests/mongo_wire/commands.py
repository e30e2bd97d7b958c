"""Command registry and dispatch: the envelope every reply shares.

Handlers live in ``admin.py``, ``crud.py`` and ``server.py`` (hello) and register here by
name.  Arguments every command may carry (``$db``, ``lsid``, ``txnNumber``, ``$readPreference``,
``readConcern``, ``writeConcern``, ``apiVersion``, ``comment``, ...) are accepted and ignored:
handlers read only their own fields.  Dispatch adds what the replica-set protocol puts on every reply (``$clusterTime``,
``operationTime``), injects the test faults (step-down), and implements retryable-write
de-duplication ("Retryable Writes" spec, mongodb/specifications source/retryable-writes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mongomock
from bson.binary import Binary
from bson.int64 import Int64

from .cursors import CursorRegistry
from .engine import Engine
from .errors import CommandError

if TYPE_CHECKING:
    from .server import Topology

log = logging.getLogger(__name__)

_EMPTY_HASH = Binary(b"\x00" * 20)


@dataclass
class Context:
    """What a handler may use: storage, cursors, the topology, and its connection's state."""

    engine: Engine
    cursors: CursorRegistry
    topology: Topology
    connection_id: int
    closing: Callable[[], bool]  # true once the connection was dropped or the server stops


Handler = Callable[[Context, str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class CommandSpec:
    handler: Handler
    data: bool  # reads or writes data, so a step-down fails it
    write: bool  # a retryable write when it carries a txnNumber
    admin_only: bool


_REGISTRY: dict[str, CommandSpec] = {}


def command(
    *names: str, data: bool = True, write: bool = False, admin_only: bool = False
) -> Callable[[Handler], Handler]:
    """Register a handler under one or more command names."""

    def register(handler: Handler) -> Handler:
        for name in names:
            _REGISTRY[name] = CommandSpec(handler, data, write, admin_only)
        return handler

    return register


class Sessions:
    """The last retryable write per logical session, so a retry returns the first answer.

    mongod keeps this in ``config.transactions``; a retry of a write that already ran must not
    apply it twice (a dropped connection loses the reply, not the write).
    """

    def __init__(self, limit: int = 10_000):
        self._last: dict[bytes, tuple[int, dict[str, Any]]] = {}
        self._limit = limit

    def replay(self, session: bytes, txn_number: int) -> dict[str, Any] | None:
        last = self._last.get(session)
        if last is None or txn_number > last[0]:
            return None
        if txn_number < last[0]:
            raise CommandError(
                225,
                f"Retryable write with txnNumber {txn_number} is prohibited on session because a newer "
                f"retryable write with txnNumber {last[0]} has already started on this session.",
            )
        return dict(last[1])

    def remember(self, session: bytes, txn_number: int, reply: dict[str, Any]) -> None:
        if len(self._last) >= self._limit:
            self._last.pop(next(iter(self._last)))
        self._last[session] = (txn_number, reply)


def dispatch(ctx: Context, db: str, cmd: dict[str, Any], sessions: Sessions) -> dict[str, Any]:
    """Run one command document and return the complete reply."""
    try:
        reply = _run(ctx, db, cmd, sessions)
    except CommandError as exc:
        reply = exc.to_reply()
    except mongomock.OperationFailure as exc:
        reply = CommandError(exc.code or 2, str(exc)).to_reply()
    except NotImplementedError as exc:
        reply = CommandError(238, f"not supported by the test server: {exc}").to_reply()
    except (ValueError, TypeError, KeyError) as exc:
        reply = CommandError(2, f"{type(exc).__name__}: {exc}").to_reply()
    except Exception as exc:  # noqa: BLE001 - a server answers, it does not crash
        log.exception("command %r failed", next(iter(cmd), None))
        reply = CommandError(1, f"internal error in the test server: {exc!r}").to_reply()
    cluster_time = ctx.engine.oplog.latest
    reply["$clusterTime"] = {
        "clusterTime": cluster_time,
        "signature": {"hash": _EMPTY_HASH, "keyId": Int64(0)},
    }
    reply["operationTime"] = cluster_time
    return reply


def _run(ctx: Context, db: str, cmd: dict[str, Any], sessions: Sessions) -> dict[str, Any]:
    if not cmd:
        raise CommandError(59, "no such command: ''")
    name = next(iter(cmd))
    spec = _REGISTRY.get(name)
    if spec is None:
        raise CommandError(59, f"no such command: '{name}'")
    if not db:
        raise CommandError(40571, "OP_MSG requests require a $db argument")
    if spec.admin_only and db != "admin":
        raise CommandError(13, f"{name} may only be run against the admin database.")
    if cmd.get("autocommit") is False or cmd.get("startTransaction"):
        raise CommandError(20, "multi-document transactions are not supported by the test server")
    if spec.data and ctx.topology.consume_step_down():
        raise _not_writable_primary(ctx, name, cmd, spec)

    txn_number = cmd.get("txnNumber")
    lsid = cmd.get("lsid")
    session = lsid.get("id") if isinstance(lsid, dict) else None
    if not (spec.write and isinstance(txn_number, int) and isinstance(session, bytes)):
        return spec.handler(ctx, db, cmd)
    with ctx.engine.lock:
        replayed = sessions.replay(session, txn_number)
        if replayed is not None:
            return replayed
        reply = spec.handler(ctx, db, cmd)
        sessions.remember(session, txn_number, dict(reply))
        return reply


def _not_writable_primary(ctx: Context, name: str, cmd: dict[str, Any], spec: CommandSpec) -> CommandError:
    """The error an ex-primary gives, with the labels that make drivers retry or resume.

    Servers 4.4+ label errors themselves: RetryableWriteError on a retryable write ("Retryable
    Writes" spec, "Determining Retryable Errors"), ResumableChangeStreamError on a change
    stream's getMore ("Change Streams" spec, "Resumable Error").  Reads are retried by code.
    The topologyVersion lets the driver's SDAM ignore the error if it already saw a newer hello.
    """
    labels = []
    if spec.write and "txnNumber" in cmd:
        labels.append("RetryableWriteError")
    if name == "getMore" and ctx.cursors.is_change_stream(cmd.get("getMore")):
        labels.append("ResumableChangeStreamError")
    return CommandError(
        10107, "not primary", labels=labels, extra={"topologyVersion": ctx.topology.version()}
    )
