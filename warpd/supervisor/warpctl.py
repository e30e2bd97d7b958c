"""The ``warpctl`` command: control a running warpd over its UNIX socket.

Exit codes (LSB): 0 done, 1 the daemon refused or the command failed,
2 usage, 3 warpd is not running, 4 not allowed to use the socket.  When no
daemon runs, ``status``, ``checkpoints`` and ``dlq list`` still print what
the state file knows (and exit 3).

The socket is found from ``--socket``, else ``supervisor.control_socket`` of
the configuration (``--config``, ``$CARTRIDGE_WARP_CONFIG`` or
``/etc/cartridge-warp/config.yaml``, with ``CARTRIDGE_WARP_...`` overrides),
else ``<state_dir>/warpd.sock``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from warpd import __version__
from warpd.config.model import CONTROL_SOCKET_NAME, DEFAULT_STATE_DIR
from warpd.errors import ConfigError, WarpError
from warpd.redact import redact
from warpd.supervisor import display
from warpd.supervisor.protocol import Denied, NotRunning, call

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_DENIED = 0, 1, 2, 3, 4
DEFAULT_CONFIG = "/etc/cartridge-warp/config.yaml"
OFFLINE = ("status", "checkpoints", "dlq_list")  # answered from the state file when no daemon runs


MAX_TIMEOUT = 86400.0


def _seconds(text: str) -> float:
    """--timeout's value: a finite number of seconds above 0 (a socket timeout refuses the rest)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:40]!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="warpctl", description="Control a running warpd (cartridge-warp daemon)."
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"warpd's configuration (default $CARTRIDGE_WARP_CONFIG or {DEFAULT_CONFIG})",
    )
    p.add_argument("--socket", metavar="PATH", help="the control socket (default from the configuration)")
    p.add_argument("--state-dir", metavar="DIR", help=f"the state directory (default {DEFAULT_STATE_DIR})")
    p.add_argument(
        "--timeout", metavar="SECONDS", type=_seconds, default=60.0, help="how long to wait for an answer"
    )
    p.add_argument("--version", action="version", version=f"warpctl (cartridge-warp) {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = sub.add_parser(
        "status", help="state, position, lag, throughput and errors of every schema and table"
    )
    status.add_argument("--json", action="store_true", help="the full status as JSON")
    sub.add_parser("reload", help="re-read the configuration (as SIGHUP does)")
    sub.add_parser("stop", help="stop warpd: every schema commits its batch in flight (as SIGTERM does)")
    for verb, text in (
        ("pause", "stop a schema's process, or skip one table's changes"),
        ("resume", "restart a paused schema, or copy a paused table again and apply its changes"),
    ):
        cmd = sub.add_parser(verb, help=text)
        cmd.add_argument("target", metavar="SCHEMA[.TABLE]")
    resync = sub.add_parser(
        "resync", help="copy one table again while the rest of its schema keeps streaming"
    )
    resync.add_argument("target", metavar="SCHEMA.TABLE")
    sync = sub.add_parser("sync", help="run a batch-mode schema, or one of its tables, now")
    sync.add_argument("target", metavar="SCHEMA[.TABLE]")
    verify = sub.add_parser(
        "verify",
        help="compare source and destination tables by key-range checksums (runs here, not in warpd; "
        "exit 0 equal, 1 different, 2 usage, 3 could not finish: docs/verify.md)",
    )
    verify.add_argument("target", metavar="SCHEMA[.TABLE]")
    verify.add_argument("--json", action="store_true")
    verify.add_argument(
        "--repair", action="store_true", help="re-copy the differing keys from the source (docs/verify.md)"
    )
    verify.add_argument("--max-keys", metavar="N", default="20", help="differing keys listed per table")
    verify.add_argument(
        "--settle-timeout",
        metavar="SECONDS",
        default="60",
        help="how long to wait for the stream to pass a differing key before re-checking it (docs/verify.md)",
    )
    checkpoints = sub.add_parser("checkpoints", help="the stored source position of every schema")
    checkpoints.add_argument("--json", action="store_true")
    dlq = sub.add_parser("dlq", help="dead letters: rows the destination rejected")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="list|replay", required=True)
    dlq_list = dlq_sub.add_parser("list", help="list dead letters")
    dlq_list.add_argument("--schema")
    dlq_list.add_argument("--table")
    dlq_list.add_argument("--json", action="store_true", help="with the stored rows")
    replay = dlq_sub.add_parser("replay", help="apply dead letters again; those written are removed")
    replay.add_argument("ids", metavar="ID", nargs="*", type=int)
    replay.add_argument("--all", action="store_true", help="every dead letter (of --schema, if given)")
    replay.add_argument("--schema")
    return p


def locate(args: argparse.Namespace, environ: dict[str, str] | None = None) -> tuple[str, str]:
    """(control socket, state directory) from the options, the environment and the configuration."""
    from warpd.config.loader import read_file

    env = dict(os.environ if environ is None else environ)
    path = args.config or env.get("CARTRIDGE_WARP_CONFIG")
    data: dict[str, Any] = {}
    if path or os.path.exists(DEFAULT_CONFIG):
        try:
            data = read_file(path or DEFAULT_CONFIG)
        except ConfigError:
            if path:
                raise
    supervisor = data.get("supervisor") if isinstance(data.get("supervisor"), dict) else {}
    state_dir = (
        args.state_dir or env.get("CARTRIDGE_WARP_STATE_DIR") or data.get("state_dir") or DEFAULT_STATE_DIR
    )
    socket_path = (
        args.socket
        or env.get("CARTRIDGE_WARP_SUPERVISOR__CONTROL_SOCKET")
        or (supervisor or {}).get("control_socket")
        or os.path.join(str(state_dir), CONTROL_SOCKET_NAME)
    )
    return str(socket_path), str(state_dir)


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.command == "dlq":
        if args.dlq_command == "list":
            return "dlq_list", {"schema": args.schema, "table": args.table}
        if bool(args.ids) == bool(args.all):
            raise SystemExit(_usage("dlq replay: give dead-letter IDs or --all (not both)"))
        return "dlq_replay", {"ids": args.ids or None, "schema": args.schema}
    if args.command in ("pause", "resume", "resync", "sync"):
        return args.command, {"target": args.target}
    return args.command, {}


def _verify(args: argparse.Namespace) -> int:
    """``cartridge-warp verify`` with warpd's configuration: it reads both databases itself, so it
    needs no running daemon (and its exit codes are verify's, not the socket's)."""
    from warpd.verify_command import main as verify

    path = args.config or os.environ.get("CARTRIDGE_WARP_CONFIG") or DEFAULT_CONFIG
    options = ["--config", path] if args.config or os.path.exists(path) else []
    flags = [*(["--json"] if args.json else []), *(["--repair"] if args.repair else [])]
    timeout = ["--settle-timeout", args.settle_timeout]
    return verify([*options, args.target, "--max-keys", args.max_keys, *timeout, *flags])


def _usage(message: str) -> int:
    print(f"warpctl: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "verify":
        return _verify(args)
    command, request = _request(args)
    try:
        socket_path, state_dir = locate(args)
    except ConfigError as exc:
        print(f"warpctl: {redact(exc)}", file=sys.stderr)
        return EXIT_USAGE
    timeout = max(args.timeout, 330.0) if command in ("dlq_replay", "sync") else args.timeout
    try:
        response = call(socket_path, command, request, timeout=timeout)
    except NotRunning:
        print(f"warpctl: warpd is not running (nothing listens on {socket_path})", file=sys.stderr)
        if command in OFFLINE:
            return _offline(command, request, state_dir, getattr(args, "json", False))
        return EXIT_NOT_RUNNING
    except Denied:
        print(
            f"warpctl: permission denied on {socket_path}: only its owner and the members of its group may "
            "control warpd (see docs/operations.md, 'Who may use warpctl')",
            file=sys.stderr,
        )
        return EXIT_DENIED
    except (OSError, ValueError) as exc:
        print(f"warpctl: no answer from warpd on {socket_path}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return _show(command, response, getattr(args, "json", False))


def _show(command: str, response: dict[str, Any], as_json: bool) -> int:
    if not response.get("ok"):
        print(f"warpctl: {response.get('error', 'failed')}", file=sys.stderr)
        if command == "dlq_replay" and response.get("data"):
            print(json.dumps(response["data"]))
        return EXIT_FAILED
    data = response.get("data")
    if as_json:
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    elif command == "status":
        print(display.status(data or {}))
    elif command == "checkpoints":
        print(display.checkpoints(data or []))
    elif command == "dlq_list":
        print(display.dead_letters(data or []))
    else:
        print(response.get("message", "done"))
    return EXIT_OK


def _offline(command: str, request: dict[str, Any], state_dir: str, as_json: bool) -> int:
    """What the state file knows, for a daemon that is down."""
    from warpd.state.store import StateStore

    try:
        store = StateStore(state_dir, read_only=True)
    except WarpError as exc:
        print(f"warpctl: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    print(f"warpctl: showing what the state file {store.path} knows", file=sys.stderr)
    try:
        if command == "checkpoints":
            data: Any = store.checkpoints()
        elif command == "dlq_list":
            data = [
                letter.__dict__ for letter in store.dead_letters(request.get("schema"), request.get("table"))
            ]
        else:
            data = offline_status(store, state_dir)
    finally:
        store.close()
    _show(command, {"ok": True, "data": data}, as_json)
    return EXIT_NOT_RUNNING


def offline_status(store: Any, state_dir: str) -> dict[str, Any]:
    from warpd.engine.status import RUN_DIR, batch_table_document, read_status, status_path
    from warpd.supervisor.report import describe_schema

    checkpoints = {c["schema"]: c["position"] for c in store.checkpoints()}
    paused = store.paused()
    names = set(checkpoints) | set(store.schemas()) | set(paused)
    run_dir = os.path.join(state_dir, RUN_DIR)
    if os.path.isdir(run_dir):
        names |= {unquote(f[: -len(".json")]) for f in os.listdir(run_dir) if f.endswith(".json")}
    schemas = []
    for name in sorted(names):
        doc = read_status(status_path(state_dir, name)) or {}
        tables = dict(doc.get("tables") or {})
        for table in store.snapshot_progress(name):
            tables.setdefault(table, {})
        for table, batch in store.batch_tables(name).items():
            tables.setdefault(table, {}).update(batch_table_document(batch))
        doc["tables"] = tables
        schedule = store.batch_schedule(name)
        if schedule is not None and not doc.get("batch"):  # no status file: what the state file knows
            doc["batch"] = {"schedule": None, "next_run": schedule.next_run}
        state = "paused" if "" in paused.get(name, set()) else "not running"
        schemas.append(
            describe_schema(
                name,
                doc,
                live=False,
                state=state,
                display=state + (" (failed)" if doc.get("phase") == "failed" and state != "paused" else ""),
                pid=None,
                restarts=None,
                last_exit=None,
                checkpoint=checkpoints.get(name),
                paused=paused.get(name, set()),
            )
        )
    return {"daemon": None, "schemas": schemas}


if __name__ == "__main__":
    sys.exit(main())
