"""``cartridge-warp verify SCHEMA[.TABLE]``: compare tables at the source and the destination by
key-range checksums (warpd/verify_ranges.py, docs/verify.md).

Reads the configuration as a schema process does, opens its own connections
to the source and the destination, writes nothing and takes no lock: it runs
beside a live stream.  Exit codes: 0 every table equal, 1 a difference, 2 bad
usage (unknown schema or table, a table verify cannot compare), 3 the check
could not finish (a database unreachable, a query failed, keys left unsettled
beside a live stream).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from warpd import logs
from warpd.errors import ConfigError
from warpd.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, run_reporting

log = logging.getLogger("warpd")

EXIT_DIFFERENT = 1
EXIT_UNFINISHED = 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cartridge-warp verify",
        description="Compare tables at the source and the destination by key-range checksums computed "
        "inside each database, listing the differing keys. Exit 0: equal; 1: different; 2: bad usage; "
        "3: the check could not finish.",
    )
    p.add_argument("target", metavar="SCHEMA[.TABLE]", help="a configured schema, or one table of it")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON configuration file")
    p.add_argument("--source", metavar="URI", help="source URI (overrides the configuration)")
    p.add_argument("--destination", metavar="URI", help="destination URI (overrides the configuration)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument(
        "--max-keys",
        type=int,
        default=20,
        metavar="N",
        help="list at most N differing keys per table (all are counted)",
    )
    p.add_argument(
        "--settle-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="beside a live stream, wait at most this long for the stream to pass the position "
        "differing keys were read at before re-checking them (default 60)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="warpd's state directory, read only, for the stream's checkpoint (overrides the configuration)",
    )
    p.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    return p


def main(argv: Sequence[str]) -> int:
    """Run ``cartridge-warp verify`` with the arguments after ``verify``."""
    args = parser().parse_args(argv)
    logs.configure_early(args.log_level)
    if args.max_keys < 0:
        print("cartridge-warp verify: --max-keys: must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    finished = False

    def body() -> int:
        nonlocal finished
        rc = _verify(args)
        finished = True
        return rc

    rc = run_reporting(body, "cartridge-warp verify")
    # 1 means "different" here: a failure to finish the check has a code of its own
    return EXIT_UNFINISHED if rc == EXIT_FAILURE and not finished else rc


def _split(target: str, names: Sequence[str]) -> tuple[str, str | None]:
    if target in names or "." not in target:
        return target, None
    schema, table = target.split(".", 1)
    return schema, table


def _verify(args: argparse.Namespace) -> int:
    from warpd.config import CliOverrides, load_config
    from warpd.engine.runner import SchemaRunner
    from warpd.verify_ranges import TableVerifier

    # the schemas the file names, to tell a schema whose name holds a dot from SCHEMA.TABLE
    first = args.target.split(".", 1)[0]
    probe = load_config(
        args.config, cli=CliOverrides(source=args.source, destination=args.destination, schema=first)
    )
    name, table = _split(args.target, probe.schema_names)
    config = load_config(
        args.config,
        cli=CliOverrides(
            source=args.source, destination=args.destination, schema=name, state_dir=args.state_dir
        ),
    )
    logs.configure(config.monitoring.log_level, config.monitoring.log_format)
    schema = config.schema(name)
    runner = SchemaRunner(config, schema, store=None)
    try:
        if table is None:
            tables = sorted(runner.discover())
        elif not schema.includes(table):
            raise ConfigError(
                f"verify: table {table!r} is not replicated by schema {name!r} (whitelist/blacklist)"
            )
        elif not runner.source.table_exists(table):
            raise ConfigError(f"verify: table {table!r} does not exist at the source of schema {name!r}")
        else:
            tables = [table]
        if not tables:
            raise ConfigError(
                f"verify: schema {name!r} has no table to compare: its source database holds none that "
                "the whitelist/blacklist lets through (or does not exist, or this user cannot see it)"
            )
        runner.dest.connect()  # an unreachable destination stops here, before any table is read
        reports = []
        for t in tables:
            report = TableVerifier(
                runner.source,
                runner.dest,
                runner.plan_of(t),
                max_keys=args.max_keys,
                watch=_watch(config, name, runner.source, args.settle_timeout),
            ).run()
            reports.append(report)
            if not args.json:
                print(report.describe(), flush=True)
    finally:
        runner.close()
    equal = all(r.equal for r in reports)
    if args.json:
        print(
            json.dumps({"schema": name, "equal": equal, "tables": [r.as_dict() for r in reports]}, indent=2)
        )
    if equal:
        return EXIT_OK
    # a confirmed difference is one; keys only left unsettled mean the check could not finish
    return EXIT_DIFFERENT if any(r.differing > r.unsettled for r in reports) else EXIT_UNFINISHED


def _watch(config: Any, schema: str, source: Any, timeout: float) -> Any:
    """How to wait for the running schema's stream (verify_ranges.StreamWatch): the source's position
    against the checkpoint in the state file, read only; None when the source cannot order positions."""
    import os

    from warpd.errors import FatalError
    from warpd.state.store import STATE_FILE_NAME, StateStore
    from warpd.verify_ranges import StreamWatch

    precedes = getattr(source, "precedes", None)
    if precedes is None:
        return None
    store: list[Any] = []

    def passed(position: Any) -> bool | None:
        if not store:
            if not os.path.exists(os.path.join(config.state_dir, STATE_FILE_NAME)):
                return None
            try:
                store.append(StateStore(config.state_dir, read_only=True))
            except FatalError as exc:  # another version's file, unreadable: no checkpoint to wait for
                log.warning("verify: %s: checking once, without waiting for the stream", exc)
                return None
        mark = store[0].checkpoint(schema)
        return None if mark is None else bool(precedes(position, mark))

    return StreamWatch(source.current_position, passed, timeout=max(0.0, timeout))
