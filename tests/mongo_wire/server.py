"""``MongoTestServer``: a single-node replica-set primary that pymongo reaches over TCP.

One thread accepts, one thread serves each connection.  The topology it reports follows the
Server Discovery and Monitoring and the "Hello" command pages (hello / legacy isMaster), with
the awaitable hello of the streaming protocol (SDAM spec, "Streaming Protocol"): a hello that
carries the client's ``topologyVersion`` and ``maxAwaitTimeMS`` is answered when the topology
changes or the time runs out, so pymongo's monitor does not spin.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from bson.int64 import Int64
from bson.objectid import ObjectId

from . import admin, crud  # noqa: F401 - importing registers their commands
from .admin import server_time
from .commands import Context, Sessions, command, dispatch
from .cursors import CursorRegistry
from .engine import MAX_BSON_SIZE, Engine
from .errors import CommandError
from .wire import MAX_MESSAGE_SIZE, OP_QUERY, ProtocolError, Request, encode_reply, read_request

log = logging.getLogger(__name__)

MAX_WIRE_VERSION = 21  # MongoDB 7.0
_LEGACY_HELLO = ("isMaster", "ismaster")


class Topology:
    """The replica-set view hello reports, and the step-down fault that changes it."""

    def __init__(self, me: str, set_name: str):
        self.me = me
        self.set_name = set_name
        self.process_id = ObjectId()
        self._counter = 0
        self._term = 1
        self._step_downs = 0
        self._stopping = False
        self.changed = threading.Condition()

    def version(self) -> dict[str, Any]:
        with self.changed:
            return {"processId": self.process_id, "counter": Int64(self._counter)}

    def step_down(self, times: int) -> None:
        """Fail the next ``times`` data commands; like an election, bump the topology version."""
        with self.changed:
            self._step_downs += times
            self._counter += 1
            self._term += 1
            self.changed.notify_all()

    def consume_step_down(self) -> bool:
        with self.changed:
            if self._step_downs <= 0:
                return False
            self._step_downs -= 1
            return True

    def wake(self, stopping: bool = False) -> None:
        with self.changed:
            self._stopping = self._stopping or stopping
            self.changed.notify_all()

    def await_change(self, client_version: Any, max_await_ms: Any, closing: Any) -> None:
        """Block an awaitable hello until the topology moves past ``client_version``."""
        if not isinstance(client_version, dict) or not isinstance(max_await_ms, int):
            return
        with self.changed:
            if client_version.get("processId") != self.process_id:
                return
            self.changed.wait_for(
                lambda: client_version.get("counter") != self._counter or self._stopping or closing(),
                timeout=max(0, max_await_ms) / 1000,
            )

    def hello(self, cmd: dict[str, Any], connection_id: int, engine: Engine) -> dict[str, Any]:
        legacy = next(iter(cmd)) in _LEGACY_HELLO
        with self.changed:
            term = self._term
            version = {"processId": self.process_id, "counter": Int64(self._counter)}
        # Attribute reads, not worth queueing behind a long write for the data lock.
        op_time = {"ts": engine.oplog.latest, "t": Int64(term)}
        last_write = engine.oplog.latest_wall
        reply: dict[str, Any] = {
            "topologyVersion": version,
            "hosts": [self.me],
            "setName": self.set_name,
            "setVersion": 1,
            "ismaster" if legacy else "isWritablePrimary": True,
            "secondary": False,
            "primary": self.me,
            "me": self.me,
            "electionId": ObjectId(f"7fffffff{term:016x}"),
            "lastWrite": {
                "opTime": op_time,
                "lastWriteDate": last_write,
                "majorityOpTime": op_time,
                "majorityWriteDate": last_write,
            },
            "maxBsonObjectSize": MAX_BSON_SIZE,
            "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
            "maxWriteBatchSize": crud.MAX_WRITE_BATCH,
            "localTime": server_time(),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": connection_id,
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
        }
        if cmd.get("helloOk"):
            reply["helloOk"] = True
        reply["ok"] = 1.0
        return reply


@command("hello", "isMaster", "ismaster", data=False)
def hello(ctx: Context, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
    ctx.topology.await_change(cmd.get("topologyVersion"), cmd.get("maxAwaitTimeMS"), ctx.closing)
    return ctx.topology.hello(cmd, ctx.connection_id, ctx.engine)


class _Connection:
    def __init__(self, sock: socket.socket, connection_id: int):
        self.sock = sock
        self.id = connection_id
        self.closed = False

    def shutdown(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class MongoTestServer:
    """A MongoDB wire-protocol server backed by mongomock, posing as a replica-set primary.

    ``MongoTestServer(port=0).start()`` picks a free port; ``uri`` is what to give MongoClient.
    Faults for tests: ``trim_oplog``, ``drop_connections``, ``step_down``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, set_name: str = "rs0"):
        self.host = host
        self._requested_port = port
        self.set_name = set_name
        self.engine = Engine()
        self.cursors = CursorRegistry()
        self.sessions = Sessions()
        self._listener: socket.socket | None = None
        self._port = 0
        self._topology: Topology | None = None
        self._connections: dict[int, _Connection] = {}
        self._connections_lock = threading.Lock()
        self._next_connection_id = 0
        self._request_id = 0
        self._stopping = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> MongoTestServer:
        """Bind, listen and serve in background threads; returns self."""
        if self._listener is not None:
            raise RuntimeError("server already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(128)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._topology = Topology(f"{self._advertised_host()}:{self._port}", self.set_name)
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"mongo-wire-{self._port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and wait for the serving threads."""
        if self._listener is None or self._stopping.is_set():
            return
        self._stopping.set()
        try:
            # close() alone does not wake a thread blocked in accept(); shutdown() does on Linux.
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self.drop_connections()
        assert self._topology is not None
        self._topology.wake(stopping=True)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        for thread in list(self._threads):
            thread.join(timeout=5)
        self.cursors.clear()

    def __enter__(self) -> MongoTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- public surface --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def uri(self) -> str:
        return f"mongodb://{self._advertised_host()}:{self._port}/?replicaSet={self.set_name}"

    @property
    def oplog_size(self) -> int:
        """Number of oplog entries retained: one per written document, drop, rename or dropDatabase."""
        with self.engine.lock:
            return len(self.engine.oplog)

    def trim_oplog(self, keep: int = 0) -> None:
        """Drop all but the newest ``keep`` entries, as a rolled-over capped oplog would.

        A resume point (token, postBatchResumeToken or startAtOperationTime) older than the
        oldest retained entry then fails with ChangeStreamHistoryLost (286); with ``keep=0``
        that is every point up to and including the newest dropped entry.
        """
        with self.engine.lock:
            self.engine.oplog.trim(keep)

    def drop_connections(self) -> None:
        """Close every client socket now, as a network partition or an election would."""
        with self._connections_lock:
            connections = list(self._connections.values())
        for connection in connections:
            connection.shutdown()
        # Wake getMores and awaitable hellos so they notice their connection is gone.
        with self.engine.lock:
            self.engine.changed.notify_all()
        if self._topology is not None:
            self._topology.wake()

    def step_down(self, times: int = 1) -> None:
        """Answer the next ``times`` data commands with NotWritablePrimary (10107)."""
        assert self._topology is not None, "start() the server first"
        self._topology.step_down(times)

    # -- serving ---------------------------------------------------------------------------------

    def _advertised_host(self) -> str:
        if self.host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.host == "::":
            return "[::1]"
        return f"[{self.host}]" if ":" in self.host else self.host

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                break
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._connections_lock:
                self._next_connection_id += 1
                connection = _Connection(sock, self._next_connection_id)
                self._connections[connection.id] = connection
                self._threads = [t for t in self._threads if t.is_alive()]
                thread = threading.Thread(
                    target=self._serve,
                    args=(connection,),
                    name=f"mongo-wire-conn-{connection.id}",
                    daemon=True,
                )
                self._threads.append(thread)
            if self._stopping.is_set():
                connection.shutdown()
            thread.start()

    def _serve(self, connection: _Connection) -> None:
        assert self._topology is not None
        ctx = Context(
            engine=self.engine,
            cursors=self.cursors,
            topology=self._topology,
            connection_id=connection.id,
            closing=lambda: connection.closed or self._stopping.is_set(),
        )
        try:
            while not connection.closed:
                request = read_request(connection.sock)
                if request is None:
                    break
                reply = self._answer(ctx, request)
                if request.more_to_come:
                    # An unacknowledged (w:0) write gets no reply; per the OP_MSG spec a node that
                    # is no longer primary closes the connection instead, so the client notices.
                    if reply.get("code") == 10107:
                        break
                    continue
                connection.sock.sendall(encode_reply(request, reply, self._next_request_id()))
        except ProtocolError as exc:
            log.warning("closing connection %d: %s", connection.id, exc)
        except OSError:
            pass  # the client went away, or drop_connections() cut it off
        except Exception:  # noqa: BLE001 - one broken reply must not take the server down
            log.exception("closing connection %d after an unexpected error", connection.id)
        finally:
            connection.closed = True
            with self._connections_lock:
                self._connections.pop(connection.id, None)
            try:
                connection.sock.close()
            except OSError:
                pass

    def _answer(self, ctx: Context, request: Request) -> dict[str, Any]:
        if request.op_code == OP_QUERY:
            name = next(iter(request.command), "")
            if name not in ("hello", *_LEGACY_HELLO) or not request.db:
                # MongoDB 5.1+ accepts OP_QUERY only for the handshake.
                return CommandError(
                    352, f"Unsupported OP_QUERY command: {name}. The client driver may require an upgrade."
                ).to_reply()
        return dispatch(ctx, request.db, request.command, self.sessions)

    def _next_request_id(self) -> int:
        with self._connections_lock:
            self._request_id = (self._request_id + 1) & 0x7FFFFFFF
            return self._request_id
