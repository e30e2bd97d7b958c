"""Registration of the connectors shipped with cartridge-warp (drivers load lazily)."""

from __future__ import annotations

from typing import Any

from warpd.connectors.registry import register_destination, register_source


@register_source("mysql")
def mysql_source(uri: str, database: str, schema_name: str, options: dict[str, Any]) -> Any:
    from warpd.connectors.mysql.source import MySQLSource, default_server_id

    server_id = int(options.get("server_id") or default_server_id(schema_name))
    return MySQLSource(uri, database, server_id=server_id, options=options)


@register_source("mongodb")
def mongodb_source(uri: str, database: str, schema_name: str, options: dict[str, Any]) -> Any:
    from warpd.connectors.mongodb.source import MongoSource

    return MongoSource(uri, database, schema_name, options)


@register_destination("postgresql")
def postgresql_destination(uri: str, application_name: str) -> Any:
    from warpd.connectors.postgresql.destination import PostgresDestination

    return PostgresDestination(uri, application_name=application_name)
