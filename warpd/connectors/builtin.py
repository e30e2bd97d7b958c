"""Registration of the connectors shipped with cartridge-warp (drivers load lazily)."""

from __future__ import annotations

from typing import Any

from warpd.connectors.registry import register_destination, register_source


def _check_mysql(uri: str) -> None:
    from warpd.connectors.mysql.connection import parse_uri

    parse_uri(uri)


def _check_mysql_destination(uri: str) -> None:
    from warpd.connectors.mysql.connection import parse_uri

    parse_uri(uri, where="destination.connection_string")


def _check_mongodb(uri: str) -> None:
    from warpd.connectors.mongodb.uri import check_uri

    check_uri(uri)


def _check_bigquery(uri: str) -> None:
    from warpd.connectors.bigquery.uri import check_uri

    check_uri(uri)


def _check_bigquery_source(uri: str) -> None:
    from warpd.connectors.bigquery.uri import check_source_uri

    check_source_uri(uri)


def _check_postgresql(uri: str) -> None:
    from warpd.connectors.postgresql.uri import check_uri

    check_uri(uri)


@register_source("mysql", check_uri=_check_mysql, modes=("stream", "batch"))
def mysql_source(uri: str, database: str, schema_name: str, options: dict[str, Any]) -> Any:
    from warpd.connectors.mysql.source import MySQLSource, default_server_id

    server_id = int(options.get("server_id") or default_server_id(schema_name))
    return MySQLSource(uri, database, server_id=server_id, options=options)


@register_source("mongodb", check_uri=_check_mongodb, modes=("stream", "batch"))
def mongodb_source(uri: str, database: str, schema_name: str, options: dict[str, Any]) -> Any:
    from warpd.connectors.mongodb.source import MongoSource

    return MongoSource(uri, database, schema_name, options)


# BigQuery keeps no change log a replica could follow: batch schemas only (docs/bigquery.md)
@register_source("bigquery", check_uri=_check_bigquery_source, modes=("batch",))
def bigquery_source(uri: str, database: str, schema_name: str, options: dict[str, Any]) -> Any:
    from warpd.connectors.bigquery.source import BigQuerySource

    return BigQuerySource(uri, database, schema_name, options)


@register_destination("postgresql", check_uri=_check_postgresql)
def postgresql_destination(uri: str, application_name: str) -> Any:
    from warpd.connectors.postgresql.destination import PostgresDestination

    return PostgresDestination(uri, application_name=application_name)


@register_destination("mysql", check_uri=_check_mysql_destination)
def mysql_destination(uri: str, application_name: str) -> Any:
    from warpd.connectors.mysql.destination import MySQLDestination

    return MySQLDestination(uri, application_name=application_name)


@register_destination("bigquery", check_uri=_check_bigquery)
def bigquery_destination(uri: str, application_name: str) -> Any:
    from warpd.connectors.bigquery.destination import BigQueryDestination

    return BigQueryDestination(uri, application_name=application_name)
