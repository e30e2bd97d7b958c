"""Configuration: loading, overrides, validation messages, resolution and filtering."""

from __future__ import annotations

import copy
import json
import pickle
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from warpd.config import (
    CliOverrides,
    Config,
    EndpointConfig,
    RetryPolicy,
    SchemaConfig,
    TableSettings,
    config_schema,
    load_config,
    scheme_to_type,
)
from warpd.config.model import SafetyLag
from warpd.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "etc" / "cartridge-warp"
PASSWORD = "Sup3rS3cret"

BASE = {
    "source": {"connection_string": "mysql://warp@db1:3306"},
    "destination": {"connection_string": "postgresql://warp@pg1:5432/warehouse"},
    "schemas": [{"name": "shop"}],
}


def config_with(**top) -> dict:
    data = copy.deepcopy(BASE)
    data.update(top)
    return data


def write(tmp_path: Path, data: dict | str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data)
    elif name.endswith(".json"):
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data))
    return str(path)


def load(
    tmp_path: Path, data: dict | str, environ: dict | None = None, cli: CliOverrides | None = None
) -> Config:
    return load_config(write(tmp_path, data), environ=environ or {}, cli=cli)


def error_of(
    tmp_path: Path, data: dict | str, environ: dict | None = None, cli: CliOverrides | None = None
) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, data, environ, cli)
    return str(caught.value)


# ---------------------------------------------------------------------------
# Files and shipped examples


def test_yaml_and_json_forms_load_to_the_same_config(tmp_path):
    data = config_with(
        global_max_parallel_streams=3,
        global_table_blacklist=["tmp_*"],
        schemas=[{"name": "shop", "tables": [{"name": "orders", "batch_size": 100, "retry": {"jitter": 0}}]}],
        monitoring={"log_level": "debug", "prometheus": {"enabled": True, "port": 9100}},
    )
    from_yaml = load_config(write(tmp_path, data, "c.yaml"), environ={})
    from_json = load_config(write(tmp_path, data, "c.json"), environ={})
    assert from_yaml == from_json
    assert from_json.schema("shop").table_settings("orders").batch_size == 100
    assert from_json.monitoring.log_level == "DEBUG"
    assert from_json.monitoring.prometheus.port == 9100


@pytest.mark.parametrize(
    "name", ["config.yaml", "multi-schema-config.json", "mongodb-quickstart.yaml", "bigquery-batch.yaml"]
)
def test_shipped_examples_validate(name):
    config = load_config(str(EXAMPLES / name), environ={})
    assert config.schemas
    assert config.source.type in ("mysql", "mongodb", "bigquery")
    assert config.destination.type == "postgresql"


def test_quickstart_example_resolves_like_the_readme_says():
    config = load_config(str(EXAMPLES / "mongodb-quickstart.yaml"), environ={})
    products = config.schema("products")
    assert products.source_database == "ecommerce"
    assert products.table_settings("orders").max_parallel_streams == 5
    assert products.table_settings("orders").batch_size == 1000
    assert products.table_settings("users").max_parallel_streams == 1
    assert products.table_settings("products").max_parallel_streams == 3  # schema default
    assert products.includes("users") and not products.includes("temp_tables")
    assert not products.includes("inventory")  # not in the global whitelist
    assert config.monitoring.prometheus.enabled is True


def _property_names(node, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        out.update(node.get("properties", {}))
        for value in node.values():
            _property_names(value, out)
    elif isinstance(node, list):
        for value in node:
            _property_names(value, out)
    return out


def _keys_used(node, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        out.update(node)
        for value in node.values():
            _keys_used(value, out)
    elif isinstance(node, list):
        for value in node:
            _keys_used(value, out)
    return out


def test_commented_example_shows_every_key():
    schema_keys = _property_names(config_schema(), set())
    used = _keys_used(yaml.safe_load((EXAMPLES / "config.yaml").read_text()), set())
    # a BigQuery source's own keys are shown by the example of that source (config.yaml reads MySQL)
    bigquery = _keys_used(yaml.safe_load((EXAMPLES / "bigquery-batch.yaml").read_text()), set())
    assert sorted(schema_keys - used - (bigquery & {"partition_filter"})) == []


def test_reference_documents_every_key():
    text = (REPO / "docs" / "configuration.md").read_text()
    missing = [
        key
        for key in _property_names(config_schema(), set())
        if f"`{key}`" not in text and f".{key}`" not in text
    ]
    assert missing == []


def test_schema_is_valid_draft_2020_12_and_its_defaults_are_the_models():
    schema = config_schema()
    Draft202012Validator.check_schema(schema)
    props, defs = schema["properties"], schema["$defs"]
    settings = TableSettings()
    assert props["global_max_parallel_streams"]["default"] == settings.max_parallel_streams
    assert props["batch_size"]["default"] == settings.batch_size
    assert props["snapshot_chunk_size"]["default"] == settings.snapshot_chunk_size
    assert props["deletes"]["default"] == settings.deletes
    assert props["metadata_columns"]["default"] == settings.metadata_columns
    assert props["state_dir"]["default"] == Config.__dataclass_fields__["state_dir"].default
    retry = defs["retry"]["properties"]
    assert retry["max_attempts"]["default"] == RetryPolicy().max_attempts
    assert retry["initial_delay_seconds"]["default"] == RetryPolicy().initial_delay
    assert retry["max_delay_seconds"]["default"] == RetryPolicy().max_delay
    assert retry["multiplier"]["default"] == RetryPolicy().multiplier
    assert retry["jitter"]["default"] == RetryPolicy().jitter


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the configuration file: No such file"):
        load_config(str(tmp_path / "nope.yaml"), environ={})


def test_directory_instead_of_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(str(tmp_path), environ={})


def test_yaml_syntax_error_names_the_line(tmp_path):
    text = "source:\n  connection_string: mysql://h\ndestination: [\n  oops: : :\n"
    message = error_of(tmp_path, text)
    assert "config.yaml: line 4" in message
    assert "invalid YAML" in message


def test_yaml_duplicate_key_is_an_error_naming_both_lines(tmp_path):
    text = "batch_size: 10\nstate_dir: /tmp/x\nbatch_size: 20\n"
    message = error_of(tmp_path, text)
    assert "line 3" in message and "duplicate key 'batch_size' (first at line 1)" in message


def test_yaml_merge_keys_still_work(tmp_path):
    text = """
source: {connection_string: "mysql://h"}
destination: {connection_string: "postgresql://h/w"}
schemas:
  - &base {name: a, batch_size: 10, deletes: soft}
  - <<: *base
    name: b
"""
    config = load(tmp_path, text)
    assert config.schema("b").table_settings("t").batch_size == 10
    assert config.schema("b").table_settings("t").deletes == "soft"


def test_json_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, '{\n  "batch_size": 10,\n  "state_dir" "/x"\n}', "c.json")
    with pytest.raises(ConfigError, match=r"c\.json: line 3, column 15: invalid JSON"):
        load_config(path, environ={})


def test_top_level_list_is_rejected(tmp_path):
    assert "the top level must be a mapping" in error_of(tmp_path, "- a\n- b\n")


# ---------------------------------------------------------------------------
# Validation messages


def test_error_names_the_exact_path(tmp_path):
    data = config_with(schemas=[{"name": "shop", "tables": [{"name": "a"}, {"name": "b", "batch_size": 0}]}])
    assert error_of(tmp_path, data) == "schemas[0].tables[1].batch_size: 0 is less than the minimum of 1"


def test_every_problem_is_reported_sorted_by_path(tmp_path):
    schemas = [{"name": f"s{i}"} for i in range(11)]
    schemas[2]["mode"] = "streem"
    schemas[10]["batch_size"] = -1
    data = config_with(schemas=schemas, monitoring={"prometheus": {"port": 70000}}, dry_run="maybe")
    assert error_of(tmp_path, data).splitlines() == [
        "dry_run: expected true or false, got 'maybe'",
        "monitoring.prometheus.port: 70000 is greater than the maximum of 65535",
        "schemas[2].mode: 'streem' is not one of 'stream', 'batch'; did you mean 'stream'?",
        "schemas[10].batch_size: -1 is less than the minimum of 1",
    ]


def test_unknown_key_suggests_the_closest_valid_one(tmp_path):
    data = config_with(schemas=[{"name": "shop", "tables": [{"name": "t", "bach_size": 5}]}])
    assert (
        error_of(tmp_path, data) == "schemas[0].tables[0].bach_size: unknown key; did you mean 'batch_size'?"
    )


def test_key_at_the_wrong_level_suggests_that_levels_name(tmp_path):
    data = config_with(max_parallel_streams=4, schemas=[{"name": "shop", "max_parallel_streams": 4}])
    assert error_of(tmp_path, data).splitlines() == [
        "max_parallel_streams: unknown key; did you mean 'global_max_parallel_streams'?",
        "schemas[0].max_parallel_streams: unknown key; did you mean 'default_max_parallel_streams'?",
    ]


def test_unknown_key_without_a_close_match_lists_the_valid_ones(tmp_path):
    message = error_of(tmp_path, config_with(monitoring={"zzz": 1}))
    assert message == "monitoring.zzz: unknown key; valid keys here: log_format, log_level, prometheus"


def test_misspelt_endpoint_key_is_not_taken_for_a_connector_option(tmp_path):
    data = config_with(destination={"connection_string": "postgresql://h/w", "databse": "w"})
    assert error_of(tmp_path, data) == "destination.databse: unknown key; did you mean 'database'?"


def test_misspelt_connection_string_from_env_is_caught():
    environ = {"CARTRIDGE_WARP_SOURCE__CONECTION_STRING": "mysql://db1/shop"}
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ=environ, cli=CliOverrides(destination="postgresql://pg/w", schema="shop"))
    assert str(caught.value).splitlines() == [
        "source.conection_string: unknown key; did you mean 'connection_string'? "
        "(set by CARTRIDGE_WARP_SOURCE__CONECTION_STRING)",
        "source.connection_string: required (set it in the file, with --source, "
        "or CARTRIDGE_WARP_SOURCE__CONNECTION_STRING)",
    ]


def test_empty_value_and_wrong_types_are_explained(tmp_path):
    data = config_with(batch_size=None, global_table_whitelist="users", state_dir=["a"])
    assert error_of(tmp_path, data).splitlines() == [
        "batch_size: expected an integer, got null (an empty value)",
        "global_table_whitelist: expected a list, got 'users'",
        "state_dir: expected a string, got a list",
    ]


def test_blank_schema_name_and_empty_key_columns_are_rejected(tmp_path):
    data = config_with(schemas=[{"name": " ", "tables": [{"name": "t", "key_columns": []}]}])
    assert error_of(tmp_path, data).splitlines() == [
        "schemas[0].name: ' ' is not valid: must be non-empty, without leading or trailing whitespace",
        "schemas[0].tables[0].key_columns: must list at least 1 entry",
    ]


def test_duplicate_schema_and_table_names_are_errors(tmp_path):
    data = config_with(
        schemas=[
            {"name": "shop", "tables": [{"name": "orders"}, {"name": "users"}, {"name": "orders"}]},
            {"name": "shop"},
        ]
    )
    assert error_of(tmp_path, data).splitlines() == [
        "schemas[0].tables[2].name: duplicate table name 'orders' (already at schemas[0].tables[0])",
        "schemas[1].name: duplicate schema name 'shop' (already at schemas[0])",
    ]


def test_no_schemas_is_an_error_that_says_how_to_add_one(tmp_path):
    data = config_with(schemas=[])
    assert error_of(tmp_path, data) == (
        "schemas: must list at least 1 entry (list at least one schema in the file, or name one with --schema)"
    )


def test_missing_connection_strings_say_where_to_set_them():
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={}, cli=CliOverrides(schema="shop"))
    assert str(caught.value).splitlines() == [
        "destination.connection_string: required (set it in the file, with --destination, "
        "or CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING)",
        "source.connection_string: required (set it in the file, with --source, "
        "or CARTRIDGE_WARP_SOURCE__CONNECTION_STRING)",
    ]


# ---------------------------------------------------------------------------
# Passwords


@pytest.mark.parametrize(
    "data",
    [
        # the type contradicts the scheme
        config_with(source={"type": "mongodb", "connection_string": f"mysql://root:{PASSWORD}@db1/shop"}),
        # an unsupported scheme
        config_with(source={"connection_string": f"mysqlx://root:{PASSWORD}@db1/shop"}),
        # a URI where a section belongs
        config_with(source=f"mysql://root:{PASSWORD}@db1/shop"),
        # a URI in a key that wants a number
        config_with(batch_size=f"postgresql://u:{PASSWORD}@pg/w"),
        # a DSN-style string in a list
        config_with(global_table_whitelist=[f"host=pg password={PASSWORD}", 5]),
    ],
)
def test_password_never_appears_in_an_error(tmp_path, data):
    message = error_of(tmp_path, data)
    assert PASSWORD not in message
    assert message.startswith(("source", "batch_size", "global_table_whitelist"))


def test_password_not_echoed_from_a_yaml_syntax_error(tmp_path):
    text = f'source:\n  connection_string: "mysql://root:{PASSWORD}@db1/shop\n  type: mysql\n'
    message = error_of(tmp_path, text)
    assert "invalid YAML" in message and PASSWORD not in message


def test_password_not_echoed_from_a_uri_without_scheme(tmp_path):
    message = error_of(tmp_path, config_with(source={"connection_string": f"root:{PASSWORD}@db1:3306"}))
    assert PASSWORD not in message
    assert message.startswith("source.connection_string: not a connection URI")


def test_endpoint_shows_only_the_redacted_connection_string():
    endpoint = EndpointConfig("mysql", f"mysql://root:{PASSWORD}@db1/shop", "shop", {"password": PASSWORD})
    assert endpoint.redacted() == "mysql://root:***@db1/shop"
    assert PASSWORD not in repr(endpoint)
    config = load_config(
        None,
        environ={"CARTRIDGE_WARP_SOURCE__CONNECTION_STRING": f"mysql://root:{PASSWORD}@db1/shop"},
        cli=CliOverrides(destination="postgresql://pg/w", schema="shop"),
    )
    assert PASSWORD not in repr(config)


# ---------------------------------------------------------------------------
# Endpoints


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("mysql://h/db", "mysql"),
        ("mariadb://h:3306", "mysql"),
        ("postgresql://h/w", "postgresql"),
        ("postgres://u:p@h/w", "postgresql"),
        ("mongodb://localhost:27017/ecommerce", "mongodb"),
        ("mongodb+srv://user:pass@cluster.mongodb.net/prod", "mongodb"),
        ("bigquery://project/dataset", "bigquery"),
        ("MySQL://h/db", "mysql"),
    ],
)
def test_scheme_to_type(uri, kind):
    assert scheme_to_type(uri) == kind


@pytest.mark.parametrize("uri", ["redis://h", "localhost:5432", "", "mysql:/h"])
def test_scheme_to_type_rejects_what_it_does_not_know(uri):
    with pytest.raises(ConfigError, match="unsupported scheme|not a connection URI"):
        scheme_to_type(uri)


def test_type_and_database_are_inferred_from_the_uri(tmp_path):
    data = config_with(source={"connection_string": "mariadb://warp@db1:3306/shop", "server_id": 7})
    config = load(tmp_path, data)
    assert config.source.type == "mysql"
    assert config.source.database == "shop"
    assert config.source.options == {"server_id": 7}
    assert config.destination.type == "postgresql" and config.destination.database == "warehouse"
    with pytest.raises(TypeError):
        config.source.options["server_id"] = 8  # type: ignore[index]


def test_explicit_database_beats_the_uri_path(tmp_path):
    data = config_with(source={"connection_string": "mysql://db1/shop", "database": "other"})
    assert load(tmp_path, data).source.database == "other"


def test_type_contradicting_the_scheme_is_an_error(tmp_path):
    data = config_with(destination={"type": "mysql", "connection_string": "postgresql://pg/w"})
    assert error_of(tmp_path, data) == (
        "destination.type: 'mysql' contradicts the connection string, whose scheme means 'postgresql'; "
        "correct one of them (type may be left out)"
    )


def test_schema_database_and_destination_schema_defaults(tmp_path):
    data = config_with(
        source={"connection_string": "mongodb://h/ecommerce"},
        schemas=[
            {"name": "products"},
            {"name": "crm", "source_database": "crm_prod", "destination_schema": "c"},
        ],
    )
    config = load(tmp_path, data)
    assert (config.schema("products").source_database, config.schema("products").destination_schema) == (
        "ecommerce",
        "products",
    )
    assert (config.schema("crm").source_database, config.schema("crm").destination_schema) == (
        "crm_prod",
        "c",
    )
    no_db = load(tmp_path, config_with())
    assert no_db.schema("shop").source_database == "shop"


def test_config_is_immutable_and_survives_pickling_to_a_child_process():
    config = load_config(str(EXAMPLES / "config.yaml"), environ={})
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(AttributeError):
        config.schemas[0].name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.schemas[0].table_overrides["x"] = TableSettings()  # type: ignore[index]


def test_unknown_schema_lists_the_configured_ones(tmp_path):
    config = load(tmp_path, config_with(schemas=[{"name": "shop"}, {"name": "billing"}]))
    with pytest.raises(
        ConfigError, match="schema 'crm' is not configured; configured schemas: 'shop', 'billing'"
    ):
        config.schema("crm")


# ---------------------------------------------------------------------------
# Resolution: table > schema > global > default


def _three_level(table: dict, schema: dict, top: dict) -> dict:
    return config_with(**top, schemas=[{"name": "shop", **schema, "tables": [{"name": "orders", **table}]}])


@pytest.mark.parametrize(
    ("table", "schema", "top", "expected"),
    [
        (
            {"max_parallel_streams": 8},
            {"default_max_parallel_streams": 4},
            {"global_max_parallel_streams": 3},
            8,
        ),
        ({}, {"default_max_parallel_streams": 4}, {"global_max_parallel_streams": 3}, 4),
        ({}, {}, {"global_max_parallel_streams": 3}, 3),
        ({}, {}, {}, 2),
    ],
)
def test_max_parallel_streams_resolution(tmp_path, table, schema, top, expected):
    config = load(tmp_path, _three_level(table, schema, top))
    assert config.schema("shop").table_settings("orders").max_parallel_streams == expected


@pytest.mark.parametrize(
    ("key", "values", "default"),
    [("batch_size", (10, 20, 30), 5000), ("deletes", ("soft", "hard", "soft"), "hard")],
)
@pytest.mark.parametrize("levels_set", [3, 2, 1, 0])
def test_batch_size_and_deletes_resolution(tmp_path, key, values, default, levels_set):
    # levels_set=3: all three levels set, so the table wins; 2: schema and global; 1: global only; 0: none.
    table, schema, top = (
        {key: values[0]} if levels_set >= 3 else {},
        {key: values[1]} if levels_set >= 2 else {},
        {key: values[2]} if levels_set >= 1 else {},
    )
    expected = {3: values[0], 2: values[1], 1: values[2], 0: default}[levels_set]
    settings = load(tmp_path, _three_level(table, schema, top)).schema("shop").table_settings("orders")
    assert getattr(settings, key) == expected


def test_tables_without_an_entry_get_schema_global_and_default_values(tmp_path):
    data = _three_level({"batch_size": 1}, {"deletes": "soft"}, {"batch_size": 300, "metadata_columns": True})
    settings = load(tmp_path, data).schema("shop").table_settings("customers")
    assert settings == TableSettings(
        max_parallel_streams=2,
        batch_size=300,
        snapshot_chunk_size=20000,
        key_columns=None,
        deletes="soft",
        metadata_columns=True,
        retry=RetryPolicy(),
    )


def test_retry_merges_key_by_key(tmp_path):
    data = _three_level(
        {"retry": {"max_delay_seconds": 60}},
        {"retry": {"max_attempts": 8}},
        {"retry": {"max_attempts": 5, "max_delay_seconds": 10, "jitter": 0}},
    )
    shop = load(tmp_path, data).schema("shop")
    assert shop.table_settings("orders").retry == RetryPolicy(
        max_attempts=8, initial_delay=0.5, max_delay=60.0, multiplier=2.0, jitter=0.0
    )
    assert shop.table_settings("customers").retry == RetryPolicy(
        max_attempts=8, initial_delay=0.5, max_delay=10.0, multiplier=2.0, jitter=0.0
    )


def test_key_columns_and_latency_and_position_lost(tmp_path):
    data = config_with(
        max_batch_latency_ms=500,
        on_position_lost="resnapshot",
        schemas=[
            {"name": "a", "tables": [{"name": "items", "key_columns": ["order_id", "line_no"]}]},
            {"name": "b", "max_batch_latency_ms": 50, "on_position_lost": "fail"},
        ],
    )
    config = load(tmp_path, data)
    assert config.schema("a").table_settings("items").key_columns == ("order_id", "line_no")
    assert config.schema("a").table_settings("other").key_columns is None
    assert (config.schema("a").max_batch_latency, config.schema("a").on_position_lost) == (0.5, "resnapshot")
    assert (config.schema("b").max_batch_latency, config.schema("b").on_position_lost) == (0.05, "fail")
    assert config.schema("a").tables == ("items",)


def test_documented_resolution_example(tmp_path):
    text = (REPO / "docs" / "parallelism-and-filtering.md").read_text()
    example = re.search(r"### Example\n\n```yaml\n(.*?)```", text, re.S).group(1)
    data = yaml.safe_load(example)
    data.update(source=BASE["source"], destination=BASE["destination"])
    config = load(tmp_path, data)
    orders = config.schema("shop").table_settings("orders")
    customers = config.schema("shop").table_settings("customers")
    invoices = config.schema("billing").table_settings("invoices")
    assert (
        orders.max_parallel_streams,
        orders.batch_size,
        orders.retry.max_attempts,
        orders.retry.max_delay,
    ) == (
        8,
        1000,
        8,
        60,
    )
    assert (customers.max_parallel_streams, customers.batch_size, customers.retry.max_delay) == (4, 5000, 10)
    assert (invoices.max_parallel_streams, invoices.retry.max_attempts, invoices.retry.initial_delay) == (
        2,
        5,
        0.5,
    )


# ---------------------------------------------------------------------------
# Filtering


def _filtered(tmp_path, schema: dict, **top) -> SchemaConfig:
    return load(tmp_path, config_with(**top, schemas=[{"name": "shop", **schema}])).schema("shop")


def test_no_lists_includes_everything(tmp_path):
    shop = _filtered(tmp_path, {})
    assert shop.includes("orders") and shop.includes("anything_at_all")


def test_global_whitelist_exact_and_glob(tmp_path):
    shop = _filtered(tmp_path, {}, global_table_whitelist=["users", "orders_*"])
    assert [t for t in ("users", "orders_2024", "orders", "products") if shop.includes(t)] == [
        "users",
        "orders_2024",
    ]


def test_schema_whitelist_replaces_the_global_one(tmp_path):
    shop = _filtered(tmp_path, {"table_whitelist": ["events_20??"]}, global_table_whitelist=["users"])
    assert shop.includes("events_2024")
    assert not shop.includes("events_24")
    assert not shop.includes("users")
    assert shop.exclusion_reason("users") == "matches no table_whitelist entry"


def test_blacklists_at_both_levels_win_over_whitelists(tmp_path):
    shop = _filtered(
        tmp_path,
        {"table_whitelist": ["*"], "table_blacklist": ["orders_archive"]},
        global_table_blacklist=["*_tmp"],
    )
    assert shop.includes("orders")
    assert not shop.includes("orders_archive")
    assert not shop.includes("cache_tmp")
    assert shop.exclusion_reason("cache_tmp") == "matches global_table_blacklist entry '*_tmp'"


def test_filters_are_case_sensitive_and_exact_names_with_glob_characters_match(tmp_path):
    shop = _filtered(tmp_path, {"table_whitelist": ["orders", "a[1]"]})
    assert shop.includes("orders") and not shop.includes("Orders")
    assert shop.includes("a[1]")


def test_empty_list_means_no_list(tmp_path):
    shop = _filtered(tmp_path, {"table_whitelist": []}, global_table_whitelist=["users"])
    assert shop.includes("users") and not shop.includes("orders")


def test_tables_entries_carry_settings_but_do_not_filter(tmp_path):
    shop = _filtered(
        tmp_path, {"table_blacklist": ["orders"], "tables": [{"name": "orders", "batch_size": 7}]}
    )
    assert not shop.includes("orders")
    assert shop.includes("users")  # not listed in tables:, still included
    assert shop.table_settings("orders").batch_size == 7


def test_documented_filtering_example(tmp_path):
    text = (REPO / "docs" / "parallelism-and-filtering.md").read_text()
    example = re.search(r"### Examples\n\n```yaml\n(.*?)```", text, re.S).group(1)
    data = yaml.safe_load(example)
    data.update(source=BASE["source"], destination=BASE["destination"])
    config = load(tmp_path, data)
    rows = re.findall(r"^\| (shop|analytics|everything) \| `([^`]+)` \| (yes|no) \|", text, re.M)
    assert len(rows) == 11
    for schema, table, verdict in rows:
        assert config.schema(schema).includes(table) == (verdict == "yes"), (schema, table)


# ---------------------------------------------------------------------------
# Environment overrides


def test_env_overrides_nested_keys_and_coerces_types(tmp_path):
    environ = {
        "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING": "mongodb+srv://u:p@cluster.mongodb.net/prod",
        "CARTRIDGE_WARP_MONITORING__LOG_LEVEL": "debug",
        "CARTRIDGE_WARP_MONITORING__PROMETHEUS__PORT": "9100",
        "CARTRIDGE_WARP_MONITORING__PROMETHEUS__ENABLED": "yes",
        "CARTRIDGE_WARP_DRY_RUN": "TRUE",
        "CARTRIDGE_WARP_GLOBAL_MAX_PARALLEL_STREAMS": "4",
        "CARTRIDGE_WARP_RETRY__INITIAL_DELAY_SECONDS": "0.25",
        "CARTRIDGE_WARP_STATE_DIR": "/srv/warp",
        "OTHER_GLOBAL_MAX_PARALLEL_STREAMS": "abc",  # not ours: ignored
        "CARTRIDGE_WARP_CONFIG": "/etc/x.yaml",  # the command line's, not a key
    }
    config = load(tmp_path, config_with(global_max_parallel_streams=2), environ)
    assert config.source.type == "mongodb" and config.source.database == "prod"
    assert config.monitoring.log_level == "DEBUG"
    assert config.monitoring.prometheus.port == 9100 and config.monitoring.prometheus.enabled is True
    assert config.dry_run is True
    assert config.state_dir == "/srv/warp"
    settings = config.schema("shop").table_settings("orders")
    assert settings.max_parallel_streams == 4
    assert settings.retry.initial_delay == 0.25


@pytest.mark.parametrize(("text", "expected"), [("false", False), ("No", False), ("0", False), ("1", True)])
def test_env_booleans(tmp_path, text, expected):
    assert load(tmp_path, config_with(), {"CARTRIDGE_WARP_DRY_RUN": text}).dry_run is expected


def test_env_list_index_reaches_schemas_and_tables(tmp_path):
    data = config_with(schemas=[{"name": "shop", "tables": [{"name": "a"}, {"name": "b"}]}])
    environ = {
        "CARTRIDGE_WARP_SCHEMAS__0__BATCH_SIZE": "2000",
        "CARTRIDGE_WARP_SCHEMAS__0__TABLES__1__MAX_PARALLEL_STREAMS": "6",
        "CARTRIDGE_WARP_SCHEMAS__0__TABLES__1__KEY_COLUMNS": "order_id, line_no",
    }
    shop = load(tmp_path, data, environ).schema("shop")
    assert shop.table_settings("a").batch_size == 2000
    assert shop.table_settings("b").max_parallel_streams == 6
    assert shop.table_settings("b").key_columns == ("order_id", "line_no")


def test_env_can_append_list_entries_in_index_order(tmp_path):
    environ = {f"CARTRIDGE_WARP_SCHEMAS__{i}__NAME": f"s{i}" for i in (10, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9)}
    config = load(tmp_path, config_with(schemas=[]), environ)
    assert config.schema_names == tuple(f"s{i}" for i in range(11))


def test_env_index_with_a_gap_is_an_error(tmp_path):
    message = error_of(tmp_path, config_with(), {"CARTRIDGE_WARP_SCHEMAS__3__NAME": "x"})
    assert message == (
        "CARTRIDGE_WARP_SCHEMAS__3__NAME: index 3 is past the end of schemas, which has 1 entries "
        "(number entries from 0 without gaps)"
    )


def test_env_comma_separated_lists(tmp_path):
    environ = {
        "CARTRIDGE_WARP_GLOBAL_TABLE_WHITELIST": "users,orders,products",
        "CARTRIDGE_WARP_GLOBAL_TABLE_BLACKLIST": " temp_tables , logs,, ",
    }
    shop = load(tmp_path, config_with(global_table_whitelist=["x"]), environ).schema("shop")
    assert shop.table_filter.global_whitelist == ("users", "orders", "products")
    assert shop.table_filter.global_blacklist == ("temp_tables", "logs")
    assert shop.includes("orders") and not shop.includes("x")


def test_env_value_that_cannot_be_coerced_names_the_variable(tmp_path):
    environ = {"CARTRIDGE_WARP_GLOBAL_MAX_PARALLEL_STREAMS": "abc", "CARTRIDGE_WARP_DRY_RUN": "maybe"}
    assert error_of(tmp_path, config_with(), environ).splitlines() == [
        'CARTRIDGE_WARP_DRY_RUN: "maybe" is not a boolean (use true/false, yes/no or 1/0)',
        'CARTRIDGE_WARP_GLOBAL_MAX_PARALLEL_STREAMS: "abc" is not an integer',
    ]


def test_env_value_breaking_a_rule_names_key_and_variable(tmp_path):
    environ = {"CARTRIDGE_WARP_SCHEMAS__0__DEFAULT_MAX_PARALLEL_STREAMS": "65"}
    assert error_of(tmp_path, config_with(), environ) == (
        "schemas[0].default_max_parallel_streams: 65 is greater than the maximum of 64 "
        "(set by CARTRIDGE_WARP_SCHEMAS__0__DEFAULT_MAX_PARALLEL_STREAMS)"
    )


def test_env_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    environ = {"CARTRIDGE_WARP_MONITORING__LOG_LEVL": "DEBUG", "CARTRIDGE_WARP_BATCHSIZE": "5"}
    assert error_of(tmp_path, config_with(), environ).splitlines() == [
        "CARTRIDGE_WARP_BATCHSIZE: unknown key 'batchsize' in the top level; did you mean 'batch_size'?",
        "CARTRIDGE_WARP_MONITORING__LOG_LEVL: unknown key 'log_levl' in monitoring; did you mean 'log_level'?",
    ]


def test_env_cannot_set_a_whole_section(tmp_path):
    environ = {"CARTRIDGE_WARP_SOURCE": "mysql://h", "CARTRIDGE_WARP_SCHEMAS": "a,b"}
    assert error_of(tmp_path, config_with(), environ).splitlines() == [
        "CARTRIDGE_WARP_SCHEMAS: a list of sections cannot be set from one variable; "
        "set its entries' keys, e.g. CARTRIDGE_WARP_SCHEMAS__0__NAME",
        "CARTRIDGE_WARP_SOURCE: is a section; set its keys with CARTRIDGE_WARP_SOURCE__<KEY>",
    ]


def test_env_connector_options_are_passed_through(tmp_path):
    environ = {"CARTRIDGE_WARP_SOURCE__SERVER_ID": "4201", "CARTRIDGE_WARP_SOURCE__SSL_MODE": "require"}
    options = load(tmp_path, config_with(), environ).source.options
    assert options == {"server_id": 4201, "ssl_mode": "require"}


def test_readme_environment_example(tmp_path):
    environ = {
        "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING": "mongodb+srv://user:pass@cluster.mongodb.net/prod",
        "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING": "postgresql://user:pass@prod-db:5432/warehouse",
        "CARTRIDGE_WARP_GLOBAL_MAX_PARALLEL_STREAMS": "4",
        "CARTRIDGE_WARP_GLOBAL_TABLE_WHITELIST": "users,orders,products",
        "CARTRIDGE_WARP_GLOBAL_TABLE_BLACKLIST": "temp_tables,logs",
        "CARTRIDGE_WARP_MONITORING__LOG_LEVEL": "DEBUG",
        "CARTRIDGE_WARP_DRY_RUN": "true",
    }
    config = load_config(str(EXAMPLES / "mongodb-quickstart.yaml"), environ=environ)
    assert config.source.redacted() == "mongodb+srv://user:***@cluster.mongodb.net/prod"
    assert config.destination.database == "warehouse"
    assert config.dry_run is True and config.monitoring.log_level == "DEBUG"
    products = config.schema("products")
    assert products.table_settings("orders").max_parallel_streams == 5  # table still beats the new global
    assert products.includes("orders") and not products.includes("logs")


# ---------------------------------------------------------------------------
# Command line and single mode


def test_cli_wins_over_env_and_file(tmp_path):
    data = config_with(dry_run=False, state_dir="/from/file", monitoring={"log_level": "ERROR"})
    environ = {
        "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING": "mysql://env-host/shop",
        "CARTRIDGE_WARP_DRY_RUN": "false",
        "CARTRIDGE_WARP_STATE_DIR": "/from/env",
        "CARTRIDGE_WARP_MONITORING__LOG_LEVEL": "INFO",
    }
    cli = CliOverrides(
        source="mysql://cli-host/shop",
        destination="postgresql://cli-pg/dw",
        dry_run=True,
        state_dir="/from/cli",
        log_level="warning",
    )
    config = load(tmp_path, data, environ, cli)
    assert config.source.connection_string == "mysql://cli-host/shop"
    assert config.destination.connection_string == "postgresql://cli-pg/dw"
    assert (config.dry_run, config.state_dir, config.monitoring.log_level) == (True, "/from/cli", "WARNING")
    env_only = load(tmp_path, data, environ)
    assert (env_only.source.connection_string, env_only.state_dir) == ("mysql://env-host/shop", "/from/env")


def test_cli_value_breaking_a_rule_names_the_option(tmp_path):
    message = error_of(tmp_path, config_with(), cli=CliOverrides(log_level="verbose"))
    assert message == (
        "monitoring.log_level: 'verbose' is not one of 'DEBUG', 'INFO', 'WARNING', 'ERROR' (set by --log-level)"
    )


def test_single_mode_runs_from_the_command_line_alone():
    cli = CliOverrides(
        source="mongodb://localhost:27017/ecommerce",
        destination="postgresql://localhost:5432/warehouse",
        schema="products",
    )
    config = load_config(None, environ={}, cli=cli)
    products = config.schema("products")
    assert config.schema_names == ("products",)
    assert (products.mode, products.source_database, products.destination_schema) == (
        "stream",
        "ecommerce",
        "products",
    )
    assert products.table_settings("orders") == TableSettings()
    assert config.state_dir == "/var/lib/cartridge-warp" and config.dry_run is False


def test_single_mode_adds_a_schema_missing_from_the_file_with_file_defaults(tmp_path):
    data = config_with(batch_size=123)
    config = load(tmp_path, data, cli=CliOverrides(schema="billing"))
    assert config.schema_names == ("shop", "billing")
    assert config.schema("billing").table_settings("x").batch_size == 123
    again = load(tmp_path, data, cli=CliOverrides(schema="shop"))
    assert again.schema_names == ("shop",)


# ---------------------------------------------------------------------------
# Retry policy


def test_retry_delay_grows_exponentially_and_is_capped():
    policy = RetryPolicy(initial_delay=0.5, max_delay=30.0, multiplier=2.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.delay(100_000) == 30.0  # no overflow however long it retries


def test_retry_delay_jitter_bounds():
    policy = RetryPolicy(initial_delay=1.0, max_delay=30.0, multiplier=2.0, jitter=0.2)
    assert policy.delay(3, rand=lambda: 0.0) == pytest.approx(3.2)  # 4 - 20 %
    assert policy.delay(3, rand=lambda: 1.0) == pytest.approx(4.8)  # 4 + 20 %
    assert policy.delay(3, rand=lambda: 0.5) == pytest.approx(4.0)
    # At the cap jitter can only shorten the wait: max_delay is a promise.
    assert policy.delay(50, rand=lambda: 1.0) == 30.0
    assert policy.delay(50, rand=lambda: 0.0) == pytest.approx(24.0)
    for attempt in range(1, 30):
        assert 0.0 < policy.delay(attempt) <= 30.0


def test_retry_delay_rejects_attempt_zero():
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        RetryPolicy().delay(0)


def test_retry_bounds_are_validated(tmp_path):
    data = config_with(
        retry={"max_attempts": 0, "initial_delay_seconds": 0, "multiplier": 0.5, "jitter": 1.5}
    )
    assert error_of(tmp_path, data).splitlines() == [
        "retry.initial_delay_seconds: 0 is less than or equal to the minimum of 0",
        "retry.jitter: 1.5 is greater than the maximum of 1",
        "retry.max_attempts: 0 is less than the minimum of 1",
        "retry.multiplier: 0.5 is less than the minimum of 1",
    ]


# ---------------------------------------------------------------------------
# BigQuery destination keys (docs/bigquery.md, "Connection string")


def test_bigquery_section_keys_fold_into_the_connection_string(tmp_path):
    data = config_with(
        destination={
            "type": "bigquery",
            "connection_string": "bigquery://?location=US",
            "project": "my-proj",
            "dataset": "analytics",
            "location": "EU",
            "min_flush_interval": 10,
        },
        schemas=[{"name": "shop"}, {"name": "crm", "destination_schema": "crm_copy"}],
    )
    config = load(tmp_path, data)
    assert config.destination.type == "bigquery"
    assert config.destination.connection_string == "bigquery://my-proj?location=EU&min_flush_interval=10"
    # dataset is the default destination schema; an explicit one still wins
    assert [s.destination_schema for s in config.schemas] == ["analytics", "crm_copy"]


def test_bigquery_dataset_shared_by_two_schemas_is_refused(tmp_path):
    data = config_with(
        destination={"connection_string": "bigquery://my-proj", "dataset": "analytics"},
        schemas=[{"name": "shop"}, {"name": "crm"}],
    )
    message = error_of(tmp_path, data)
    assert "both write destination schema 'analytics'" in message
    assert "did you mean" not in message  # dataset is a BigQuery key, not a misspelt database


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"min_flush_interval": -1}, "min_flush_interval='-1' must be a number of seconds from 0 to 3600"),
        ({"job_timeout": "soon"}, "job_timeout='soon' must be a number of seconds"),
        ({"api_endpoint": "127.0.0.1:9050"}, "api_endpoint must be an http:// or https:// URL"),
        ({"project": "Not A Project!"}, "is not a Google Cloud project id"),
        (
            {"api_endpoint": "http://bq.internal:9050", "credentials": "/k.json"},
            "would send the access token unencrypted",
        ),
    ],
)
def test_bad_bigquery_settings_are_named(tmp_path, extra, expected):
    data = config_with(destination={"type": "bigquery", "connection_string": "bigquery://p-1", **extra})
    assert expected in error_of(tmp_path, data)


def test_bigquery_uri_parameters_are_checked(tmp_path):
    data = config_with(destination={"connection_string": "bigquery://p-1?bogus=1"})
    assert "unknown parameter 'bogus'" in error_of(tmp_path, data)
    data = config_with(destination={"connection_string": "bigquery://user:pw@p-1"})
    message = error_of(tmp_path, data)
    assert "carries no user or password" in message and "pw" not in message


# ---------------------------------------------------------------------------
# mode: batch (docs/batch-mode.md): what cannot work is refused at validation


def batch_schema(**keys) -> dict:
    schema = {"name": "shop", "mode": "batch", "schedule": {"every": "15m"}}
    schema.update(keys)
    return schema


def test_batch_settings_resolve_per_table(tmp_path):
    data = config_with(
        schemas=[
            batch_schema(
                safety_lag="2m",
                tables=[
                    {"name": "orders", "cursor_column": "updated_at"},
                    {"name": "events", "cursor_column": "id", "safety_lag": 500},
                    {"name": "dims", "delete_detection": "key_scan"},
                ],
            )
        ]
    )
    schema = load(tmp_path, data).schema("shop")
    assert schema.batch and schema.schedule is not None and schema.schedule.describe() == "every 15m"
    orders, events, dims = (schema.table_settings(t) for t in ("orders", "events", "dims"))
    assert (orders.sync, orders.cursor_column) == ("incremental", "updated_at")
    assert orders.safety_lag == SafetyLag(120, duration=True)
    assert events.safety_lag == SafetyLag(500, duration=False)
    assert (dims.sync, dims.delete_detection) == ("full_refresh", "key_scan")
    assert schema.table_settings("unlisted").sync == "full_refresh"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"name": "shop", "mode": "batch"},
            "schemas[0].schedule: mode: batch needs a schedule, e.g. schedule: {every: 15m}",
        ),
        (batch_schema(schedule={"every": "0s"}), "schemas[0].schedule.every: must be longer than 0 seconds"),
        (batch_schema(schedule={"every": "fortnightly"}), "schemas[0].schedule.every:"),
        (
            batch_schema(schedule={"cron": "61 * * * *"}),
            "schemas[0].schedule.cron: '61 * * * *' is not a cron expression",
        ),
        (batch_schema(schedule={"every": "1h", "cron": "0 * * * *"}), "schemas[0].schedule"),
        (
            batch_schema(tables=[{"name": "t", "sync": "incremental"}]),
            "schemas[0].tables[0]: sync: incremental needs a cursor_column",
        ),
        (
            batch_schema(tables=[{"name": "t", "sync": "full_refresh", "cursor_column": "id"}]),
            "schemas[0].tables[0].sync: a full refresh copies the whole table and reads no cursor",
        ),
        (
            batch_schema(tables=[{"name": "t", "cursor_column": "id", "cursor_field": "id"}]),
            "schemas[0].tables[0].cursor_field: cursor_column and cursor_field are the same setting",
        ),
        (
            batch_schema(sync="incremental", tables=[{"name": "a", "cursor_column": "id"}, {"name": "b"}]),
            "schemas[0].sync: sync: incremental for every table needs each table's cursor_column",
        ),
        (
            {"name": "shop", "schedule": {"every": "1h"}},
            "schemas[0].schedule: schedule is a setting of mode: batch, and schema 'shop' streams",
        ),
        (
            {"name": "shop", "tables": [{"name": "t", "cursor_column": "id"}]},
            "schemas[0].tables[0].cursor_column: cursor_column is a setting of mode: batch",
        ),
    ],
)
def test_batch_configuration_mistakes_are_refused_with_their_path(tmp_path, schema, message):
    assert message in error_of(tmp_path, config_with(schemas=[schema]))


def test_a_source_without_a_batch_reader_refuses_mode_batch(tmp_path, monkeypatch):
    from warpd.connectors import registry

    # a plugin source registered with the default modes: it streams only
    monkeypatch.setattr(registry, "_SOURCES", dict(registry._SOURCES))
    monkeypatch.setattr(registry, "_SOURCE_MODES", dict(registry._SOURCE_MODES))
    registry.register_source("streamonly")(lambda *_args: None)
    data = config_with(
        source={"type": "streamonly", "connection_string": "streamonly://db1/shop"},
        schemas=[batch_schema()],
    )
    assert error_of(tmp_path, data) == (
        "schemas[0].mode: the streamonly source cannot run mode: batch (it cannot read rows by a cursor "
        "column or copy tables periodically); use mode: stream"
    )


def test_the_mongodb_source_accepts_mode_batch_with_a_cursor_field(tmp_path):
    data = config_with(
        source={"connection_string": "mongodb://db1:27017/shop"},
        schemas=[batch_schema(tables=[{"name": "orders", "cursor_field": "updated_at"}])],
    )
    config = load(tmp_path, data)
    settings = config.schemas[0].table_settings("orders")
    assert (settings.sync, settings.cursor_column) == ("incremental", "updated_at")


def test_validate_config_exits_2_on_a_batch_mistake(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path, config_with(schemas=[{"name": "shop", "mode": "batch"}]))
    result = subprocess.run(
        [sys.executable, "-m", "warpd", "--config", path, "--validate-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "schemas[0].schedule: mode: batch needs a schedule" in result.stderr
    assert "Traceback" not in result.stderr
