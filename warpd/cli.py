"""The ``cartridge-warp`` command."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import queue
import re
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from warpd import __version__, logs
from warpd.errors import ConfigError, WarpError
from warpd.exits import EXIT_OK, run_reporting
from warpd.redact import redact, remember_uri_secrets, uri_password

log = logging.getLogger("warpd")

# /healthz fails when the engine has not checked for a stop request for this long (a hung loop),
# unless a statement is in flight (a long ALTER TABLE or lock wait is not a hang)
HEALTH_STALL_SECONDS = 300.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cartridge-warp",
        description="Keep a destination database in sync with a source database (snapshot, then every change).",
    )
    p.add_argument(
        "--mode",
        choices=("single", "multi"),
        default="single",
        help="single: run one schema in the foreground; multi: supervise every schema (warpd)",
    )
    p.add_argument("--source", metavar="URI", help="source URI, e.g. mysql://user:pass@host:3306/db")
    p.add_argument("--destination", metavar="URI", help="destination URI, e.g. postgresql://user@host/db")
    p.add_argument("--schema", metavar="NAME", help="the schema to run (single mode)")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON configuration file")
    p.add_argument(
        "--state-dir", metavar="DIR", help="directory of the state file (default /var/lib/cartridge-warp)"
    )
    p.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="print the resolved plan (tables, parallelism, batch sizes, DDL) and write nothing",
    )
    p.add_argument(
        "--validate-config", action="store_true", help="validate the configuration, print the result and exit"
    )
    p.add_argument("--version", action="version", version=f"cartridge-warp {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        # First of all: a password given with --source/--destination is in the command line, which
        # every user can read (ps, /proc/PID/cmdline) until the title replaces it.
        hide_command_line_secrets("cartridge-warp", sys.argv[1:])
    args = _parser().parse_args(argv)
    logs.configure(args.log_level or os.environ.get("CARTRIDGE_WARP_MONITORING__LOG_LEVEL", "INFO"))
    _warn_command_line_passwords(args)
    return run_reporting(lambda: _run(args), "cartridge-warp")


def hide_command_line_secrets(program: str, argv: Sequence[str]) -> None:
    """Retitle the process with its command line, passwords replaced by ``***``.

    setproctitle overwrites the memory ``/proc/PID/cmdline`` reads, so the
    password is gone from there too, not only from ``ps``'s title.
    """
    for arg in argv:
        remember_uri_secrets(arg)
    _set_title(redact(" ".join([program, *argv])))


def _warn_command_line_passwords(args: argparse.Namespace) -> None:
    for flag, value, variable in (
        ("--source", args.source, "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING"),
        ("--destination", args.destination, "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING"),
    ):
        if uri_password(value):
            log.warning(
                "%s carries a password: other users of this machine can read a command line while a "
                "process starts (ps, /proc/PID/cmdline). Set the connection string in %s (e.g. a "
                "systemd EnvironmentFile readable by root only) or in a configuration file only this "
                "user can read",
                flag,
                variable,
            )


def _run(args: argparse.Namespace) -> int:
    from warpd.config import CliOverrides, load_config

    if args.mode == "multi":
        if args.schema:
            raise ConfigError(
                "--schema: single mode only; --mode multi runs every schema of the configuration"
            )
        from warpd.supervisor.main import run_supervisor

        overrides = CliOverrides(
            source=args.source,
            destination=args.destination,
            dry_run=args.dry_run,
            state_dir=args.state_dir,
            log_level=args.log_level,
        )
        return run_supervisor(args.config, overrides, validate_only=args.validate_config)
    config = load_config(
        args.config,
        cli=CliOverrides(
            source=args.source,
            destination=args.destination,
            schema=args.schema,
            dry_run=args.dry_run,
            state_dir=args.state_dir,
            log_level=args.log_level,
        ),
    )
    logs.configure(config.monitoring.log_level, config.monitoring.log_format)
    if args.validate_config and not args.schema and len(config.schemas) > 1:
        # validating a multi-schema file (the shipped examples, a warpd config) needs no --schema
        print(
            f"configuration is valid: {len(config.schemas)} schema(s) "
            f"({', '.join(config.schema_names)}); source {config.source.redacted()}, "
            f"destination {config.destination.redacted()}"
        )
        return EXIT_OK
    schema = _pick_schema(config, args.schema)
    if args.validate_config:
        print(
            f"configuration is valid: {len(config.schemas)} schema(s), running {schema.name!r}; "
            f"source {config.source.redacted()}, destination {config.destination.redacted()}"
        )
        return EXIT_OK
    logs.set_context(schema=schema.name)
    from warpd.engine.runner import SchemaRunner

    if config.dry_run:
        runner = SchemaRunner(config, schema, store=None)
        try:
            _print_plan(config, schema, runner.plan_report())
        finally:
            runner.close()
        return EXIT_OK

    from warpd.engine import schema_lock
    from warpd.state.store import StateStore

    schema_lock.acquire(config.state_dir, schema.name)  # one writer per schema; held until the process exits
    store = StateStore(config.state_dir)
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    def on_signal(signum: int, _frame: Any) -> None:
        signals.put(signum)  # only record it; the engine checks between events

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    _set_title(f"cartridge-warp: schema {schema.name}")
    log.info(
        "cartridge-warp %s: schema %s from %s to %s (state %s)",
        __version__,
        schema.name,
        config.source.redacted(),
        config.destination.redacted(),
        store.path,
    )
    last_check = [time.monotonic()]

    def should_stop() -> bool:
        last_check[0] = time.monotonic()  # the engine asks between events and chunks: proof of life
        return not signals.empty()

    from warpd.engine import activity

    tracker = activity.Tracker()
    activity.use(tracker)  # statements in flight and retries, for /healthz
    runner = SchemaRunner(config, schema, store, should_stop=should_stop)
    endpoint = _serve_single(config, schema.name, runner, last_check, tracker)
    try:
        runner.run()
    finally:
        if endpoint is not None:
            endpoint.stop()
    log.info("stopped cleanly")
    return EXIT_OK


def _serve_single(config: Any, name: str, runner: Any, last_check: list[float], tracker: Any) -> Any:
    """Serve /metrics, /healthz and /readyz for this one schema when monitoring.prometheus is enabled.

    Healthy while the engine's loop runs and keeps asking whether to stop, or waits for a
    statement in flight; ready once the schema streams changes (its snapshot is done).
    """
    prom = config.monitoring.prometheus
    if not prom.enabled:
        return None
    from warpd import metrics

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if safe != name:  # keep two odd names from sharing a directory
        safe += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    metrics.setup(os.path.join(config.state_dir, "run", f"metrics-{safe}"), state_dir=config.state_dir)
    metrics.process_up(name, True)

    def health() -> dict[str, Any]:
        quiet = time.monotonic() - last_check[0]
        busy, retry = tracker.oldest(), tracker.retry()
        ok = runner.phase != "stopped" and (quiet < HEALTH_STALL_SECONDS or busy is not None)
        return {
            "ok": ok,
            "schema": name,
            "phase": runner.phase,
            "seconds_since_progress": round(quiet, 1),
            "busy": {"what": busy.what, "since": busy.since} if busy is not None else None,
            "retrying": retry.document() if retry is not None else None,
        }

    def ready() -> dict[str, Any]:
        doc = health()
        doc["ok"] = doc["ok"] and runner.phase == "streaming"
        return doc

    try:
        return metrics.serve(prom.host, prom.port, health, ready)
    except OSError as exc:
        raise WarpError(
            f"cannot serve metrics on {prom.host}:{prom.port}: {exc.strerror or exc}; "
            "choose another monitoring.prometheus.port (or host), or disable monitoring.prometheus"
        ) from exc


def print_plans(config: Any) -> int:
    """--dry-run of every schema (multi mode); writes nothing."""
    from warpd.engine.runner import SchemaRunner

    for schema in config.schemas:
        runner = SchemaRunner(config, schema, store=None)
        try:
            _print_plan(config, schema, runner.plan_report())
        finally:
            runner.close()
        print()
    return EXIT_OK


def _pick_schema(config: Any, name: str | None) -> Any:
    if name:
        return config.schema(name)
    if len(config.schemas) == 1:
        return config.schemas[0]
    names = ", ".join(s.name for s in config.schemas) or "(none)"
    raise ConfigError(
        f"--schema: required in single mode when the configuration has {len(config.schemas)} "
        f"schemas (configured: {names})"
    )


def _print_plan(config: Any, schema: Any, tables: list[dict[str, Any]]) -> None:
    print(
        f"Dry run: nothing will be written.\n"
        f"schema {schema.name} ({schema.mode}): {config.source.redacted()} database "
        f"{schema.source_database!r} -> {config.destination.redacted()} schema {schema.destination_schema!r}"
    )
    print(f"on_position_lost: {schema.on_position_lost}; state file: {config.state_dir}")
    if not tables:
        print("no source table matches the whitelist/blacklist")
    for t in tables:
        print(f"\ntable {t['table']} -> {t['destination']} (~{t['estimated_rows']:,} rows)")
        print(
            f"  key: {', '.join(t['key'])}; max_parallel_streams={t['max_parallel_streams']} "
            f"batch_size={t['batch_size']} snapshot_chunk_size={t['snapshot_chunk_size']} "
            f"deletes={t['deletes']} metadata_columns={str(t['metadata_columns']).lower()}"
        )
        for stmt in t["ddl"] or ["(destination table already matches)"]:
            print(f"  {stmt};" if not stmt.startswith("(") else f"  {stmt}")


def _set_title(title: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
