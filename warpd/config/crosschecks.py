"""Checks across settings that start-up would otherwise be the first to fail (or never fail) on.

Each returns ``(path, "<path>: <problem>")`` pairs like the loader's other
checks.  They run in :func:`warpd.config.load_config`, so ``--validate-config``,
start-up and a reload refuse exactly the same files, without connecting.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import UTC
from typing import Any

from warpd.config.model import (
    BATCH_ONLY_KEYS,
    DEFAULT_MODE,
    DEFAULT_STATE_DIR,
    ENDPOINT_TYPES,
    MAX_SERVER_ID,
    parse_duration,
    scheme_to_type,
)
from warpd.config.reading import format_path
from warpd.errors import ConfigError
from warpd.redact import redact

Path = tuple[str | int, ...]
Problem = tuple[Path, str]

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def cross_problems(data: Mapping[str, Any], environ: Mapping[str, str]) -> list[Problem]:
    schemas = data.get("schemas")
    return [
        *_endpoint_problems(data),
        *_destination_schema_problems(schemas, _default_dataset(data)),
        *_server_id_problems(data, len(schemas) if isinstance(schemas, list) else 0),
        *_metrics_dir_problems(data, environ),
        *_mode_problems(data),
        *_verify_problems(data),
    ]


def _endpoint_type(endpoint: Mapping[str, Any]) -> str | None:
    """The type the connection string and ``type`` agree on; None when the loader reports a disagreement."""
    uri = endpoint.get("connection_string")
    if not isinstance(uri, str) or not uri:
        return None
    declared = endpoint.get("type")
    if isinstance(declared, str) and declared not in ENDPOINT_TYPES:
        return declared  # a plugin connector's type, whatever its scheme
    try:
        inferred = scheme_to_type(uri)
    except ConfigError:
        return None
    if declared is not None and declared != inferred:
        return None
    return inferred


def _endpoint_problems(data: Mapping[str, Any]) -> Iterator[Problem]:
    """The connector that will serve each endpoint exists and can use its URI (its own parser decides)."""
    from warpd.connectors.registry import check_endpoint

    for section in ("source", "destination"):
        endpoint = data.get(section)
        kind = _endpoint_type(endpoint) if isinstance(endpoint, dict) else None
        if kind is None or not isinstance(endpoint, dict):
            continue
        uri = endpoint["connection_string"]
        if kind == "bigquery":
            yield from _bigquery_keys(section, endpoint)
        try:
            if kind == "bigquery":  # keys of the section fold into the URI (config/model.py)
                from warpd.connectors.bigquery.uri import with_options

                uri = with_options(uri, dict(endpoint))
            check_endpoint(section, kind, uri)
        except ConfigError as exc:
            message = redact(exc)
            if message.startswith(f"{section}.type:"):
                path: Path = (section, "type")
                if section == "destination":
                    message += "; cartridge-warp cannot write to this kind of database"
            else:
                path = (section, "connection_string")
                message = message.removeprefix(f"{section}.connection_string: ")
                message = f"{format_path(path)}: {message}"
            yield path, message


def _bigquery_keys(section: str, endpoint: Mapping[str, Any]) -> Iterator[Problem]:
    """A key of a BigQuery section that no code reads would be silently ignored: refuse it."""
    from warpd.connectors.bigquery.uri import OPTION_KEYS

    known = {"type", "connection_string", "database", *OPTION_KEYS}
    if section == "destination":
        known.add("dataset")
    for key in sorted(set(endpoint) - known):
        path: Path = (section, key)
        if key == "dataset":
            hint = (
                "the dataset a BigQuery source reads is each schema's source_database; give the default of "
                "every schema as database: under source:"
            )
        else:
            hint = f"known keys: {', '.join(sorted(known))}"
        yield path, f"{format_path(path)}: unknown key for a BigQuery {section}; {hint}"


def _default_dataset(data: Mapping[str, Any]) -> str | None:
    """A BigQuery destination's ``dataset``: the destination schema of every schema that names none."""
    dest = data.get("destination")
    dataset = dest.get("dataset") if isinstance(dest, dict) else None
    return dataset if isinstance(dataset, str) and dataset else None


def _destination_schema_problems(schemas: Any, default: str | None = None) -> Iterator[Problem]:
    """Two schemas writing one destination schema would TRUNCATE each other's tables at every snapshot."""
    if not isinstance(schemas, list):
        return
    first: dict[str, tuple[int, str]] = {}
    names: set[str] = set()
    for i, schema in enumerate(schemas):
        if not isinstance(schema, dict):
            continue
        name = schema.get("name")
        explicit = schema.get("destination_schema")
        target = explicit or default or name
        if not isinstance(target, str) or not isinstance(name, str) or name in names:
            continue  # a repeated name is reported as such
        names.add(name)
        if target in first:
            j, other = first[target]
            path: Path = ("schemas", i, "destination_schema" if explicit else "name")
            yield (
                path,
                f"{format_path(path)}: schemas {other!r} (schemas[{j}]) and {name!r} (schemas[{i}]) both "
                f"write destination schema {target!r}; each one's snapshot would empty the other's tables. "
                f"Give each schema its own destination_schema (the default is the schema's name, or "
                f"the BigQuery destination's dataset)",
            )
        else:
            first[target] = (i, name)


def _server_id_problems(data: Mapping[str, Any], schema_count: int) -> Iterator[Problem]:
    """``source.server_id`` is a base: schema i uses base + i, and the last one must stay a valid id."""
    source = data.get("source")
    if not isinstance(source, dict) or "server_id" not in source or _endpoint_type(source) != "mysql":
        return
    base = source["server_id"]
    path: Path = ("source", "server_id")
    top = MAX_SERVER_ID - max(schema_count - 1, 0)
    if not isinstance(base, int) or isinstance(base, bool) or not 1 <= base <= top:
        yield (
            path,
            f"{format_path(path)}: must be an integer from 1 to {top:,} (MySQL server ids go up to "
            f"{MAX_SERVER_ID:,} and schema i of {schema_count} uses server_id + i)",
        )


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _metrics_dir_problems(data: Mapping[str, Any], environ: Mapping[str, str]) -> Iterator[Problem]:
    """The metrics directory is emptied at start-up: it must not be, or hold, the state directory."""
    metrics_dir = environ.get(METRICS_DIR_ENV)
    state_dir = data.get("state_dir", DEFAULT_STATE_DIR)
    if not metrics_dir or not isinstance(state_dir, str):
        return
    metrics_real, state_real = os.path.realpath(metrics_dir), os.path.realpath(state_dir)
    if _inside(state_real, metrics_real):
        what = "is the state directory" if metrics_real == state_real else "contains the state directory"
        yield (
            (),
            f"{METRICS_DIR_ENV}: {metrics_dir!r} {what} ({state_dir!r}); cartridge-warp clears its metrics "
            "files at start-up, so it needs a directory of its own: point the variable elsewhere "
            f"(e.g. {os.path.join(state_dir, 'run', 'metrics')}) or unset it",
        )


def _mode_problems(data: Mapping[str, Any]) -> Iterator[Problem]:
    """Each schema's mode suits its source, and the batch settings are complete and used (docs/batch-mode.md)."""
    schemas = data.get("schemas")
    if not isinstance(schemas, list):
        return
    source = data.get("source")
    kind = _endpoint_type(source) if isinstance(source, dict) else None
    modes: tuple[str, ...] | None = None
    if kind is not None:
        from warpd.connectors.registry import source_modes

        try:
            modes = source_modes(kind)
        except ConfigError:
            modes = None  # reported by _endpoint_problems
    for i, schema in enumerate(schemas):
        if not isinstance(schema, dict):
            continue
        mode = schema.get("mode", DEFAULT_MODE)
        if mode not in ("stream", "batch"):
            continue  # the schema's enum reports it
        if modes is not None and mode not in modes:
            path: Path = ("schemas", i, "mode")
            other = " or ".join(f"mode: {m}" for m in modes)
            why = (
                "it reads no change log"
                if mode == "stream"
                else "it cannot read rows by a cursor column or copy tables periodically"
            )
            yield (
                path,
                f"{format_path(path)}: the {kind} source cannot run mode: {mode} ({why}); use {other}",
            )
        if mode == "batch":
            yield from _batch_problems(schema, i)
            if kind is not None and kind != "bigquery":
                yield from _partition_filter_problems(schema, i, kind)
        else:
            yield from _stream_problems(schema, i)


def _verify_problems(data: Mapping[str, Any]) -> Iterator[Problem]:
    """A scheduled verify needs a positive ``every`` (here or at the top level) and a streaming schema."""
    top = data.get("verify")
    top = top if isinstance(top, dict) else {}
    if "every" in top:
        yield from _verify_every(("verify", "every"), top["every"])
    schemas = data.get("schemas")
    for i, schema in enumerate(schemas if isinstance(schemas, list) else []):
        own = schema.get("verify") if isinstance(schema, dict) else None
        if not isinstance(own, dict):
            continue
        path: Path = ("schemas", i, "verify")
        if schema.get("mode", DEFAULT_MODE) != "stream":
            yield (
                path,
                f"{format_path(path)}: a scheduled verify runs beside a stream, and schema "
                f"{schema.get('name')!r} runs mode: batch; remove it (run cartridge-warp verify instead)",
            )
        elif "every" in own:
            yield from _verify_every((*path, "every"), own["every"])
        elif "every" not in top:
            yield (
                path,
                f"{format_path(path)}: says how to verify but not how often: add every (e.g. every: 24h), "
                "here or in the top level's verify",
            )


def _verify_every(path: Path, value: Any) -> Iterator[Problem]:
    try:
        seconds = parse_duration(value)
    except ConfigError:
        return  # the JSON Schema's pattern reports it
    if seconds <= 0:
        yield (path, f"{format_path(path)}: must be longer than 0 (e.g. 24h)")


def _stream_problems(schema: Mapping[str, Any], i: int) -> Iterator[Problem]:
    """Batch settings in a streaming schema would be silently ignored: refuse them."""
    listed = schema.get("tables")
    tables: list[Any] = listed if isinstance(listed, list) else []
    places: list[tuple[Path, Mapping[str, Any]]] = [(("schemas", i), schema)]
    places += [(("schemas", i, "tables", j), t) for j, t in enumerate(tables) if isinstance(t, dict)]
    for base, level in places:
        for key in BATCH_ONLY_KEYS:
            if key in level:
                path = (*base, key)
                yield (
                    path,
                    f"{format_path(path)}: {key} is a setting of mode: batch, and schema "
                    f"{schema.get('name')!r} streams (mode: stream); remove it or set mode: batch",
                )


def _partition_filter_problems(schema: Mapping[str, Any], i: int, kind: str) -> Iterator[Problem]:
    """``partition_filter`` is read by the BigQuery source only; elsewhere it would be ignored."""
    listed = schema.get("tables")
    for j, table in enumerate(listed if isinstance(listed, list) else []):
        if isinstance(table, dict) and "partition_filter" in table:
            path: Path = ("schemas", i, "tables", j, "partition_filter")
            yield (
                path,
                f"{format_path(path)}: partition_filter is read by the BigQuery source only, and this "
                f"source is {kind}; remove it (use the table filters, or a view at the source)",
            )


def _batch_problems(schema: Mapping[str, Any], i: int) -> Iterator[Problem]:
    path: Path = ("schemas", i, "schedule")
    schedule = schema.get("schedule")
    if not isinstance(schedule, dict):
        yield (
            path,
            f"{format_path(path)}: mode: batch needs a schedule, e.g. schedule: {{every: 15m}} or "
            'schedule: {cron: "0 * * * *"} (UTC)',
        )
    elif "every" in schedule:
        try:
            every = parse_duration(schedule["every"])
        except ConfigError as exc:
            yield (*path, "every"), f"{format_path((*path, 'every'))}: {exc}"
        else:
            if every <= 0:
                yield (*path, "every"), f"{format_path((*path, 'every'))}: must be longer than 0 seconds"
    elif isinstance(schedule.get("cron"), str):
        from datetime import datetime

        from cronsim import CronSim, CronSimError

        try:
            CronSim(schedule["cron"], datetime.now(UTC))
        except CronSimError as exc:
            yield (
                (*path, "cron"),
                f"{format_path((*path, 'cron'))}: {schedule['cron']!r} is not a cron expression ({exc}); "
                'five fields: minute hour day-of-month month day-of-week, e.g. "*/15 * * * *"',
            )
    listed = schema.get("tables")
    tables: list[Any] = listed if isinstance(listed, list) else []
    for j, table in enumerate(tables):
        if not isinstance(table, dict):
            continue
        where: Path = ("schemas", i, "tables", j)
        if "cursor_column" in table and "cursor_field" in table:
            yield (
                (*where, "cursor_field"),
                f"{format_path((*where, 'cursor_field'))}: cursor_column and cursor_field are the same "
                "setting; give one",
            )
        cursor = table.get("cursor_column") or table.get("cursor_field")
        sync = table.get("sync") or (None if cursor else schema.get("sync"))
        if sync is None:
            continue  # incremental with a cursor, the schema's sync (or a full refresh) without (config/model.py)
        if sync == "incremental" and not cursor:
            yield (
                (*where, "cursor_column"),
                f"{format_path(where)}: sync: incremental needs a cursor_column (cursor_field for MongoDB): "
                "a NOT NULL column that grows on every insert and update, such as updated_at; or use "
                "sync: full_refresh",
            )
        if sync == "full_refresh" and cursor:
            yield (
                (*where, "sync"),
                f"{format_path((*where, 'sync'))}: a full refresh copies the whole table and reads no "
                f"cursor; remove cursor_column or set sync: incremental for table {table.get('name')!r}",
            )
    if schema.get("sync") == "incremental":
        named = {
            t.get("name")
            for t in tables
            if isinstance(t, dict) and (t.get("cursor_column") or t.get("cursor_field"))
        }
        if not tables or any(
            isinstance(t, dict) and t.get("name") not in named and "sync" not in t for t in tables
        ):
            path = ("schemas", i, "sync")
            yield (
                path,
                f"{format_path(path)}: sync: incremental for every table needs each table's cursor_column "
                "(under tables:); tables without one cannot be read incrementally. List them with a "
                "cursor_column, or set sync: full_refresh here and sync: incremental per table",
            )
