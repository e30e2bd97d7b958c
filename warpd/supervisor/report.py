"""What ``warpctl status`` shows, built from the supervisor's view and the status files."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from warpd import __version__
from warpd.engine.status import read_status, status_path
from warpd.supervisor.states import ALIVE, ChildProcess, Goal, State

if TYPE_CHECKING:
    from warpd.supervisor.master import Supervisor


def status_document(master: Supervisor) -> dict[str, Any]:
    """What ``warpctl status`` shows: the supervisor, and every schema with its process and status file."""
    now = master.system.monotonic()
    with master.store() as store:
        checkpoints = {c["schema"]: c["position"] for c in store.checkpoints()}
        paused = store.paused()
    schemas = []
    for name, child in master.children.items():
        doc = read_status(status_path(master.config.state_dir, name)) or {}
        live = child.alive and doc.get("pid") == child.pid
        schemas.append(
            describe_schema(
                name,
                doc,
                live=live,
                state=child.state.value,
                display=_display(child, doc if live else None, now),
                pid=child.pid,
                restarts=child.restarts,
                last_exit=child.last_exit,
                checkpoint=checkpoints.get(name),
                paused=paused.get(name, set()),
            )
        )
    return {
        "daemon": {
            "pid": os.getpid(),
            "version": __version__,
            "config": master.config_path,
            "state_dir": master.config.state_dir,
            "socket": master.config.supervisor.control_socket,
            "started_at": master.started_at,
            "stopping": master.stopping,
        },
        "schemas": schemas,
    }


def _display(child: ChildProcess, live: dict[str, Any] | None, now: float) -> str:
    if child.state is State.STOPPING:
        return "stopping"
    if child.goal is Goal.STOP and not child.alive:
        return "stopped"
    if live is not None and child.state in ALIVE and live.get("phase"):
        return _doing(live)
    return child.describe(now)


def _doing(live: dict[str, Any]) -> str:
    """``streaming``; ``streaming, retrying: writing ... (failed 3 times, next try in 2s)``;
    ``streaming, busy for 42s: writing ...``."""
    phase = str(live["phase"])
    retry, busy = live.get("retrying"), live.get("busy")
    if isinstance(retry, dict):
        wait = max(0.0, float(retry.get("next_try_at") or 0) - time.time())
        return (
            f"{phase}, retrying: {retry.get('what')} (failed {retry.get('failures')} of "
            f"{retry.get('max_attempts')} times, next try in {wait:.0f}s)"
        )
    if isinstance(busy, dict):
        return f"{phase}, busy for {max(0.0, time.time() - float(busy.get('since') or 0)):.0f}s: {busy.get('what')}"
    return phase


def describe_schema(
    name: str,
    doc: dict[str, Any],
    *,
    live: bool,
    state: str,
    display: str,
    pid: int | None,
    restarts: int | None,
    last_exit: str | None,
    checkpoint: Any,
    paused: set[str],
) -> dict[str, Any]:
    """One schema as warpctl status shows it; ``doc`` is its status file (maybe from an earlier process)."""
    last: dict[str, Any] = doc["last_error"] if isinstance(doc.get("last_error"), dict) else {}
    error, error_at = last.get("message"), last.get("at")
    if not live and last_exit and state not in ("stopped", "paused"):
        error = f"{error} ({last_exit})" if error else last_exit
    tables = {}
    for table, info in sorted((doc.get("tables") or {}).items()):
        info = dict(info)
        if not live:  # a live process says itself what it does; otherwise the state file decides
            info["state"] = "paused" if table in paused or "" in paused else "not running"
            info["percent"] = None
        err = info.get("last_error")
        info["last_error"] = err.get("message") if isinstance(err, dict) else err
        info["last_error_at"] = err.get("at") if isinstance(err, dict) else None
        tables[table] = info
    if not live:
        for table in sorted(paused - {""} - set(tables)):
            tables[table] = {"state": "paused"}
    return {
        "name": name,
        "state": state,
        "display": display,
        "pid": pid,
        "live": live,
        "restarts": restarts,
        "last_exit": last_exit,
        "position": (doc.get("position") if live else None) or checkpoint,
        "lag_seconds": doc.get("lag_seconds") if live else None,
        "events_per_second": doc.get("events_per_second") if live else None,
        "events_applied": doc.get("events_applied") if live else None,
        "rows_applied": doc.get("rows_applied") if live else None,
        "last_error": error,
        "last_error_at": error_at,
        **({"batch": doc["batch"]} if isinstance(doc.get("batch"), dict) else {}),
        **({"verify": doc["verify"]} if isinstance(doc.get("verify"), dict) else {}),
        "busy": doc.get("busy") if live else None,
        "retrying": doc.get("retrying") if live else None,
        "paused": "" in paused,
        "tables": tables,
    }
