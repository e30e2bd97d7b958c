"""``--dry-run``: the resolved plan of a schema (tables, keys, batch sizes, destination DDL), printed.

Reads the source's table list and the destination's catalogue; writes
nothing, takes no lock and opens no state file.  ``cartridge-warp`` prints
one schema's plan, warpd (``--mode multi``) every schema's.
"""

from __future__ import annotations

from typing import Any

from warpd.config import Config, SchemaConfig


def print_plan(config: Config, schema: SchemaConfig) -> None:
    """Print the plan of one schema."""
    from warpd.engine.runner import SchemaRunner

    runner = SchemaRunner(config, schema, store=None)
    try:
        tables = runner.plan_report()
        _print(config, schema, tables, runner.describe_destination())
    finally:
        runner.close()


def print_plans(config: Config) -> None:
    """Print the plan of every configured schema, a blank line after each."""
    for schema in config.schemas:
        print_plan(config, schema)
        print()


def _print(config: Config, schema: SchemaConfig, tables: list[dict[str, Any]], destination: str) -> None:
    print(
        f"Dry run: nothing will be written.\n"
        f"schema {schema.name} ({schema.mode}): {config.source.redacted()} database "
        f"{schema.source_database!r} -> {config.destination.redacted()} schema {schema.destination_schema!r}"
    )
    print(f"on_position_lost: {schema.on_position_lost}; state file: {config.state_dir}")
    print(f"destination {destination}")
    if schema.batch and schema.schedule is not None:
        print(f"batch mode: {schema.schedule.describe()} (docs/batch-mode.md)")
    if not tables:
        print("no source table matches the whitelist/blacklist")
    for t in tables:
        print(f"\ntable {t['table']} -> {t['destination']} (~{t['estimated_rows']:,} rows)")
        print(
            f"  key: {', '.join(t['key'])}; max_parallel_streams={t['max_parallel_streams']} "
            f"batch_size={t['batch_size']} snapshot_chunk_size={t['snapshot_chunk_size']} "
            f"deletes={t['deletes']} metadata_columns={str(t['metadata_columns']).lower()}"
        )
        if schema.batch:
            settings = schema.table_settings(t["table"])
            how = settings.sync.replace("_", " ")
            if settings.sync == "incremental":
                lag = settings.safety_lag
                how += f" by {settings.cursor_column}, safety_lag " + (
                    "default" if lag is None else f"{lag.amount:g}{'s' if lag.duration else ''}"
                )
                how += f", delete_detection {settings.delete_detection}"
            print(f"  batch: {how}")
        for stmt in t["ddl"] or ["(destination table already matches)"]:
            print(f"  {stmt};" if not stmt.startswith("(") else f"  {stmt}")
