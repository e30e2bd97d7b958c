"""The ``cartridge-warp`` command."""

from __future__ import annotations

import argparse
import logging
import queue
import sys
from collections.abc import Sequence
from typing import Any

from warpd import __version__, logs
from warpd.engine.schema_process import Role, run_schema, set_title, stop_on_signals
from warpd.errors import ConfigError
from warpd.exits import EXIT_OK, run_reporting
from warpd.redact import redact, remember_uri_secrets, uri_password

log = logging.getLogger("warpd")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cartridge-warp",
        description="Keep a destination database in sync with a source database (snapshot, then every "
        "change). `cartridge-warp verify --help`: compare source and destination tables (docs/verify.md).",
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
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["verify"]:
        from warpd.verify_command import main as verify

        return verify(arguments[1:])
    args = _parser().parse_args(arguments)
    logs.configure_early(args.log_level)
    _warn_command_line_passwords(args)
    return run_reporting(lambda: _run(args), "cartridge-warp")


def hide_command_line_secrets(program: str, argv: Sequence[str]) -> None:
    """Retitle the process with its command line, passwords replaced by ``***``.

    setproctitle overwrites the memory ``/proc/PID/cmdline`` reads, so the
    password is gone from there too, not only from ``ps``'s title.
    """
    for arg in argv:
        remember_uri_secrets(arg)
    set_title(redact(" ".join([program, *argv])))


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
    if config.dry_run:
        from warpd.engine.dry_run import print_plan

        print_plan(config, schema)
        return EXIT_OK
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    stop_on_signals(signals)
    return run_schema(config, schema.name, signals, Role(program="cartridge-warp", serve_probes=True))


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


if __name__ == "__main__":
    sys.exit(main())
