"""warpctl's commands, one method per verb, answered inside the supervisor's loop.

Each command that has a signal runs the same code as that signal
(``reload`` = SIGHUP, ``stop`` = SIGTERM).  Pause, resume, resync and
dead-letter replays are recorded in the state file, where the schema's
process picks them up (:mod:`warpd.engine.control`); the answer waits, as a
:class:`Deferred`, until the process has taken the request, or says it is
queued when the process is not running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from warpd.engine.status import read_status, status_path
from warpd.errors import WarpError
from warpd.redact import redact
from warpd.state.store import StateStore
from warpd.supervisor.control import Deferred
from warpd.supervisor.protocol import COMMANDS
from warpd.supervisor.report import status_document
from warpd.supervisor.states import Goal, State

if TYPE_CHECKING:
    from warpd.supervisor.master import Supervisor

ACK_TIMEOUT = 15.0  # how long warpctl waits for a schema process to pick up a request
REPLAY_TIMEOUT = 300.0
SYNC_TIMEOUT = 300.0  # how long warpctl sync waits for the run to finish before saying it is queued


class Commands:
    """The control socket's handler: ``handle(command, args, peer)``."""

    def __init__(self, master: Supervisor):
        self.master = master

    def handle(self, command: str, args: dict[str, Any], peer: str) -> dict[str, Any] | Deferred:
        if command not in COMMANDS:
            return {"ok": False, "error": f"unknown command {command!r}; known: {', '.join(COMMANDS)}"}
        try:
            result: dict[str, Any] | Deferred = getattr(self, f"command_{command}")(args)
        except WarpError as exc:
            return {"ok": False, "error": redact(str(exc))}
        return result

    def command_status(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "data": status_document(self.master)}

    def command_reload(self, _args: dict[str, Any]) -> dict[str, Any]:
        return self.master.reload("warpctl reload")

    def command_stop(self, _args: dict[str, Any]) -> dict[str, Any]:
        return self.master.stop("warpctl stop")

    def command_checkpoints(self, _args: dict[str, Any]) -> dict[str, Any]:
        with self.master.store() as store:
            return {"ok": True, "data": store.checkpoints()}

    def command_dlq_list(self, args: dict[str, Any]) -> dict[str, Any]:
        with self.master.store() as store:
            letters = store.dead_letters(args.get("schema"), args.get("table"))
        return {"ok": True, "data": [letter.__dict__ for letter in letters]}

    def _target_of(self, text: str, table_required: bool = False) -> tuple[str, str]:
        """``SCHEMA`` or ``SCHEMA.TABLE`` (schema names may hold dots: the longest configured one wins)."""
        names = sorted(self.master.config.schema_names, key=len, reverse=True)
        if text in names and not table_required:
            return text, ""
        for name in names:
            if text.startswith(name + ".") and len(text) > len(name) + 1:
                return name, text[len(name) + 1 :]
        configured = ", ".join(repr(n) for n in self.master.config.schema_names)
        if text in names:
            raise WarpError(f"name a table: {text}.TABLE")
        raise WarpError(
            f"{text!r} names no configured schema{' and table' if table_required else ''} (configured: {configured})"
        )

    def _known_tables(self, store: StateStore, schema: str) -> set[str]:
        doc = read_status(status_path(self.master.config.state_dir, schema)) or {}
        return set(store.snapshot_progress(schema)) | set(doc.get("tables") or {})

    def command_pause(self, args: dict[str, Any]) -> dict[str, Any] | Deferred:
        schema, table = self._target_of(str(args.get("target", "")))
        child = self.master.children[schema]
        with self.master.store() as store:
            if not table:
                store.set_paused(schema)
                child.goal = Goal.PAUSE
                return {
                    "ok": True,
                    "message": f"paused schema {schema}: its process commits its batch in flight and stops; "
                    f"the checkpoint holds its position (warpctl resume {schema})",
                }
            if table not in self._known_tables(store, schema):
                raise WarpError(f"schema {schema!r} has no table {table!r} (that it has replicated so far)")
            newly = store.set_paused(schema, table)
        if not newly:
            return {"ok": True, "message": f"{schema}.{table} was already paused"}
        if self.master.config.schema(schema).batch:
            return {
                "ok": True,
                "message": f"paused {schema}.{table}: batch runs skip it from its next one on (a run in "
                f"progress finishes); warpctl resume {schema}.{table} lets them read it again",
            }
        message = (
            f"paused {schema}.{table}: its changes are skipped from now on; warpctl resume "
            f"{schema}.{table} copies it again beside the stream"
        )
        if not child.alive:
            return {"ok": True, "message": message}
        path = status_path(self.master.config.state_dir, schema)

        def acknowledged() -> dict[str, Any] | None:
            doc = read_status(path) or {}
            if (
                doc.get("pid") == child.pid
                and (doc.get("tables") or {}).get(table, {}).get("state") == "paused"
            ):
                return {"ok": True, "message": message}
            return None if child.alive else {"ok": True, "message": message}

        return Deferred(
            acknowledged,
            self.master.system.monotonic() + ACK_TIMEOUT,
            lambda: {"ok": True, "message": message + " (once its process picks it up)"},
        )

    def command_resume(self, args: dict[str, Any]) -> dict[str, Any] | Deferred:
        schema, table = self._target_of(str(args.get("target", "")))
        child = self.master.children[schema]
        with self.master.store() as store:
            if not table:
                store.clear_paused(schema)
                was = child.describe(self.master.system.monotonic())
                child.goal = Goal.RUN
                child.retry()
                return {"ok": True, "message": f"resumed schema {schema} (it was {was})"}
            if self.master.config.schema(schema).batch:  # its rows wait in the source table: no copy needed
                if table not in store.paused(schema).get(schema, set()):
                    raise WarpError(f"{schema}.{table} is not paused")
                store.clear_paused(schema, table)
                return {
                    "ok": True,
                    "message": f"resumed {schema}.{table}: its next batch run (or warpctl sync "
                    f"{schema}.{table}) reads what changed meanwhile",
                }
            request = store.clear_paused(schema, table, resync=True)
        if request is None:
            raise WarpError(f"{schema}.{table} is not paused")
        return self._await(
            schema,
            request,
            f"resumed {schema}.{table}: it is copied again beside the stream when schema {schema} runs",
            "resumed",
        )

    def command_resync(self, args: dict[str, Any]) -> dict[str, Any] | Deferred:
        schema, table = self._target_of(str(args.get("target", "")), table_required=True)
        if self.master.config.schema(schema).batch:
            raise WarpError(
                f"schema {schema} runs in batch mode: warpctl sync {schema}.{table} runs it now (a full "
                "refresh copies the table again; an incremental table reads from its high-water mark)"
            )
        with self.master.store() as store:
            if table in store.paused(schema).get(schema, set()):
                request = store.clear_paused(schema, table, resync=True)
            else:
                request = store.add_request(schema, "resync", {"table": table})
        assert request is not None
        return self._await(
            schema, request, f"resync of {schema}.{table} queued; it starts when schema {schema} runs"
        )

    def command_sync(self, args: dict[str, Any]) -> dict[str, Any] | Deferred:
        """Run a batch-mode schema (or one of its tables) now, between its scheduled runs."""
        schema, table = self._target_of(str(args.get("target", "")))
        if not self.master.config.schema(schema).batch:
            raise WarpError(
                f"schema {schema} streams (mode: stream): it is always in sync; warpctl sync is for "
                f"mode: batch schemas (warpctl resync {schema}.TABLE copies a table again)"
            )
        child = self.master.children[schema]
        if child.goal is Goal.PAUSE:
            raise WarpError(f"schema {schema} is paused; warpctl resume {schema} first")
        with self.master.store() as store:
            request = store.add_request(schema, "sync", {"table": table})
        what = f"{schema}.{table}" if table else f"schema {schema}"
        return self._await(
            schema,
            request,
            f"sync of {what} queued; it runs after the run in progress, if any (see warpctl status)",
            "synced",
            timeout=SYNC_TIMEOUT,
        )

    def command_dlq_replay(self, args: dict[str, Any]) -> dict[str, Any] | Deferred:
        ids = args.get("ids")
        with self.master.store() as store:
            letters = store.dead_letters(args.get("schema"), ids=[int(i) for i in ids] if ids else None)
            if ids:
                missing = sorted(set(int(i) for i in ids) - {letter.id for letter in letters})
                if missing:
                    raise WarpError(f"no dead letter with id {', '.join(map(str, missing))}")
            if not letters:
                return {
                    "ok": True,
                    "message": "no dead letters to replay",
                    "data": {"replayed": [], "failed": []},
                }
            by_schema: dict[str, list[int]] = {}
            for letter in letters:
                by_schema.setdefault(letter.schema, []).append(letter.id)
            for schema in by_schema:
                child = self.master.children.get(schema)
                if child is None or child.state is not State.RUNNING:
                    state = child.describe(self.master.system.monotonic()) if child else "not configured"
                    raise WarpError(
                        f"schema {schema} is not running ({state}); its dead letters replay when it runs"
                    )
            requests = {
                schema: store.add_request(schema, "dlq_replay", {"ids": letter_ids})
                for schema, letter_ids in by_schema.items()
            }

        def poll() -> dict[str, Any] | None:
            results: dict[str, Any] = {"replayed": [], "failed": []}
            with self.master.store() as s:
                for schema, request_id in requests.items():
                    req = s.request(request_id)
                    if req is None or req.status == "pending":
                        if (
                            not self.master.children.get(schema, None)
                            or not self.master.children[schema].alive
                        ):
                            return {
                                "ok": False,
                                "error": f"schema {schema}'s process stopped before replaying",
                            }
                        return None
                    for key in ("replayed", "failed"):
                        results[key] += (req.result or {}).get(key, [])
            message = f"{len(results['replayed'])} replayed, {len(results['failed'])} kept"
            return {"ok": not results["failed"], "message": message, "data": results} | (
                {"error": f"{message} (the reason of each is in warpctl dlq list)"}
                if results["failed"]
                else {}
            )

        return Deferred(
            poll,
            self.master.system.monotonic() + REPLAY_TIMEOUT,
            lambda: {"ok": False, "error": "the replay is still running; see warpctl dlq list"},
        )

    def _await(
        self, schema: str, request: int, queued: str, verb: str = "", timeout: float = 0.0
    ) -> dict[str, Any] | Deferred:
        """Answer once the schema process has taken the request (or say it is queued)."""
        child = self.master.children[schema]
        if not child.alive:
            return {
                "ok": True,
                "message": queued + f" (now {child.describe(self.master.system.monotonic())})",
            }

        def poll() -> dict[str, Any] | None:
            with self.master.store() as store:
                req = store.request(request)
            if req is None or req.status == "pending":
                return None if child.alive else {"ok": True, "message": queued}
            message = str((req.result or {}).get("message", req.status))
            if req.status != "done":
                return {"ok": False, "error": message}
            return {"ok": True, "message": f"{verb}: {message}" if verb else message}

        return Deferred(
            poll,
            self.master.system.monotonic() + (timeout or ACK_TIMEOUT),
            lambda: {"ok": True, "message": queued},
        )
