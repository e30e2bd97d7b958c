"""The configuration as immutable objects, with every setting resolved.

:func:`build_config` turns a dictionary that already passed the JSON Schema
into a :class:`Config`.  It is the only place that knows the built-in
defaults and the resolution order (table > schema > top level > default), so
nothing downstream reads raw dictionaries or invents its own fallback.
Every object is frozen and safe to hand to a forked child or a thread.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from warpd.config.filtering import TableFilter
from warpd.errors import ConfigError
from warpd.redact import redact

DEFAULT_STATE_DIR = "/var/lib/cartridge-warp"
CONTROL_SOCKET_NAME = "warpd.sock"  # in the state directory unless supervisor.control_socket says otherwise
DEFAULT_MAX_PARALLEL_STREAMS = 2
DEFAULT_BATCH_SIZE = 5000
DEFAULT_SNAPSHOT_CHUNK_SIZE = 20000
DEFAULT_DELETES = "hard"
DEFAULT_METADATA_COLUMNS = False
DEFAULT_FLATTEN_DEPTH = 0
DEFAULT_MAX_COLUMNS = 200
DEFAULT_MODE = "stream"
DEFAULT_ON_POSITION_LOST = "fail"
DEFAULT_MAX_BATCH_LATENCY_MS = 200
DEFAULT_FOREIGN_KEY_CASCADES = "refuse"
DEFAULT_SYNC = "full_refresh"  # mode: batch; incremental needs a cursor_column
DEFAULT_DELETE_DETECTION = "none"
BATCH_ONLY_KEYS = (
    "schedule",
    "sync",
    "cursor_column",
    "cursor_field",
    "safety_lag",
    "delete_detection",
    "partition_filter",
)
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds in a validated duration: a number of seconds, or ``"500ms"``, ``"30s"``, ``"15m"``, ``"2h"``, ``"1d"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.fullmatch(str(value))
    if match is None:
        raise ConfigError(f"{value!r} is not a duration (a number of seconds, or e.g. 30s, 15m, 2h, 1d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True)
class SafetyLag:
    """How far before its high-water mark an incremental batch run reads again.

    ``amount`` is seconds when ``duration`` (given with a unit, for a date/time cursor), otherwise
    units of the cursor column (a plain number: ids for an integer cursor, seconds for a date/time one).
    """

    amount: float
    duration: bool


@dataclass(frozen=True)
class Schedule:
    """When a batch schema's runs start: every ``every`` seconds, or at the times of a cron ``cron``."""

    every: float | None = None
    cron: str | None = None

    def describe(self) -> str:
        return (
            f"every {format_duration(self.every)}" if self.every is not None else f"cron {self.cron!r} (UTC)"
        )


@dataclass(frozen=True)
class VerifySchedule:
    """warpd's scheduled verify of a streaming schema (docs/verify.md): every ``every`` seconds, counted
    from the start of the last verify; ``repair`` re-copies the differing keys it finds."""

    every: float
    repair: bool = False

    def describe(self) -> str:
        return f"every {format_duration(self.every)}" + (", repairing" if self.repair else "")


def format_duration(seconds: float) -> str:
    """``seconds`` in the largest unit that divides it: 900 -> ``15m``, 5400 -> ``90m``, 1.5 -> ``1.5s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


ENDPOINT_TYPES = ("mysql", "postgresql", "mongodb", "bigquery")
MAX_SERVER_ID = 2**32 - 1  # MySQL's server_id is an unsigned 32-bit number
_SCHEME_TYPES = {
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mongodb": "mongodb",
    "mongodb+srv": "mongodb",
    "bigquery": "bigquery",
}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
# Option names whose values are hidden by EndpointConfig's repr.
SECRET_OPTION = re.compile(r"pass|secret|token|credential|private", re.I)


def scheme_to_type(uri: str) -> str:
    """The endpoint type a connection URI's scheme stands for, e.g. ``"mariadb://h/db"`` -> ``"mysql"``.

    A scheme no built-in connector claims stands for the connector plugin registered under that
    name, if one is installed (``sqlite:///x.db`` -> ``"sqlite"``)."""
    match = _SCHEME.match(uri) if isinstance(uri, str) else None
    if match is None:
        # Never echo the string: without a scheme, redact() cannot find a password in it.
        raise ConfigError(
            "not a connection URI: it must start with a scheme such as mysql://, postgresql:// or mongodb://"
        )
    scheme = match.group(1).lower()
    if scheme not in _SCHEME_TYPES:
        from warpd.connectors.registry import plugin_scheme

        plugin = plugin_scheme(scheme)  # an installed connector plugin named like its scheme
        if plugin is not None:
            return plugin
        supported = ", ".join(f"{name}://" for name in sorted(_SCHEME_TYPES))
        raise ConfigError(
            redact(
                f"unsupported scheme {scheme + '://'!r}; supported: {supported}, and the type name of any "
                "installed connector plugin (docs/writing-a-connector.md)"
            )
        )
    return _SCHEME_TYPES[scheme]


def database_from_uri(uri: str) -> str | None:
    """The database a URI names in its path (``/ecommerce``), or None."""
    try:
        path = urlsplit(uri).path
    except ValueError:
        return None
    name = unquote(path.lstrip("/").split("/", 1)[0])
    return name or None


class FrozenMapping(Mapping[str, Any]):
    """A read-only mapping.

    Unlike ``types.MappingProxyType`` it can be pickled, so a Config can be
    sent to a child process or through a queue.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        # Mapping.get goes through __getitem__ and a caught KeyError: measurable
        # when called for every streamed event
        return self._data.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)


def _freeze(value: Any) -> Any:
    """A read-only deep copy of a YAML/JSON value, so options cannot be changed behind the config's back."""
    if isinstance(value, Mapping):
        return FrozenMapping({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


@dataclass(frozen=True)
class EndpointConfig:
    """A source or destination: its type, where it is, and connector options."""

    type: str
    connection_string: str
    database: str | None = None
    options: Mapping[str, Any] = field(default_factory=FrozenMapping, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.options, FrozenMapping):
            object.__setattr__(self, "options", _freeze(self.options))

    def redacted(self) -> str:
        """The connection string with its password replaced by ``***``: the only form to show anyone."""
        return redact(self.connection_string)

    def __repr__(self) -> str:
        # A config object ends up in logs and tracebacks; the generated repr would print the password.
        options = {k: "***" if SECRET_OPTION.search(str(k)) else v for k, v in self.options.items()}
        return (
            f"EndpointConfig(type={self.type!r}, connection_string={self.redacted()!r}, "
            f"database={self.database!r}, options={redact(options)})"
        )


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried."""

    max_attempts: int = 10
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number *attempt* (1 = the first retry).

        ``initial_delay * multiplier ** (attempt - 1)``, capped at ``max_delay``,
        then spread by up to ``jitter`` of itself either way so that processes
        failing together do not retry in lockstep.  The result never exceeds
        ``max_delay``, so the cap is a bound operators can rely on.
        """
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, not {attempt}")
        try:
            # float() keeps an int multiplier from YAML out of exact big-integer arithmetic.
            base = self.initial_delay * float(self.multiplier) ** (attempt - 1)
        except OverflowError:
            base = self.max_delay
        base = min(base, self.max_delay)
        spread = base * self.jitter * (2.0 * rand() - 1.0)
        return max(0.0, min(self.max_delay, base + spread))


@dataclass(frozen=True)
class TableSettings:
    """The settings one table runs with, after resolution."""

    max_parallel_streams: int = DEFAULT_MAX_PARALLEL_STREAMS
    batch_size: int = DEFAULT_BATCH_SIZE
    snapshot_chunk_size: int = DEFAULT_SNAPSHOT_CHUNK_SIZE
    key_columns: tuple[str, ...] | None = None
    deletes: str = DEFAULT_DELETES
    metadata_columns: bool = DEFAULT_METADATA_COLUMNS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    flatten_depth: int = DEFAULT_FLATTEN_DEPTH  # MongoDB sources only
    max_columns: int = DEFAULT_MAX_COLUMNS  # MongoDB sources only
    # refuse | emulate | ignore, for foreign keys whose child is this table (see engine/cascades.py)
    foreign_key_cascades: str = DEFAULT_FOREIGN_KEY_CASCADES
    # mode: batch (docs/batch-mode.md)
    sync: str = DEFAULT_SYNC
    cursor_column: str | None = None  # cursor_field for MongoDB documents: the same setting
    safety_lag: SafetyLag | None = None  # None: the cursor type's default (1 minute, or 1000 units)
    delete_detection: str = DEFAULT_DELETE_DETECTION
    partition_filter: str | None = None  # BigQuery sources: a condition added to every read of the table


@dataclass(frozen=True)
class SchemaConfig:
    """One schema to replicate: what to read, where to write it, and how each table runs.

    ``tables`` names the tables with an explicit ``tables:`` entry; those
    entries carry settings and do not filter (see :meth:`includes`).
    """

    name: str
    mode: str = DEFAULT_MODE
    source_database: str = ""
    destination_schema: str = ""
    #: where the destination fence table (_warp_checkpoints) lives; "" is destination_schema
    checkpoint_schema: str = ""
    on_position_lost: str = DEFAULT_ON_POSITION_LOST
    max_batch_latency: float = DEFAULT_MAX_BATCH_LATENCY_MS / 1000.0
    tables: tuple[str, ...] = ()
    table_filter: TableFilter = field(default_factory=TableFilter)
    default_settings: TableSettings = field(default_factory=TableSettings)
    table_overrides: Mapping[str, TableSettings] = field(
        default_factory=FrozenMapping, hash=False, repr=False
    )
    #: source connector options this schema gets instead of ``source``'s own: a MySQL replica's
    #: ``server_id`` is ``source.server_id`` + the schema's index, as two replicas with one id evict each other
    source_overrides: Mapping[str, Any] = field(default_factory=FrozenMapping, hash=False)
    schedule: Schedule | None = None  # mode: batch
    verify: VerifySchedule | None = None  # mode: stream: warpd verifies the schema on this schedule

    @property
    def batch(self) -> bool:
        return self.mode == "batch"

    def __post_init__(self) -> None:
        # Keeps hand-built instances (tests, tools) consistent with what build_config produces.
        if not self.source_database:
            object.__setattr__(self, "source_database", self.name)
        if not self.destination_schema:
            object.__setattr__(self, "destination_schema", self.name)
        if not isinstance(self.table_overrides, FrozenMapping):
            object.__setattr__(self, "table_overrides", FrozenMapping(self.table_overrides))
        if not isinstance(self.source_overrides, FrozenMapping):
            object.__setattr__(self, "source_overrides", FrozenMapping(self.source_overrides))

    def source_options(self, source: EndpointConfig) -> dict[str, Any]:
        """The options this schema's source connector is built with: *source*'s, with this schema's overrides."""
        return {**source.options, **self.source_overrides}

    def includes(self, table: str) -> bool:
        """True when *table* passes the whitelists and blacklists (global and this schema's)."""
        return self.table_filter.includes(table)

    def exclusion_reason(self, table: str) -> str | None:
        """Why *table* is filtered out, for the dry-run plan; None when it is included."""
        return self.table_filter.exclusion_reason(table)

    def table_settings(self, table: str) -> TableSettings:
        """The resolved settings of *table*; a table without a ``tables:`` entry gets the schema's defaults."""
        return self.table_overrides.get(table, self.default_settings)


@dataclass(frozen=True)
class PrometheusConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class MonitoringConfig:
    log_level: str = "INFO"
    log_format: str = "text"
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)


@dataclass(frozen=True)
class SupervisorConfig:
    """How warpd supervises its schema processes (restarts, heartbeats, stopping, control socket)."""

    restart_backoff_base: float = 1.0
    restart_backoff_cap: float = 60.0
    crash_loop_threshold: int = 5
    crash_loop_window: float = 300.0
    healthy_after: float = 60.0
    heartbeat_timeout: float = 60.0
    stop_timeout: float = 30.0
    control_socket: str = os.path.join(DEFAULT_STATE_DIR, CONTROL_SOCKET_NAME)


@dataclass(frozen=True)
class CliOverrides:
    """Settings given on the command line; None means "not given". They win over file and environment."""

    source: str | None = None
    destination: str | None = None
    schema: str | None = None
    dry_run: bool | None = None
    state_dir: str | None = None
    log_level: str | None = None


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    source: EndpointConfig
    destination: EndpointConfig
    schemas: tuple[SchemaConfig, ...]
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    state_dir: str = DEFAULT_STATE_DIR
    dry_run: bool = False
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)

    @property
    def schema_names(self) -> tuple[str, ...]:
        return tuple(schema.name for schema in self.schemas)

    def schema(self, name: str) -> SchemaConfig:
        """The schema called *name*; ConfigError naming the configured schemas when there is none."""
        for schema in self.schemas:
            if schema.name == name:
                return schema
        configured = ", ".join(repr(n) for n in self.schema_names) or "none"
        raise ConfigError(f"schema {name!r} is not configured; configured schemas: {configured}")


# ---------------------------------------------------------------------------
# Building the model from validated data


def _first(default: Any, *candidates: tuple[Mapping[str, Any], str]) -> Any:
    """The value of the first (level, key) present, most specific level first."""
    for level, key in candidates:
        if key in level:
            return level[key]
    return default


_RETRY_KEYS = {
    "max_attempts": "max_attempts",
    "initial_delay_seconds": "initial_delay",
    "max_delay_seconds": "max_delay",
    "multiplier": "multiplier",
    "jitter": "jitter",
}


def _retry(*levels: Mapping[str, Any]) -> RetryPolicy:
    """Merge ``retry:`` mappings key by key, least specific first, over the built-in defaults."""
    merged: dict[str, Any] = {}
    for level in levels:
        merged.update(level.get("retry") or {})
    values = {_RETRY_KEYS[key]: value for key, value in merged.items()}
    for key in ("initial_delay", "max_delay", "multiplier", "jitter"):
        if key in values:
            values[key] = float(values[key])
    return RetryPolicy(**values)


def _table_settings(
    table: Mapping[str, Any], schema: Mapping[str, Any], top: Mapping[str, Any]
) -> TableSettings:
    levels = (table, schema, top)
    key_columns = table.get("key_columns")
    return TableSettings(
        max_parallel_streams=_first(
            DEFAULT_MAX_PARALLEL_STREAMS,
            (table, "max_parallel_streams"),
            (schema, "default_max_parallel_streams"),
            (top, "global_max_parallel_streams"),
        ),
        batch_size=_first(DEFAULT_BATCH_SIZE, *((level, "batch_size") for level in levels)),
        snapshot_chunk_size=_first(
            DEFAULT_SNAPSHOT_CHUNK_SIZE, *((level, "snapshot_chunk_size") for level in levels)
        ),
        key_columns=tuple(key_columns) if key_columns else None,
        deletes=_first(DEFAULT_DELETES, *((level, "deletes") for level in levels)),
        metadata_columns=_first(DEFAULT_METADATA_COLUMNS, *((level, "metadata_columns") for level in levels)),
        retry=_retry(top, schema, table),
        flatten_depth=_first(DEFAULT_FLATTEN_DEPTH, *((level, "flatten_depth") for level in levels)),
        max_columns=_first(DEFAULT_MAX_COLUMNS, *((level, "max_columns") for level in levels)),
        foreign_key_cascades=_first(
            DEFAULT_FOREIGN_KEY_CASCADES, *((level, "foreign_key_cascades") for level in levels)
        ),
        # a table's own sync, else incremental when it names a cursor, else the schema's sync
        sync=table.get("sync")
        or ("incremental" if table.get("cursor_column") or table.get("cursor_field") else None)
        or schema.get("sync", DEFAULT_SYNC),
        cursor_column=table.get("cursor_column") or table.get("cursor_field"),
        safety_lag=_safety_lag(_first(None, (table, "safety_lag"), (schema, "safety_lag"))),
        delete_detection=_first(
            DEFAULT_DELETE_DETECTION, (table, "delete_detection"), (schema, "delete_detection")
        ),
        partition_filter=table.get("partition_filter"),
    )


def _safety_lag(value: Any) -> SafetyLag | None:
    if value is None:
        return None
    with_unit = (
        isinstance(value, str)
        and _DURATION.fullmatch(value) is not None
        and (
            _DURATION.fullmatch(value).group(2) is not None  # type: ignore[union-attr]
        )
    )
    return SafetyLag(parse_duration(value), duration=with_unit)


def _schedule(data: Mapping[str, Any]) -> Schedule | None:
    section = data.get("schedule")
    if not section:
        return None
    if "every" in section:
        return Schedule(every=parse_duration(section["every"]))
    return Schedule(cron=str(section["cron"]).strip())


def build_endpoint(section: Mapping[str, Any]) -> EndpointConfig:
    """An :class:`EndpointConfig` from a validated ``source:``/``destination:`` mapping."""
    uri = section["connection_string"]
    options = {k: v for k, v in section.items() if k not in ("type", "connection_string", "database")}
    kind = section.get("type") or scheme_to_type(uri)
    if kind == "bigquery":  # project, location, credentials... may be keys of the section (docs/bigquery.md)
        from warpd.connectors.bigquery.uri import OPTION_KEYS, with_options

        uri = with_options(uri, options)
        options = {k: v for k, v in options.items() if k not in OPTION_KEYS}
    return EndpointConfig(
        type=kind,
        connection_string=uri,
        database=section.get("database") or database_from_uri(uri),
        options=_freeze(options),
    )


def _source_overrides(source: EndpointConfig, index: int) -> FrozenMapping:
    base = source.options.get("server_id")
    if source.type == "mysql" and isinstance(base, int) and not isinstance(base, bool):
        return FrozenMapping({"server_id": base + index})
    return FrozenMapping()


def _build_schema(
    data: Mapping[str, Any], top: Mapping[str, Any], source: EndpointConfig, index: int
) -> SchemaConfig:
    name = data["name"]
    # a BigQuery destination's ``dataset`` is every schema's default destination schema
    default_dataset = (top.get("destination") or {}).get("dataset")
    tables = data.get("tables") or []
    return SchemaConfig(
        name=name,
        mode=data.get("mode", DEFAULT_MODE),
        source_database=data.get("source_database") or source.database or name,
        destination_schema=data.get("destination_schema") or default_dataset or name,
        checkpoint_schema=data.get("checkpoint_schema") or "",
        on_position_lost=_first(
            DEFAULT_ON_POSITION_LOST, (data, "on_position_lost"), (top, "on_position_lost")
        ),
        max_batch_latency=_first(
            DEFAULT_MAX_BATCH_LATENCY_MS, (data, "max_batch_latency_ms"), (top, "max_batch_latency_ms")
        )
        / 1000.0,
        tables=tuple(table["name"] for table in tables),
        table_filter=TableFilter(
            global_whitelist=tuple(top.get("global_table_whitelist") or ()),
            global_blacklist=tuple(top.get("global_table_blacklist") or ()),
            schema_whitelist=tuple(data.get("table_whitelist") or ()),
            schema_blacklist=tuple(data.get("table_blacklist") or ()),
        ),
        default_settings=_table_settings({}, data, top),
        table_overrides=FrozenMapping({table["name"]: _table_settings(table, data, top) for table in tables}),
        source_overrides=_source_overrides(source, index),
        schedule=_schedule(data),
        verify=_verify_schedule(data, top),
    )


def _verify_schedule(schema: Mapping[str, Any], top: Mapping[str, Any]) -> VerifySchedule | None:
    """The schema's ``verify:`` over the top level's, key by key; None without ``every`` (or in batch mode)."""
    if schema.get("mode", DEFAULT_MODE) != "stream":
        return None
    own, default = schema.get("verify") or {}, top.get("verify") or {}
    every = _first(None, (own, "every"), (default, "every"))
    if every is None:
        return None
    return VerifySchedule(parse_duration(every), bool(_first(False, (own, "repair"), (default, "repair"))))


def build_config(data: Mapping[str, Any]) -> Config:
    """A :class:`Config` from data that passed the JSON Schema and the loader's consistency checks."""
    source = build_endpoint(data["source"])
    monitoring = data.get("monitoring") or {}
    prometheus = monitoring.get("prometheus") or {}
    return Config(
        source=source,
        destination=build_endpoint(data["destination"]),
        schemas=tuple(_build_schema(schema, data, source, i) for i, schema in enumerate(data["schemas"])),
        monitoring=MonitoringConfig(
            log_level=str(monitoring.get("log_level", "INFO")).upper(),
            log_format=monitoring.get("log_format", "text"),
            prometheus=PrometheusConfig(
                enabled=prometheus.get("enabled", False),
                host=prometheus.get("host", "127.0.0.1"),
                port=prometheus.get("port", 8080),
            ),
        ),
        state_dir=data.get("state_dir", DEFAULT_STATE_DIR),
        dry_run=data.get("dry_run", False),
        supervisor=_build_supervisor(data.get("supervisor") or {}, data.get("state_dir", DEFAULT_STATE_DIR)),
    )


def _build_supervisor(section: Mapping[str, Any], state_dir: str) -> SupervisorConfig:
    numbers: dict[str, Any] = {
        key: float(section[key])
        for key in (
            "restart_backoff_base",
            "restart_backoff_cap",
            "crash_loop_window",
            "healthy_after",
            "heartbeat_timeout",
            "stop_timeout",
        )
        if key in section
    }
    if "crash_loop_threshold" in section:
        numbers["crash_loop_threshold"] = section["crash_loop_threshold"]
    return SupervisorConfig(
        **numbers,
        control_socket=section.get("control_socket") or os.path.join(state_dir, CONTROL_SOCKET_NAME),
    )
