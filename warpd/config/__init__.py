"""Configuration: load a YAML/JSON file, apply overrides, validate, resolve.

    config = load_config("/etc/cartridge-warp/config.yaml", cli=CliOverrides(schema="shop"))
    settings = config.schema("shop").table_settings("orders")

The keys are documented in docs/configuration.md; the JSON Schema that
validates them ships as ``warpd/config/schema.json``.
"""

from warpd.config.filtering import TableFilter
from warpd.config.loader import ENV_PREFIX, RESERVED_ENV, config_schema, load_config
from warpd.config.model import (
    DEFAULT_STATE_DIR,
    CliOverrides,
    Config,
    EndpointConfig,
    MonitoringConfig,
    PrometheusConfig,
    RetryPolicy,
    SchemaConfig,
    SupervisorConfig,
    TableSettings,
    scheme_to_type,
)

__all__ = [
    "DEFAULT_STATE_DIR",
    "ENV_PREFIX",
    "RESERVED_ENV",
    "CliOverrides",
    "Config",
    "EndpointConfig",
    "MonitoringConfig",
    "PrometheusConfig",
    "RetryPolicy",
    "SchemaConfig",
    "SupervisorConfig",
    "TableFilter",
    "TableSettings",
    "config_schema",
    "load_config",
    "scheme_to_type",
]
