"""The local BigQuery emulator does what cartridge-warp's BigQuery work relies on.

Talks to the emulator (``tests/bigquery_support.py``; started by ``make setup-db``) with the real
``google-cloud-bigquery`` client: datasets, clustered tables, Parquet loads into an expiring staging
table, MERGE from a QUALIFY ROW_NUMBER() deduplication, ALTER TABLE ADD COLUMN, table deletion.
Known emulator limits, not exercised here: Parquet BYTES columns do not load (stage them as base64
STRING), BIGNUMERIC is DECIMAL(38,18) inside, and NUMERIC -> BIGNUMERIC by ALTER COLUMN SET DATA
TYPE is refused.  One that is: its PARSE_JSON refuses an integer literal beyond 64 bits even where a
double holds the value exactly (test_parse_json_takes_doubles_as_the_destination_sends_them).
"""

from __future__ import annotations

import datetime
import decimal
import io
import json
import math
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.api_core.exceptions import BadRequest, NotFound
from google.cloud import bigquery

from tests import bigquery_support
from warpd.connectors.bigquery.types import value_encoder
from warpd.connectors.mongodb.mapping import to_relaxed_json
from warpd.types import ColumnType, Kind

UTC = datetime.UTC
TARGET_SCHEMA = [
    bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
    bigquery.SchemaField("name", "STRING"),
    bigquery.SchemaField("amount", "NUMERIC"),
    bigquery.SchemaField("changed_at", "TIMESTAMP"),
    bigquery.SchemaField("_warp_pos", "STRING"),
]
# the staging table: NUMERIC travels as STRING (cast in the MERGE), plus the change's order and kind
STAGING_SCHEMA = [
    bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
    bigquery.SchemaField("name", "STRING"),
    bigquery.SchemaField("amount", "STRING"),
    bigquery.SchemaField("changed_at", "TIMESTAMP"),
    bigquery.SchemaField("_warp_pos", "STRING"),
    bigquery.SchemaField("_warp_del", "BOOL"),
    bigquery.SchemaField("_warp_ord", "INT64"),
]
T0 = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


@pytest.fixture
def bq() -> bigquery.Client:
    return bigquery_support.client()


@pytest.fixture
def dataset(bq: bigquery.Client) -> Iterator[str]:
    """``warp.<dataset>``, fresh for the test and deleted with its contents afterwards."""
    with bigquery_support.temporary_dataset(bq) as dataset_id:
        yield f"{bq.project}.{dataset_id}"


def create_target(bq: bigquery.Client, dataset: str) -> bigquery.Table:
    table = bigquery.Table(f"{dataset}.target", schema=TARGET_SCHEMA)
    table.clustering_fields = ["id"]
    return bq.create_table(table)


def load_staging(bq: bigquery.Client, dataset: str, rows: dict[str, list]) -> bigquery.Table:
    """Rows (column -> values) as Parquet, from memory, into a staging table that expires in an hour."""
    arrow = pa.table(
        {
            "id": pa.array(rows["id"], pa.int64()),
            "name": pa.array(rows["name"], pa.string()),
            "amount": pa.array(rows["amount"], pa.string()),
            "changed_at": pa.array(rows["changed_at"], pa.timestamp("us", tz="UTC")),
            "_warp_pos": pa.array(rows["_warp_pos"], pa.string()),
            "_warp_del": pa.array(rows["_warp_del"], pa.bool_()),
            "_warp_ord": pa.array(rows["_warp_ord"], pa.int64()),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer)
    buffer.seek(0)
    staging = bigquery.Table(f"{dataset}.staging", schema=STAGING_SCHEMA)
    staging.expires = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
    bq.create_table(staging)
    job_config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        schema=STAGING_SCHEMA,
    )
    bq.load_table_from_file(buffer, staging.reference, job_config=job_config).result()
    return bq.get_table(staging.reference)


def rows_of(bq: bigquery.Client, table: str) -> list[dict]:
    return [dict(row) for row in bq.query(f"SELECT * FROM `{table}` ORDER BY id").result()]


def test_dataset_is_created_and_listed(bq: bigquery.Client, dataset: str) -> None:
    dataset_id = dataset.split(".", 1)[1]
    assert bq.get_dataset(dataset).dataset_id == dataset_id
    assert dataset_id in {d.dataset_id for d in bq.list_datasets()}


def test_clustered_table(bq: bigquery.Client, dataset: str) -> None:
    create_target(bq, dataset)
    table = bq.get_table(f"{dataset}.target")
    assert table.clustering_fields == ["id"]
    assert [(f.name, f.field_type, f.mode) for f in table.schema][:2] == [
        ("id", "INTEGER", "REQUIRED"),
        ("name", "STRING", "NULLABLE"),
    ]


def test_parquet_load_into_expiring_table(bq: bigquery.Client, dataset: str) -> None:
    staging = load_staging(
        bq,
        dataset,
        {
            "id": [1, 2],
            "name": ["a", None],
            "amount": ["1.50", None],
            "changed_at": [T0, None],
            "_warp_pos": ["p1", "p2"],
            "_warp_del": [False, True],
            "_warp_ord": [1, 2],
        },
    )
    assert staging.expires is not None and staging.expires > datetime.datetime.now(UTC)
    assert staging.num_rows == 2
    assert rows_of(bq, f"{dataset}.staging") == [
        {
            "id": 1,
            "name": "a",
            "amount": "1.50",
            "changed_at": T0,
            "_warp_pos": "p1",
            "_warp_del": False,
            "_warp_ord": 1,
        },
        {
            "id": 2,
            "name": None,
            "amount": None,
            "changed_at": None,
            "_warp_pos": "p2",
            "_warp_del": True,
            "_warp_ord": 2,
        },
    ]


def test_merge_from_qualify_row_number(bq: bigquery.Client, dataset: str) -> None:
    """The latest change per key wins (QUALIFY ROW_NUMBER()); deletes, updates and inserts in one MERGE."""
    create_target(bq, dataset)
    bq.query(
        f"INSERT INTO `{dataset}.target` (id, name, amount, changed_at, _warp_pos) VALUES "
        "(1, 'old', NUMERIC '1', NULL, 'p0'), (2, 'doomed', NUMERIC '2', NULL, 'p0'), "
        "(5, 'untouched', NUMERIC '5', NULL, 'p0')"
    ).result()
    load_staging(
        bq,
        dataset,
        {
            "id": [1, 1, 2, 3, 4],
            "name": ["first", "second", None, "new", None],
            "amount": ["10.25", "11.75", None, "3", None],
            "changed_at": [T0, T0 + datetime.timedelta(seconds=1), None, T0, None],
            "_warp_pos": ["p1", "p2", "p3", "p4", "p5"],
            "_warp_del": [False, False, True, False, True],
            "_warp_ord": [1, 2, 3, 4, 5],
        },
    )
    merge = bq.query(
        f"""
        MERGE `{dataset}.target` T
        USING (
          SELECT * FROM `{dataset}.staging` WHERE TRUE
          QUALIFY ROW_NUMBER() OVER (PARTITION BY id ORDER BY _warp_ord DESC) = 1
        ) S
        ON T.id = S.id
        WHEN MATCHED AND S._warp_del THEN DELETE
        WHEN MATCHED AND NOT S._warp_del AND S._warp_pos > T._warp_pos THEN
          UPDATE SET name = S.name, amount = CAST(S.amount AS NUMERIC), changed_at = S.changed_at,
                     _warp_pos = S._warp_pos
        WHEN NOT MATCHED AND NOT S._warp_del THEN
          INSERT (id, name, amount, changed_at, _warp_pos)
          VALUES (S.id, S.name, CAST(S.amount AS NUMERIC), S.changed_at, S._warp_pos)
        """
    )
    merge.result()
    assert merge.num_dml_affected_rows == 3  # 1 updated, 2 deleted, 3 inserted; 4 absent, 5 untouched
    assert rows_of(bq, f"{dataset}.target") == [
        {
            "id": 1,
            "name": "second",
            "amount": decimal.Decimal("11.75"),
            "changed_at": T0 + datetime.timedelta(seconds=1),
            "_warp_pos": "p2",
        },
        {"id": 3, "name": "new", "amount": decimal.Decimal("3"), "changed_at": T0, "_warp_pos": "p4"},
        {"id": 5, "name": "untouched", "amount": decimal.Decimal("5"), "changed_at": None, "_warp_pos": "p0"},
    ]


def test_alter_table_add_column_is_seen_by_get_table(bq: bigquery.Client, dataset: str) -> None:
    create_target(bq, dataset)
    bq.query(f"ALTER TABLE `{dataset}.target` ADD COLUMN IF NOT EXISTS note STRING").result()
    schema = bq.get_table(f"{dataset}.target").schema
    assert [f.name for f in schema] == [f.name for f in TARGET_SCHEMA] + ["note"]
    assert (schema[-1].field_type, schema[-1].mode) == ("STRING", "NULLABLE")


def test_delete_table(bq: bigquery.Client, dataset: str) -> None:
    create_target(bq, dataset)
    bq.delete_table(f"{dataset}.target")
    with pytest.raises(NotFound):
        bq.get_table(f"{dataset}.target")
    bq.delete_table(f"{dataset}.target", not_found_ok=True)


def _parse_json(bq: bigquery.Client, text: str) -> tuple[object, str]:
    """``PARSE_JSON(text)`` as the client reads it back, and its ``TO_JSON_STRING``."""
    config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("j", "STRING", text)])
    (row,) = bq.query("SELECT PARSE_JSON(@j) AS j, TO_JSON_STRING(PARSE_JSON(@j)) AS t", job_config=config)
    return row["j"], row["t"]


@pytest.mark.parametrize(
    "double",
    [1e300, -1e300, 1e-300, 5e-324, 1.7976931348623157e308, 2.2250738585072014e-308, 1e20, 0.1 + 0.2],
)
def test_parse_json_takes_doubles_as_the_destination_sends_them(bq: bigquery.Client, double: float) -> None:
    """A MongoDB double inside a document is written out in plain notation (1e300 as 1 and 300 zeros,
    docs/mongodb-mapping.md); the destination sends it in the double's shortest form (1e+300,
    docs/bigquery.md "Type mapping"), which PARSE_JSON reads as the same double, nested too."""
    plain = to_relaxed_json([double, {"k": double}])
    sent = value_encoder(ColumnType(Kind.JSON))(plain)
    assert sent == f'[{double!r}, {{"k": {double!r}}}]'
    parsed, text = _parse_json(bq, sent)
    assert parsed == [double, {"k": double}]
    assert [json.loads(text)[0], json.loads(text)[1]["k"]] == [double, double]
    if bigquery_support.emulated() and math.fabs(double) >= 2**64:
        # Emulator gap: its PARSE_JSON refuses every integer literal beyond 64 bits ("number cannot be
        # stored without loss of precision"), so the plain spelling of such a double fails here.
        # BigQuery's parser (ZetaSQL's JSON parser, CheckNumberRoundtrip) takes such a literal as a
        # double and accepts it when its value is that of the double's shortest text, as here; either
        # way the destination sends the shortest text, which both accept.
        with pytest.raises(BadRequest, match="loss of precision"):
            _parse_json(bq, plain)


def test_unreachable_emulator_fails_unless_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """No emulator is a failure that says how to start one; WARP_TEST_BIGQUERY=off is the only skip."""
    monkeypatch.setenv("WARP_TEST_BIGQUERY_ENDPOINT", "http://127.0.0.1:9/")
    monkeypatch.delenv("WARP_TEST_BIGQUERY", raising=False)
    with pytest.raises(pytest.fail.Exception, match="make setup-db"):
        bigquery_support.client()
    monkeypatch.setenv("WARP_TEST_BIGQUERY", "off")
    with pytest.raises(pytest.skip.Exception, match="WARP_TEST_BIGQUERY=off"):
        bigquery_support.client()
