"""``cartridge-warp verify SCHEMA[.TABLE]``: compare tables at the source and the destination by
key-range checksums (warpd/verify_ranges.py, docs/verify.md).

Reads the configuration as a schema process does, opens its own connections
to the source and the destination, writes nothing and takes no lock: it runs
beside a live stream.  For a source whose table shapes come from the data
(MongoDB) it reads the shapes recorded in the state file, read only.  Exit
codes: 0 every table equal, 1 a difference, 2 bad usage (unknown schema or
table, a table verify cannot compare), 3 the check could not finish (a
database unreachable, a query failed, keys left unsettled beside a live
stream).

With ``--repair`` the differing keys are re-copied from the source
(:mod:`warpd.engine.repair`): by the schema's running process when one holds
the schema's lock (a ``repair`` request in the state file, applied under the
table's lock, in the stream's order), else directly, holding the schema's lock
so that no schema process starts meanwhile.  The ranges that held the
differences are then checked again: exit 0 when they are equal now.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from warpd import logs
from warpd.errors import ConfigError, FatalError
from warpd.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, run_reporting
from warpd.types import TableSchema

log = logging.getLogger("warpd")

EXIT_DIFFERENT = 1
EXIT_UNFINISHED = 3
SOURCE_READERS = 1  # connections to the source besides the runner's own, for the first pass
REQUEST_WAIT_SECONDS = 600.0  # how long a repair waits for the running schema process to take it


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
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="the schema's state directory (overrides the configuration): the stream's checkpoint is read "
        "there (read only) to re-check differences beside a live stream; a MongoDB source's tables are "
        "compared under the shapes recorded there; --repair finds the schema's lock and state file there",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument(
        "--max-keys",
        type=int,
        default=20,
        metavar="N",
        help="list at most N differing keys per table (all are counted)",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="re-copy the differing keys from the source (through the running schema process when there "
        "is one), then check them again: exit 0 when they are equal now",
    )
    p.add_argument(
        "--settle-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="beside a live stream, wait at most this long for the stream to pass the position "
        "differing keys were read at before re-checking them (default 60)",
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
    from warpd.engine.repair import MAX_REPAIR_KEYS
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
    readers: list[Any] = []
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
        _refuse_copying(config.state_dir, name, tables)
        shapes = _recorded_shapes(runner.source, config.state_dir, name)
        # a second connection to the source: it computes every other range's checksum, so the source
        # database works on two ranges at once (the one that hashes slower sets a check's pace)
        readers = [runner.new_source() for _ in range(SOURCE_READERS)]
        reports = []
        for t in tables:
            plan = runner.plan_of(t) if shapes is None else runner.plan_of(t, _recorded(shapes, name, t))
            if not runner.dest.table_exists(plan):
                raise ConfigError(
                    f"verify: table {t!r} of schema {name!r} has no copy at the destination ({plan.where}): "
                    "it has not been copied yet, or was dropped there; there is nothing to compare it with"
                )
            watch = _watch(config, name, runner.source, args.settle_timeout)
            report = TableVerifier(
                runner.source,
                runner.dest,
                plan,
                max_keys=args.max_keys,
                collect=MAX_REPAIR_KEYS if args.repair else 0,
                watch=watch,
                readers=readers,
            ).run()
            if args.repair and not report.equal:
                keys = [key for _kind, key in report.collected]
                report.repaired = _apply_repair(config, name, runner, plan, keys)
                again = TableVerifier(
                    runner.source, runner.dest, plan, max_keys=args.max_keys, watch=watch
                ).run(report.differing_ranges)
                # keys past the ones one repair holds were not repaired (their ranges may have been
                # checked again, so count them once: never fewer than remain)
                report.differing_after_repair = max(again.differing, report.differing - len(keys))
                report.unsettled_after_repair = again.unsettled
            reports.append(report)
            if not args.json:
                print(report.describe(), flush=True)
    finally:
        for reader in readers:
            reader.close()
        runner.close()
    equal = all(r.equal_now for r in reports)
    if args.json:
        print(
            json.dumps({"schema": name, "equal": equal, "tables": [r.as_dict() for r in reports]}, indent=2)
        )
    if equal:
        return EXIT_OK
    # a confirmed difference is one; keys only left unsettled mean the check could not finish
    return EXIT_DIFFERENT if any(not r.equal_now and _confirmed(r) for r in reports) else EXIT_UNFINISHED


def _apply_repair(
    config: Any, schema: str, runner: Any, plan: Any, keys: list[tuple[str | None, ...]]
) -> int:
    """Re-copy ``keys``: through the schema's running process if there is one, else here."""
    from warpd.engine import schema_lock
    from warpd.engine.repair import repair_keys

    try:
        held = schema_lock.acquire(config.state_dir, schema, wait=0)
    except schema_lock.SchemaLocked:
        if config.schema(schema).batch:  # its process applies requests only while it streams
            raise ConfigError(
                f"verify --repair: schema {schema!r} runs mode: batch and its process is running; repair "
                "it while the process is stopped (or let its next full_refresh run copy the table)"
            ) from None
        return _ask_running(config.state_dir, schema, plan.source.name, keys)
    try:
        settings = config.schema(schema).table_settings(plan.source.name)
        return repair_keys(schema, runner.source, runner.pool, plan, settings, keys)
    finally:
        held.release()


def _ask_running(state_dir: str, schema: str, table: str, keys: list[tuple[str | None, ...]]) -> int:
    """Hand the keys to the schema's running process (a ``repair`` request) and wait for its answer."""
    from warpd.state.store import StateStore

    store = StateStore(state_dir)
    try:
        request_id = store.add_request(schema, "repair", {"table": table, "keys": [list(k) for k in keys]})
        log.info(
            "schema %s runs: its process repairs %d key(s) of %s (request %d)",
            schema,
            len(keys),
            table,
            request_id,
        )
        deadline = time.monotonic() + REQUEST_WAIT_SECONDS
        while True:
            found = store.request(request_id)
            if found is not None and found.status != "pending":
                break
            if time.monotonic() > deadline:
                raise FatalError(
                    f"verify --repair: schema {schema}'s process did not take the repair of {table} within "
                    f"{REQUEST_WAIT_SECONDS:.0f}s (it repairs once it streams; warpctl status shows its phase)"
                )
            time.sleep(0.2)
    finally:
        store.close()
    result = found.result or {}
    if found.status != "done":
        raise FatalError(f"verify --repair: {result.get('message', 'the repair failed')}")
    return int(result.get("repaired", 0))


def _refuse_copying(state_dir: str, schema: str, tables: Sequence[str]) -> None:
    """Refuse (bad usage) tables the state file says are being copied (a snapshot or a resync not
    done): their copy is incomplete, and verify would report every row not copied yet as missing."""
    import os

    from warpd.state.store import STATE_FILE_NAME, StateStore

    if not os.path.exists(os.path.join(state_dir, STATE_FILE_NAME)):
        return  # no state here: nothing says a copy is under way
    try:
        store = StateStore(state_dir, read_only=True)
    except FatalError as exc:  # another version's file: verify compares what is there
        log.warning("verify: %s: cannot tell whether a table is still being copied", exc)
        return
    try:
        progress = store.snapshot_progress(schema)
    finally:
        store.close()
    copying = [progress[t] for t in tables if t in progress and progress[t].status != "done"]
    if copying:
        which = ", ".join(
            f"{p.table!r} ({p.rows_copied:,}"
            + (f" of about {p.rows_estimated:,}" if p.rows_estimated else "")
            + " rows copied)"
            for p in copying
        )
        raise ConfigError(
            f"verify: schema {schema!r} is still copying {which} into the destination (state file in "
            f"{state_dir}): a copy is incomplete until it is done, and every row not copied yet would be "
            "reported missing; verify once `warpctl status` shows the copy done"
            + (", or name the other tables (SCHEMA.TABLE)" if len(tables) > len(copying) else "")
        )


def _recorded_shapes(source: Any, state_dir: str, schema: str) -> dict[str, TableSchema] | None:
    """The table shapes recorded in the state file, for a source whose shapes come from its data
    (MongoDB: a document maps to a row only through the shape its table has at the destination);
    None for other sources, which describe their tables."""
    if not getattr(source, "infers_shapes", False):
        return None
    from warpd.state.store import StateStore

    try:
        store = StateStore(state_dir, read_only=True)
    except FatalError as exc:
        raise ConfigError(
            f"verify: schema {schema!r}: its tables' shapes come from the data (MongoDB), and verify reads "
            f"them from the state file, which it cannot read ({exc}); give the schema's state directory "
            "with --state-dir (or state_dir in the configuration)"
        ) from exc
    try:
        return store.latest_schemas(schema)
    finally:
        store.close()


def _recorded(shapes: dict[str, TableSchema], schema: str, table: str) -> TableSchema:
    shape = shapes.get(table)
    if shape is None:
        raise ConfigError(
            f"verify: table {table!r} of schema {schema!r} has no shape recorded in the state file: it has "
            "not been copied yet (its rows' columns come from the documents), so there is nothing to compare"
        )
    return shape


def _confirmed(report: Any) -> bool:
    """Whether a difference was confirmed (not only keys left unsettled beside the stream), after the
    repair when one ran."""
    if report.repaired is None:
        return bool(report.differing > report.unsettled)
    return bool(report.differing_after_repair > report.unsettled_after_repair)


def _watch(config: Any, schema: str, source: Any, timeout: float) -> Any:
    """How to wait for the running schema's stream (verify_ranges.StreamWatch): the source's position
    against the checkpoint in the state file, read only; None when the source cannot order positions."""
    import os

    from warpd.engine import schema_lock
    from warpd.errors import FatalError
    from warpd.state.store import STATE_FILE_NAME, StateStore
    from warpd.verify_ranges import StreamWatch

    precedes = getattr(source, "precedes", None)
    if precedes is None:
        return None
    store: list[Any] = []

    def passed(position: Any) -> bool | None:
        if not schema_lock.held(config.state_dir, schema):
            return None  # no process replicates the schema: its checkpoint will not move
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
